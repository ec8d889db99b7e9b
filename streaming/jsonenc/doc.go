// Package jsonenc appends JSON values by hand, byte for byte as
// encoding/json writes them with HTML escaping off, for the few messages
// that every token or every posted turn builds: without reflection, a
// buffer of its own or a copy.
//
// Its tests hold each function to encoding/json, a fuzz test among them.
package jsonenc

// Package jsonscan splits JSON objects and arrays into their raw members in
// one validating pass, without decoding or copying the values.
//
// encoding/json reads a document twice (once to validate it, once to
// decode it), and a json.RawMessage field is copied on the way. For a
// message whose bulk is one large string (a 32 MiB tool result or pasted
// file), splitting it into fields that way and then decoding one field
// again means four passes and two copies; jsonscan makes it one pass and
// no copy: the raw values it hands out are subslices of the input.
//
// What it accepts is what encoding/json accepts (RFC 8259 JSON, nesting
// up to 10,000 levels), less invalid UTF-8: RFC 8259 requires JSON text
// to be UTF-8, and encoding/json lets raw bytes such as 0xff through (in a
// json.RawMessage, as they are), which a client's strict parser or a
// WebSocket text frame then refuses. The check is part of the one pass: a
// string's bytes are decoded as UTF-8 as they are scanned. A fuzz test
// holds jsonscan to encoding/json on all the rest.
package jsonscan

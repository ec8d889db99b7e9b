// Package client is a small Go client of sessiond's HTTP API: sessions,
// turns, generations, and a generation's live stream over SSE with resume.
//
// Read Example first (examples/chat is a whole program on it). A Client is
// safe for concurrent use.
//
// # Errors
//
// A 4xx or 5xx answer is returned as *Error with the API's stable code;
// errors.As it to branch on Code.
package client

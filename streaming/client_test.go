package streaming_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"sessiond/streaming"
)

func TestDecodeClientMessage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *streaming.ClientMessage
	}{
		{"hello", `{"type":"hello"}`, &streaming.ClientMessage{Type: "hello"}},
		{"hello resume generation", `{"type":"hello","resume":{"generation":"g_1","after":17}}`,
			&streaming.ClientMessage{Type: "hello", Resume: &streaming.ClientResume{Generation: "g_1", After: 17}}},
		{"hello resume after 0", `{"type":"hello","resume":{"after":0,"generation":"g_1"}}`,
			&streaming.ClientMessage{Type: "hello", Resume: &streaming.ClientResume{Generation: "g_1"}}},
		{"hello resume turn", `{"type":"hello","resume":{"turn":3}}`,
			&streaming.ClientMessage{Type: "hello", Resume: &streaming.ClientResume{Turn: 3}}},
		{"send", ` {"type":"send", "turns":[ {"role":"user","content":"hi"} ],"generate":true,"idempotency_key":"k1"} `,
			&streaming.ClientMessage{Type: "send", Turns: json.RawMessage(`[{"role":"user","content":"hi"}]`), Generate: true, IdempotencyKey: "k1"}},
		{"send with model, no generate", `{"type":"send","turns":[],"idempotency_key":"k","model":"offline"}`,
			&streaming.ClientMessage{Type: "send", Turns: json.RawMessage(`[]`), IdempotencyKey: "k", Model: "offline"}},
		{"cancel", `{"type":"cancel","generation":"g_1"}`, &streaming.ClientMessage{Type: "cancel", Generation: "g_1"}},
		{"ping", `{"type":"ping"}`, &streaming.ClientMessage{Type: "ping"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := streaming.DecodeClientMessage([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeClientMessageRefuses(t *testing.T) {
	tests := []struct {
		name, in, code string
	}{
		{"empty", ``, streaming.CodeInvalidJSON},
		{"blank", " \n", streaming.CodeInvalidJSON},
		{"malformed", `{"type":"ping"`, streaming.CodeInvalidJSON},
		{"trailing data", `{"type":"ping"} {}`, streaming.CodeInvalidJSON},
		{"not an object", `["ping"]`, streaming.CodeInvalidRequest},
		{"null", `null`, streaming.CodeInvalidRequest},
		{"no type", `{"generation":"g"}`, streaming.CodeInvalidRequest},
		{"type not a string", `{"type":1}`, streaming.CodeInvalidRequest},
		{"type null", `{"type":null}`, streaming.CodeInvalidRequest},
		{"unknown type", `{"type":"dance"}`, streaming.CodeUnknownType},
		{"type case", `{"type":"PING"}`, streaming.CodeUnknownType},
		{"unknown field", `{"type":"ping","x":1}`, streaming.CodeInvalidRequest},
		{"field of another type", `{"type":"ping","generation":"g"}`, streaming.CodeInvalidRequest},
		{"field name case", `{"type":"cancel","Generation":"g"}`, streaming.CodeInvalidRequest},
		{"resume not an object", `{"type":"hello","resume":"g_1"}`, streaming.CodeInvalidRequest},
		{"resume null", `{"type":"hello","resume":null}`, streaming.CodeInvalidRequest},
		{"resume empty", `{"type":"hello","resume":{}}`, streaming.CodeInvalidRequest},
		{"resume without after", `{"type":"hello","resume":{"generation":"g"}}`, streaming.CodeInvalidRequest},
		{"resume without generation", `{"type":"hello","resume":{"after":1}}`, streaming.CodeInvalidRequest},
		{"resume empty generation", `{"type":"hello","resume":{"generation":"","after":1}}`, streaming.CodeInvalidRequest},
		{"resume negative", `{"type":"hello","resume":{"generation":"g","after":-1}}`, streaming.CodeInvalidRequest},
		{"resume fraction", `{"type":"hello","resume":{"generation":"g","after":1.5}}`, streaming.CodeInvalidRequest},
		{"resume string offset", `{"type":"hello","resume":{"generation":"g","after":"1"}}`, streaming.CodeInvalidRequest},
		{"resume both", `{"type":"hello","resume":{"generation":"g","after":1,"turn":2}}`, streaming.CodeInvalidRequest},
		{"resume extra", `{"type":"hello","resume":{"turn":2,"x":0}}`, streaming.CodeInvalidRequest},
		{"resume turn negative", `{"type":"hello","resume":{"turn":-2}}`, streaming.CodeInvalidRequest},
		{"send without turns", `{"type":"send","idempotency_key":"k"}`, streaming.CodeInvalidRequest},
		{"send turns object", `{"type":"send","turns":{},"idempotency_key":"k"}`, streaming.CodeInvalidRequest},
		{"send turns null", `{"type":"send","turns":null,"idempotency_key":"k"}`, streaming.CodeInvalidRequest},
		{"send without key", `{"type":"send","turns":[]}`, streaming.CodeInvalidRequest},
		{"send empty key", `{"type":"send","turns":[],"idempotency_key":""}`, streaming.CodeInvalidRequest},
		{"send generate string", `{"type":"send","turns":[],"idempotency_key":"k","generate":"yes"}`, streaming.CodeInvalidRequest},
		{"send generate null", `{"type":"send","turns":[],"idempotency_key":"k","generate":null}`, streaming.CodeInvalidRequest},
		{"send empty model", `{"type":"send","turns":[],"idempotency_key":"k","model":""}`, streaming.CodeInvalidRequest},
		{"cancel without generation", `{"type":"cancel"}`, streaming.CodeInvalidRequest},
		{"cancel generation number", `{"type":"cancel","generation":7}`, streaming.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := streaming.DecodeClientMessage([]byte(tt.in))
			var pe *streaming.ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("got %+v, %v; want a *ProtocolError", m, err)
			}
			if pe.Code != tt.code {
				t.Fatalf("code %q (%s), want %q", pe.Code, pe.Message, tt.code)
			}
			if pe.Message == "" {
				t.Fatal("empty message")
			}
		})
	}
}

func TestClientMessageMarshal(t *testing.T) {
	m := streaming.ClientMessage{Type: "send", Turns: json.RawMessage(`[{"content":"<b>"}]`), Generate: true, IdempotencyKey: "k"}
	b, err := m.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"type":"send","turns":[{"content":"<b>"}],"generate":true,"idempotency_key":"k"}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if _, err := (streaming.ClientMessage{Type: "dance"}).MarshalJSON(); err == nil {
		t.Fatal("unknown type marshalled")
	}
}

// FuzzDecodeClientMessage: decoding never panics, refuses only with a
// *ProtocolError of a known code, and what it accepts re-encodes to a
// message that decodes to the same value.
func FuzzDecodeClientMessage(f *testing.F) {
	f.Add([]byte(`{"type":"hello","resume":{"generation":"g_1","after":17}}`))
	f.Add([]byte(`{"type":"send","turns":[{"role":"user","content":"hi"}],"generate":true,"idempotency_key":"k"}`))
	f.Add([]byte("{\"type\":\"send\",\"turns\":[{\"role\":\"user\",\"content\":\"raw \xff\xfe\"}],\"idempotency_key\":\"k\"}"))
	f.Add([]byte("{\"type\":\"send\",\"turns\":[{\"role\":\"user\",\"content\":\"日本\"}],\"idempotency_key\":\"k\xe6\x97\"}"))
	f.Add([]byte("{\"type\":\"hello\",\"resume\":{\"generation\":\"g_\xc0\xaf\",\"after\":1}}"))
	f.Add([]byte("{\"type\xff\":\"ping\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := streaming.DecodeClientMessage(data)
		if !utf8.Valid(data) {
			// Not JSON (RFC 8259) nor a text frame (RFC 6455), whatever
			// else it is.
			var pe *streaming.ProtocolError
			if !errors.As(err, &pe) || pe.Code != streaming.CodeInvalidJSON {
				t.Fatalf("%q is not UTF-8: %v, want %s", data, err, streaming.CodeInvalidJSON)
			}
		}
		if err != nil {
			var pe *streaming.ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ProtocolError", err)
			}
			switch pe.Code {
			case streaming.CodeInvalidJSON, streaming.CodeInvalidRequest, streaming.CodeUnknownType:
			default:
				t.Fatalf("unknown code %q", pe.Code)
			}
			return
		}
		enc, err := m.MarshalJSON()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := streaming.DecodeClientMessage(enc)
		if err != nil {
			t.Fatalf("decode re-encoded %s: %v", enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}

// A message that is not UTF-8 is refused as malformed JSON, saying where:
// stored, its bytes would go out in every viewer's text frames.
func TestDecodeClientMessageRefusesInvalidUTF8(t *testing.T) {
	for in, off := range map[string]int{
		"{\"type\":\"send\",\"turns\":[{\"role\":\"user\",\"content\":\"raw \xff\xfe bytes\"}],\"idempotency_key\":\"k\"}": 54,
		"{\"type\":\"cancel\",\"generation\":\"g_\xe6\x97\"}":                                                              33,
	} {
		_, err := streaming.DecodeClientMessage([]byte(in))
		var pe *streaming.ProtocolError
		want := fmt.Sprintf("not valid UTF-8 at byte offset %d", off)
		if !errors.As(err, &pe) || pe.Code != streaming.CodeInvalidJSON || !strings.Contains(pe.Message, want) {
			t.Errorf("%q: %v, want %s saying %q", in, err, streaming.CodeInvalidJSON, want)
		}
	}
}

// A field of the wrong JSON type is refused in JSON's words, not Go's.
func TestDecodeClientMessageNamesJSONKinds(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"cancel","generation":7}`:                              `"generation" must be a string`,
		`{"type":"send","turns":[],"idempotency_key":"k","generate":1}`: `"generate" must be true or false`,
	} {
		_, err := streaming.DecodeClientMessage([]byte(in))
		var pe *streaming.ProtocolError
		if !errors.As(err, &pe) || !strings.Contains(pe.Message, want) {
			t.Errorf("%s: %v, want a message saying %s", in, err, want)
		}
	}
}

package streaming

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"

	"sessiond/streaming/jsonscan"
)

// Types of the client → server WebSocket messages (API.md, "WebSocket").
const (
	TypeHello  = "hello"
	TypeSend   = "send"
	TypeCancel = "cancel"
	TypePing   = "ping"
)

// ClientMessage is a decoded client → server WebSocket message. Which
// fields are set depends on Type:
//
//	hello   Resume (optional)
//	send    Turns (required), Generate, IdempotencyKey (required), Model (optional)
//	cancel  Generation (required)
//	ping    nothing
type ClientMessage struct {
	Type string

	// Resume is where a hello asks to resume, if anywhere.
	Resume *ClientResume

	// Turns is the JSON array of turns of a send, compacted, not decoded:
	// validating turns is the session's job.
	Turns          json.RawMessage
	Generate       bool
	IdempotencyKey string
	Model          string
	// ParentID and Root place a send's turns as a post's parent_id and
	// root do (an edit, a branch): 0 and false, the session's head.
	ParentID int64
	Root     bool

	// Generation is the generation a cancel names.
	Generation string
}

// ClientResume is the resume point of a hello: either a generation and the
// offset seen ({"generation":…,"after":N}), or, when Generation is empty,
// the last turn id seen ({"turn":N}).
type ClientResume struct {
	Generation string
	After      int64
	Turn       int64
}

// The fields each message type may have.
var clientFields = map[string][]string{
	TypeHello:  {"type", "resume"},
	TypeSend:   {"type", "turns", "generate", "idempotency_key", "model", "parent_id", "root"},
	TypeCancel: {"type", "generation"},
	TypePing:   {"type"},
}

// DecodeClientMessage decodes and validates one client → server message.
// It is strict: field names must match exactly (JSON's usual
// case-insensitive matching is not applied), unknown fields, nulls and
// wrong types are refused. It returns a *ProtocolError with code
// CodeInvalidJSON (empty, malformed or not UTF-8), CodeUnknownType or
// CodeInvalidRequest. Size limits are the transport's job. The message's
// raw fields (Turns) alias data: do not modify data afterwards.
func DecodeClientMessage(data []byte) (*ClientMessage, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, protocolErrorf(CodeInvalidJSON, "empty message")
	}
	fields, err := decodeObject("message", data)
	if err != nil {
		return nil, err
	}
	rawType, ok := fields["type"]
	if !ok {
		return nil, protocolErrorf(CodeInvalidRequest, `missing field "type"`)
	}
	m := &ClientMessage{}
	if err := decodeField("type", rawType, &m.Type); err != nil {
		return nil, err
	}
	allowed, ok := clientFields[m.Type]
	if !ok {
		return nil, protocolErrorf(CodeUnknownType, "unknown message type %q", m.Type)
	}
	if err := checkFields(m.Type+" message", fields, allowed); err != nil {
		return nil, err
	}
	switch m.Type {
	case TypeHello:
		if raw, ok := fields["resume"]; ok {
			r, err := decodeResume(raw)
			if err != nil {
				return nil, err
			}
			m.Resume = r
		}
	case TypeSend:
		raw, ok := fields["turns"]
		if !ok {
			return nil, protocolErrorf(CodeInvalidRequest, `send: missing field "turns"`)
		}
		if raw[0] != '[' { // raw is valid, compact JSON: no leading space
			return nil, protocolErrorf(CodeInvalidRequest, `send: "turns" must be an array`)
		}
		m.Turns = raw
		if raw, ok := fields["generate"]; ok {
			if err := decodeField("generate", raw, &m.Generate); err != nil {
				return nil, err
			}
		}
		if err := requiredString(fields, "send", "idempotency_key", &m.IdempotencyKey); err != nil {
			return nil, err
		}
		if raw, ok := fields["model"]; ok {
			if err := decodeField("model", raw, &m.Model); err != nil {
				return nil, err
			}
			if m.Model == "" {
				return nil, protocolErrorf(CodeInvalidRequest, `send: "model" must not be empty`)
			}
		}
		if raw, ok := fields["parent_id"]; ok {
			if err := decodeField("parent_id", raw, &m.ParentID); err != nil {
				return nil, err
			}
		}
		if raw, ok := fields["root"]; ok {
			if err := decodeField("root", raw, &m.Root); err != nil {
				return nil, err
			}
		}
	case TypeCancel:
		if err := requiredString(fields, "cancel", "generation", &m.Generation); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func decodeResume(raw json.RawMessage) (*ClientResume, error) {
	fields, err := decodeObject(`"resume"`, raw)
	if err != nil {
		return nil, err
	}
	r := &ClientResume{}
	if rawTurn, ok := fields["turn"]; ok {
		if err := checkFields(`"resume" by turn`, fields, []string{"turn"}); err != nil {
			return nil, err
		}
		if err := decodeCount("resume.turn", rawTurn, &r.Turn); err != nil {
			return nil, err
		}
		return r, nil
	}
	if err := checkFields(`"resume"`, fields, []string{"generation", "after"}); err != nil {
		return nil, err
	}
	if err := requiredString(fields, "resume", "generation", &r.Generation); err != nil {
		return nil, err
	}
	rawAfter, ok := fields["after"]
	if !ok {
		return nil, protocolErrorf(CodeInvalidRequest, `resume: missing field "after"`)
	}
	if err := decodeCount("resume.after", rawAfter, &r.After); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeObject decodes a JSON object into its fields, kept raw (aliasing
// data); small fields are compacted. Large ones (a 32 MiB "turns") are kept
// as sent: with jsonscan, one pass over a large message and no copy
// (encoding/json's map of raw messages took two passes and a copy).
func decodeObject(what string, data []byte) (map[string]json.RawMessage, error) {
	fields := make(map[string]json.RawMessage, 4)
	err := jsonscan.Object(data, func(k string, v []byte) error {
		fields[k] = v
		return nil
	})
	var se *jsonscan.SyntaxError
	switch {
	case errors.As(err, &se) && errors.Is(err, jsonscan.ErrInvalidUTF8):
		// JSON text, and a WebSocket text frame, must be UTF-8 (RFC 8259,
		// RFC 6455): raw bytes such as 0xff, stored, would reach every
		// viewer in frames its client must refuse.
		return nil, protocolErrorf(CodeInvalidJSON, "%s is not valid UTF-8 at byte offset %d", what, se.Offset)
	case errors.As(err, &se):
		return nil, protocolErrorf(CodeInvalidJSON, "%s is not valid JSON", what)
	case err != nil:
		return nil, protocolErrorf(CodeInvalidRequest, "%s must be a JSON object", what)
	}
	for k, raw := range fields {
		if len(raw) > compactLimit {
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, protocolErrorf(CodeInvalidJSON, "field %q: %v", k, err)
		}
		fields[k] = buf.Bytes()
	}
	return fields, nil
}

// compactLimit is the largest field decodeObject compacts.
const compactLimit = 64 << 10

func checkFields(what string, fields map[string]json.RawMessage, allowed []string) error {
	var unknown []string
	for k := range fields {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return protocolErrorf(CodeInvalidRequest, "unknown field %q in %s", unknown[0], what)
}

// decodeField decodes one field, refusing null (which encoding/json would
// silently ignore) and wrong types.
func decodeField(name string, raw json.RawMessage, dst any) error {
	if string(raw) == "null" {
		return protocolErrorf(CodeInvalidRequest, "%q must not be null", name)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return protocolErrorf(CodeInvalidRequest, "%q must be %s", name, JSONKind(te.Type))
		}
		return protocolErrorf(CodeInvalidRequest, "%q: %v", name, err)
	}
	return nil
}

func requiredString(fields map[string]json.RawMessage, what, name string, dst *string) error {
	raw, ok := fields[name]
	if !ok {
		return protocolErrorf(CodeInvalidRequest, "%s: missing field %q", what, name)
	}
	if err := decodeField(name, raw, dst); err != nil {
		return err
	}
	if *dst == "" {
		return protocolErrorf(CodeInvalidRequest, "%s: %q must not be empty", what, name)
	}
	return nil
}

// decodeCount decodes a non-negative integer (an offset or a turn id).
func decodeCount(name string, raw json.RawMessage, dst *int64) error {
	if err := decodeField(name, raw, dst); err != nil {
		return protocolErrorf(CodeInvalidRequest, "%q must be a non-negative integer", name)
	}
	if *dst < 0 {
		return protocolErrorf(CodeInvalidRequest, "%q must be a non-negative integer", name)
	}
	return nil
}

type helloJSON struct {
	Type   string `json:"type"`
	Resume any    `json:"resume,omitempty"`
}

type resumeGenerationJSON struct {
	Generation string `json:"generation"`
	After      int64  `json:"after"`
}

type resumeTurnJSON struct {
	Turn int64 `json:"turn"`
}

type sendJSON struct {
	Type           string          `json:"type"`
	Turns          json.RawMessage `json:"turns"`
	Generate       bool            `json:"generate"`
	IdempotencyKey string          `json:"idempotency_key"`
	Model          string          `json:"model,omitempty"`
	ParentID       int64           `json:"parent_id,omitempty"`
	Root           bool            `json:"root,omitempty"`
}

type cancelJSON struct {
	Type       string `json:"type"`
	Generation string `json:"generation"`
}

// MarshalJSON encodes m in its wire shape, with only the fields of its
// type, as a client would send it. Called directly it returns Turns byte
// for byte; json.Marshal would escape <, > and & in them.
func (m ClientMessage) MarshalJSON() ([]byte, error) {
	switch m.Type {
	case TypeHello:
		h := helloJSON{Type: TypeHello}
		if r := m.Resume; r != nil {
			if r.Generation != "" {
				h.Resume = resumeGenerationJSON{r.Generation, r.After}
			} else {
				h.Resume = resumeTurnJSON{r.Turn}
			}
		}
		return marshal(h)
	case TypeSend:
		if len(m.Turns) == 0 {
			return nil, errors.New("encode send: no turns")
		}
		return marshal(sendJSON{TypeSend, m.Turns, m.Generate, m.IdempotencyKey, m.Model, m.ParentID, m.Root})
	case TypeCancel:
		return marshal(cancelJSON{TypeCancel, m.Generation})
	case TypePing:
		return marshal(helloJSON{Type: TypePing})
	}
	return nil, protocolErrorf(CodeUnknownType, "unknown message type %q", m.Type)
}

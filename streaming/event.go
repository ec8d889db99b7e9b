package streaming

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"sessiond/streaming/jsonenc"
)

// Types of the messages this package builds or recognises; the "type" field
// of each JSON message (API.md, "Generation stream events" and "WebSocket").
const (
	TypeDelta          = "delta"
	TypeDone           = "done"
	TypeError          = "error"
	TypeResumeRequired = "resume_required"
)

// Event is one event of a generation's log, already encoded for the wire.
//
// Events are immutable once a Log has returned them: Data is shared by the
// log and by every viewer it is queued to, so nobody may modify it.
type Event struct {
	Generation string          // "g_…"
	Offset     int64           // 1, 2, 3 … with no gaps
	Type       string          // TypeDelta, TypeDone or TypeError
	Data       json.RawMessage // the full JSON object sent to clients
}

// Final reports whether e ends its generation (a done or error event).
func (e Event) Final() bool { return e.Type == TypeDone || e.Type == TypeError }

// Delta is the payload of a delta event: either Text, or ToolCall (a part
// of one tool call, whose argument text arrives in pieces).
type Delta struct {
	Text     string
	ToolCall *ToolCallDelta
}

// ToolCallDelta is a part of a tool call. Index says which call of the turn
// it belongs to; ID and Name usually come with the first part only.
type ToolCallDelta struct {
	Index     int    `json:"index"`
	ID        string `json:"id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// Done is the payload of a done event. Turn (the committed assistant turn)
// and Usage are JSON the caller has encoded; Turn is required (null for a
// generation that ended before it started), a nil Usage is sent as null.
// Error, when not nil, says why a generation ended without an answer (it
// was cancelled while queued, say): sent as "error", left out otherwise.
type Done struct {
	Turn         json.RawMessage
	Usage        json.RawMessage
	FinishReason string
	Error        *DoneError
}

// DoneError is a done event's "error": {"code":…,"message":…}.
type DoneError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Field order is part of the wire shape: type, generation, offset first, so
// that SSE framing can read them without decoding the whole message.
type deltaTextJSON struct {
	Type       string `json:"type"`
	Generation string `json:"generation"`
	Offset     int64  `json:"offset"`
	Text       string `json:"text"`
}

type deltaToolJSON struct {
	Type       string         `json:"type"`
	Generation string         `json:"generation"`
	Offset     int64          `json:"offset"`
	ToolCall   *ToolCallDelta `json:"tool_call"`
}

type doneJSON struct {
	Type         string          `json:"type"`
	Generation   string          `json:"generation"`
	Offset       int64           `json:"offset"`
	Turn         json.RawMessage `json:"turn"`
	Usage        json.RawMessage `json:"usage"`
	FinishReason string          `json:"finish_reason"`
	Error        *DoneError      `json:"error,omitempty"`
}

type errorJSON struct {
	Type       string `json:"type"`
	Generation string `json:"generation"`
	Offset     int64  `json:"offset"`
	Code       string `json:"code"`
	Message    string `json:"message"`
}

type resumeRequiredJSON struct {
	Type       string `json:"type"`
	Generation string `json:"generation"`
	After      int64  `json:"after"`
}

// EncodeDelta returns the JSON of a delta event:
// {"type":"delta","generation":…,"offset":…,"text":…} or, when d.ToolCall
// is set, {…,"tool_call":{"index":…,"id":…,"name":…,"arguments":…}}.
// It refuses a delta with both Text and ToolCall.
func EncodeDelta(generation string, offset int64, d Delta) (json.RawMessage, error) {
	if d.ToolCall != nil {
		if d.Text != "" {
			return nil, errors.New("encode delta: both text and tool_call set")
		}
		return marshal(deltaToolJSON{TypeDelta, generation, offset, d.ToolCall})
	}
	// By hand: every token of every generation comes through here, and
	// reflection was a fifth of the log's append.
	// A finished log rebuilds these messages from the same head (see
	// Log.moveLocked): keep the two in step through deltaHead.
	b := make([]byte, 0, len(`{"type":"delta","generation":"","offset":,"text":""}`)+len(generation)+20+len(d.Text)+len(d.Text)/8)
	b = deltaHead(b, generation)
	b = strconv.AppendInt(b, offset, 10)
	b = append(b, `,"text":`...)
	b = jsonenc.String(b, d.Text)
	return append(b, '}'), nil
}

// EncodeDone returns the JSON of a done event:
// {"type":"done","generation":…,"offset":…,"turn":…,"usage":…,"finish_reason":…}.
// It refuses an empty or invalid Turn and an invalid Usage.
func EncodeDone(generation string, offset int64, d Done) (json.RawMessage, error) {
	if len(bytes.TrimSpace(d.Turn)) == 0 {
		return nil, errors.New("encode done: empty turn")
	}
	b, err := marshal(doneJSON{TypeDone, generation, offset, d.Turn, d.Usage, d.FinishReason, d.Error})
	if err != nil {
		return nil, fmt.Errorf("encode done: %w", err)
	}
	return b, nil
}

// EncodeError returns the JSON of an error event:
// {"type":"error","generation":…,"offset":…,"code":…,"message":…}.
func EncodeError(generation string, offset int64, code, message string) (json.RawMessage, error) {
	if code == "" {
		return nil, errors.New("encode error: empty code")
	}
	return marshal(errorJSON{TypeError, generation, offset, code, message})
}

// EncodeResumeRequired returns
// {"type":"resume_required","generation":…,"after":…}, the message a
// dropped viewer gets before its connection is closed.
func EncodeResumeRequired(generation string, after int64) []byte {
	b, err := marshal(resumeRequiredJSON{TypeResumeRequired, generation, after})
	if err != nil {
		// Only strings and an integer: encoding cannot fail.
		panic(fmt.Sprintf("streaming: encode resume_required: %v", err))
	}
	return b
}

// marshal encodes v without HTML escaping (these messages are never
// embedded in HTML, and "<" as \u003c only costs bytes) and without the
// encoder's trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

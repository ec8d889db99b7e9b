package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"sessiond/streaming/jsonenc"
	"sessiond/streaming/jsonscan"
)

// DecodeNewTurns decodes a JSON array of new turns in one pass, without
// copying their contents (each Content aliases raw): for a 32 MiB tool
// result, one pass instead of encoding/json's two and a copy. As with
// encoding/json, keys match without regard to case, null leaves a field
// empty and a null array is nil.
//
// Unknown fields are refused, as the REST API's decoder refuses them (a
// post's body and a WebSocket send use it), and errors say what was wrong.
func DecodeNewTurns(raw []byte) ([]NewTurn, error) {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	turns := []NewTurn{}
	err := jsonscan.Array(raw, func(_ int, elem []byte) error {
		var t NewTurn
		switch {
		case string(elem) == "null":
		case elem[0] != '{':
			return fmt.Errorf(`each of "turns" must be an object {role, content, tool_call_id?}`)
		default:
			err := jsonscan.Object(elem, func(k string, v []byte) error {
				switch {
				case strings.EqualFold(k, "role"):
					return decodeString(v, "turns.role", &t.Role)
				case strings.EqualFold(k, "content"):
					t.Content = v
					return nil
				case strings.EqualFold(k, "tool_call_id"):
					return decodeString(v, "turns.tool_call_id", &t.ToolCallID)
				}
				return fmt.Errorf("unknown field %q", k)
			})
			if err != nil {
				return err
			}
		}
		turns = append(turns, t)
		return nil
	})
	switch {
	case err == nil:
		return turns, nil
	case errors.Is(err, jsonscan.ErrNotArray):
		return nil, fmt.Errorf(`field "turns" must be an array of {role, content, tool_call_id?}`)
	}
	return nil, err
}

func typeError(field, want string) error {
	return fmt.Errorf("field %q must be %s", field, want)
}

// decodeString decodes a JSON string into dst; null leaves dst alone.
func decodeString(v []byte, field string, dst *string) error {
	switch {
	case string(v) == "null":
		return nil
	case v[0] != '"':
		return typeError(field, "string")
	}
	return json.Unmarshal(v, dst)
}

// TurnMessageJSON returns the turn message of API.md, {"type":"turn","turn":{…}},
// with the turn's content spliced in as it is stored (see AppendTurnJSON):
// what WebSocket viewers, SSE streams and the export carry.
func TurnMessageJSON(t Turn) []byte {
	out := make([]byte, 0, len(t.Content)+512)
	out = append(out, `{"type":"turn","turn":`...)
	out = AppendTurnJSON(out, t)
	return append(out, '}')
}

// GenerationMessageJSON returns the "generation" message for g:
// {"type": "generation", "generation": "g_…", "status": "queued"} (or
// "running"). Every generation a post makes is announced with it to the
// session's sockets, after the post's "turn" messages, and to the post's
// own SSE stream, so that a client that did not post over REST learns its
// id (to follow it, or to cancel it while it waits) before its first
// event. Its members are those of the other generation messages, so that
// a client decoding every message into one shape still can: "generation"
// is the id, and no "offset" (it is not an event of the generation's
// stream, and has no SSE id).
func GenerationMessageJSON(g *Generation) []byte {
	b, _ := json.Marshal(struct {
		Type       string `json:"type"`
		Generation string `json:"generation"`
		Status     string `json:"status"`
	}{"generation", g.ID, g.Status})
	return b
}

// AppendTurnJSON appends t byte for byte as a json.Encoder with
// SetEscapeHTML(false) would encode it (the API's answers), except that
// its content is spliced in as stored: valid JSON, validated when it was
// posted or encoded by sessiond; only the whitespace of a content-parts
// array may differ, and it is never a line break (appendContent).
// encoding/json would validate and copy it again, which
// for a 32 MiB turn is most of the cost of sending it; and by hand, every
// posted turn's answer is built without reflection.
//
// Keep it in step with Turn's fields: a test compares the two encodings.
func AppendTurnJSON(b []byte, t Turn) []byte {
	b = slices.Grow(b, len(t.Content)+256)
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, t.ID, 10)
	b = append(b, `,"parent_id":`...)
	b = jsonenc.NullableInt(b, t.ParentID)
	b = append(b, `,"role":`...)
	b = jsonenc.String(b, t.Role)
	b = append(b, `,"content":`...)
	b = appendContent(b, t.Content)
	b = append(b, `,"tool_calls":`...)
	b = appendToolCalls(b, t.ToolCalls, true) // [] when none
	b = append(b, `,"tool_call_id":`...)
	b = jsonenc.NullableString(b, t.ToolCallID)
	b = append(b, `,"model":`...)
	b = jsonenc.NullableString(b, t.Model)
	b = append(b, `,"usage":`...)
	if u := t.Usage; u == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"prompt_tokens":`...)
		b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
		b = append(b, `,"completion_tokens":`...)
		b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
		b = append(b, `,"total_tokens":`...)
		b = strconv.AppendInt(b, int64(u.TotalTokens), 10)
		b = append(b, '}')
	}
	b = append(b, `,"finish_reason":`...)
	b = jsonenc.NullableString(b, t.FinishReason)
	b = append(b, `,"status":`...)
	b = jsonenc.String(b, t.Status)
	b = append(b, `,"error":`...)
	if e := t.Error; e == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"code":`...)
		b = jsonenc.String(b, e.Code)
		b = append(b, `,"message":`...)
		b = jsonenc.String(b, e.Message)
		b = append(b, '}')
	}
	b = append(b, `,"generation_id":`...)
	b = jsonenc.NullableString(b, t.GenerationID)
	b = append(b, `,"created_at":`...)
	b = jsonenc.Time(b, t.CreatedAt.Time)
	return append(b, '}')
}

// appendContent appends stored content as it is, or null when there is
// none. Content parts posted with line breaks between their tokens (valid
// JSON, stored as posted) are compacted, so that a turn is always one line:
// of an export, whose import reads a turn a line, and of an SSE data line.
// A JSON string has no raw line break, so only arrays are looked at.
func appendContent(b, content []byte) []byte {
	switch {
	case len(content) == 0:
		return append(b, "null"...)
	case content[0] != '"' && bytes.ContainsAny(content, "\r\n"):
		var buf bytes.Buffer
		if err := json.Compact(&buf, content); err == nil {
			return append(b, buf.Bytes()...)
		}
	}
	return append(b, content...)
}

// appendToolCalls appends calls as a JSON array, as encoding/json would;
// without args, the calls' arguments are left out (a turn event's large
// calls).
func appendToolCalls(b []byte, calls []ToolCall, args bool) []byte {
	b = append(b, '[')
	for i, c := range calls {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = jsonenc.String(b, c.ID)
		b = append(b, `,"type":`...)
		b = jsonenc.String(b, c.Type)
		b = append(b, `,"function":{"name":`...)
		b = jsonenc.String(b, c.Function.Name)
		if args {
			b = append(b, `,"arguments":`...)
			b = jsonenc.String(b, c.Function.Arguments)
		}
		b = append(b, "}}"...)
	}
	return append(b, ']')
}

package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"sessiond/streaming/jsonscan"
)

// errTurnsShape: the turns of a send are not an array of turn objects.
var errTurnsShape = errors.New("turns must be an array of {role, content, tool_call_id?}")

// DecodeNewTurns decodes a JSON array of new turns in one pass, without
// copying their contents (each Content aliases raw): for a 32 MiB tool
// result, one pass instead of encoding/json's two and a copy. As with
// encoding/json, keys match without regard to case, null leaves a field
// empty and a null array is nil.
//
// strict refuses unknown fields, as the REST API's decoder does, and its
// errors say what was wrong; otherwise unknown fields are ignored, as
// json.Unmarshal does (a WebSocket send), and every error is about the
// array's shape.
func DecodeNewTurns(raw []byte, strict bool) ([]NewTurn, error) {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	turns := []NewTurn{}
	err := jsonscan.Array(raw, func(_ int, elem []byte) error {
		var t NewTurn
		switch {
		case string(elem) == "null":
		case elem[0] != '{':
			return typeError("turns", "session.NewTurn")
		default:
			err := jsonscan.Object(elem, func(k string, v []byte) error {
				switch {
				case strings.EqualFold(k, "role"):
					return decodeString(v, "turns.role", &t.Role)
				case strings.EqualFold(k, "content"):
					t.Content = v
				case strings.EqualFold(k, "tool_call_id"):
					return decodeString(v, "turns.tool_call_id", &t.ToolCallID)
				case strict:
					return fmt.Errorf("unknown field %q", k)
				}
				return nil
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
	case !strict:
		return nil, errTurnsShape
	case errors.Is(err, jsonscan.ErrNotArray):
		return nil, typeError("turns", "[]session.NewTurn")
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

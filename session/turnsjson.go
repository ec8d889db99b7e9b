package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"sessiond/streaming/jsonscan"
)

// errTurnsShape: the turns of a send are not an array of turn objects.
var errTurnsShape = errors.New("turns must be an array of {role, content, tool_call_id?}")

// decodeNewTurns decodes the turns of a WebSocket send as json.Unmarshal
// into []NewTurn would (keys matched without regard to case, unknown
// fields ignored, null leaving a field empty), in one pass and without
// copying the contents: each Content aliases raw. For a 32 MiB tool result
// that is one pass instead of encoding/json's two and a copy.
func decodeNewTurns(raw []byte) ([]NewTurn, error) {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	turns := []NewTurn{}
	err := jsonscan.Array(raw, func(_ int, elem []byte) error {
		var t NewTurn
		if string(elem) != "null" {
			err := jsonscan.Object(elem, func(k string, v []byte) error {
				switch {
				case strings.EqualFold(k, "role"):
					return decodeStringField(v, &t.Role)
				case strings.EqualFold(k, "content"):
					t.Content = v
				case strings.EqualFold(k, "tool_call_id"):
					return decodeStringField(v, &t.ToolCallID)
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
	if err != nil {
		return nil, errTurnsShape
	}
	return turns, nil
}

// decodeStringField decodes a JSON string into dst; null leaves dst alone.
func decodeStringField(v []byte, dst *string) error {
	switch {
	case string(v) == "null":
		return nil
	case len(v) == 0 || v[0] != '"':
		return errTurnsShape
	}
	return json.Unmarshal(v, dst)
}

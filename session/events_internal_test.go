package session

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// turnEvent is a turn as docs/events.md describes it in a turn event: the
// reference encoding that appendTurnEvent writes by hand.
type turnEvent struct {
	ID           int64           `json:"id"`
	ParentID     *int64          `json:"parent_id"`
	Role         string          `json:"role"`
	Status       string          `json:"status"`
	GenerationID *string         `json:"generation_id,omitempty"`
	ContentBytes int             `json:"content_bytes"`
	Content      json.RawMessage `json:"content,omitempty"`
	ToolCalls    []eventToolCall `json:"tool_calls,omitempty"`
	Preview      string          `json:"preview"`
	CreatedAt    Timestamp       `json:"created_at"`
}

// eventToolCall is a tool call in a turn event: its arguments are left out
// when the calls' JSON is over maxEventContent.
type eventToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string  `json:"name"`
		Arguments *string `json:"arguments,omitempty"`
	} `json:"function"`
}

func newTurnEvent(t Turn) turnEvent {
	e := turnEvent{ID: t.ID, ParentID: t.ParentID, Role: t.Role, Status: t.Status, GenerationID: t.GenerationID,
		ContentBytes: len(t.Content), Preview: preview(t), CreatedAt: t.CreatedAt}
	if len(t.Content) <= maxEventContent {
		e.Content = t.Content
	}
	whole, _ := json.Marshal(t.ToolCalls)
	for _, c := range t.ToolCalls {
		ec := eventToolCall{ID: c.ID, Type: c.Type}
		ec.Function.Name = c.Function.Name
		if len(whole) <= maxEventContent {
			ec.Function.Arguments = &c.Function.Arguments
		}
		e.ToolCalls = append(e.ToolCalls, ec)
	}
	if listed, _ := json.Marshal(e.ToolCalls); len(listed) > maxEventContent {
		e.ToolCalls = nil // too many to list even without arguments
	}
	return e
}

// The hand-built turn event is byte for byte what record makes of the map
// every other event is built from (publish), so consumers see one format.
func TestTurnEventMatchesPublish(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_456).UTC()
	big := Turn{ID: 9, Role: RoleTool, Status: TurnComplete, Content: json.RawMessage(`"` + strings.Repeat("x <y> ", maxEventContent/6+1) + `"`), CreatedAt: Timestamp{at}}
	bigCalls := Turn{ID: 10, Role: RoleAssistant, Status: TurnComplete, Content: json.RawMessage(`""`), CreatedAt: Timestamp{at}, ToolCalls: []ToolCall{
		{ID: "c1", Type: "function", Function: FunctionCall{Name: "write", Arguments: `{"text":"` + strings.Repeat("<x>", maxEventContent/3) + `"}`}},
		{ID: "c2", Type: "function", Function: FunctionCall{Name: "run", Arguments: `{}`}},
	}}
	// So many calls that even their names and ids pass maxEventContent.
	manyCalls := Turn{ID: 11, Role: RoleAssistant, Status: TurnComplete, Content: json.RawMessage(`""`), CreatedAt: Timestamp{at}}
	for i := range 700 {
		manyCalls.ToolCalls = append(manyCalls.ToolCalls, ToolCall{ID: fmt.Sprintf("call_%04d", i), Type: "function",
			Function: FunctionCall{Name: "a_rather_long_function_name_" + strings.Repeat("x", 40), Arguments: `{}`}})
	}
	if ev := appendTurnEvent(nil, at, "a", "s", manyCalls, preview(manyCalls)); len(ev) > MinBusEventBytes || bytes.Contains(ev, []byte(`"tool_calls"`)) {
		t.Errorf("a turn of 700 calls: an event of %d bytes (the bus needs at most %d), tool_calls listed: %v", len(ev), MinBusEventBytes, bytes.Contains(ev, []byte(`"tool_calls"`)))
	}
	for _, turn := range append(sampleTurns(), big, bigCalls, manyCalls) {
		got := appendTurnEvent([]byte("x"), at, "alice <a>", "s1", turn, preview(turn))
		want := encodeJSON(t, map[string]any{"turn": newTurnEvent(turn), "session_id": "s1", "owner": "alice <a>", "at": Timestamp{at}})
		if !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("turn event\n got %s\nwant x%s", got, want)
		}
	}
	var e struct {
		Turn map[string]any `json:"turn"`
	}
	if err := json.Unmarshal(appendTurnEvent(nil, at, "a", "s", big, preview(big)), &e); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Turn["content"]; ok || e.Turn["content_bytes"] != float64(len(big.Content)) {
		t.Errorf("a turn larger than maxEventContent: content %v, content_bytes %v", ok, e.Turn["content_bytes"])
	}
}

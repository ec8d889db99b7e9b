package session

import (
	"encoding/json"
	"testing"
	"time"
)

// The turn event's typed body must marshal exactly as the map that every
// other event is built from (publish), so consumers see one format.
func TestTurnEventMsgMatchesPublish(t *testing.T) {
	parent, gid := int64(4), "g_1"
	turn := Turn{ID: 5, ParentID: &parent, Role: RoleAssistant, Status: TurnComplete, GenerationID: &gid,
		Content: json.RawMessage(`"hi \u00e9 there"`), ToolCalls: []ToolCall{{ID: "c1", Type: "function", Function: FunctionCall{Name: "f", Arguments: `{"a":1}`}}},
		CreatedAt: time.UnixMilli(1_700_000_000_123).UTC()}
	at := time.UnixMilli(1_700_000_000_456).UTC()
	typed, err := json.Marshal(turnEventMsg{At: at, Owner: "alice", SessionID: "s1", Turn: newTurnEvent(turn)})
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]any{"turn": newTurnEvent(turn), "session_id": "s1", "owner": "alice", "at": at}
	mapped, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	if string(typed) != string(mapped) {
		t.Fatalf("typed turn event\n%s\ndiffers from publish's\n%s", typed, mapped)
	}
}

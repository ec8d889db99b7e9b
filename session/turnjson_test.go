package session

import (
	"encoding/json"
	"testing"
	"time"
)

// TurnMessageJSON splices content without re-encoding; the result must
// decode to the same turn as encoding/json's.
func TestTurnMessageJSON(t *testing.T) {
	p := int64(1)
	for _, content := range []string{`"hello \"there\" é \u00e9"`, `[{"type":"text","text":"x"}]`, `""`} {
		tr := Turn{ID: 2, ParentID: &p, Role: "user", Content: json.RawMessage(content), Status: "complete", CreatedAt: time.UnixMilli(5).UTC()}
		got, err := TurnMessageJSON(tr)
		if err != nil {
			t.Fatal(err)
		}
		var a, b struct {
			Type string
			Turn Turn
		}
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		want, _ := json.Marshal(map[string]any{"type": "turn", "turn": tr})
		json.Unmarshal(want, &b)
		ga, _ := json.Marshal(a)
		gb, _ := json.Marshal(b)
		if string(ga) != string(gb) || a.Type != "turn" {
			t.Fatalf("spliced %s\nwant    %s", got, want)
		}
	}
}

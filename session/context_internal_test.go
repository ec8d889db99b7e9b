package session

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"sessiond/objects"
)

// pairToolCalls keeps exactly the calls answered right after their
// message, and the results of those calls.
func TestPairToolCalls(t *testing.T) {
	call := func(ids ...string) Message {
		m := Message{Role: RoleAssistant}
		for _, id := range ids {
			m.ToolCalls = append(m.ToolCalls, ToolCall{ID: id, Type: "function", Function: FunctionCall{Name: "f", Arguments: "{}"}})
		}
		return m
	}
	result := func(id string) Message { return Message{Role: RoleTool, ToolCallID: id, Content: "r" + id} }
	user := Message{Role: RoleUser, Content: "u"}
	said := func(m Message, text string) Message { m.Content = text; return m }
	show := func(msgs []Message) string {
		var b strings.Builder
		for _, m := range msgs {
			switch m.Role {
			case RoleAssistant:
				var ids []string
				for _, c := range m.ToolCalls {
					ids = append(ids, c.ID)
				}
				fmt.Fprintf(&b, "a%q%v ", m.Content, ids)
			case RoleTool:
				fmt.Fprintf(&b, "t:%s ", m.ToolCallID)
			default:
				b.WriteString(m.Role + " ")
			}
		}
		return strings.TrimSpace(b.String())
	}
	for _, c := range []struct {
		name string
		in   []Message
		want string
	}{
		{"answered", []Message{user, call("1", "2"), result("1"), result("2"), user}, `user a""[1 2] t:1 t:2 user`},
		{"a call cut off by a cancel", []Message{user, call("1"), user}, `user user`},
		{"its text stays", []Message{user, said(call("1"), "let me look"), user}, `user a"let me look"[] user`},
		{"one of two answered", []Message{call("1", "2"), result("2")}, `a""[2] t:2`},
		{"a result for no call", []Message{user, result("9"), user}, `user user`},
		{"a result after a user turn", []Message{call("1"), user, result("1")}, `user`},
		{"a result of another call", []Message{call("1"), result("1"), result("7")}, `a""[1] t:1`},
		{"an answer twice", []Message{call("1"), result("1"), result("1")}, `a""[1] t:1`},
		{"results first, cut from their call", []Message{result("1"), user}, `user`},
	} {
		if got := show(pairToolCalls(c.in)); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// The newest turn is a tool result of a call with many results: the model
// gets the call, the newest result and the results the budget takes, not
// every result past the budget.
func TestContextNewestResultOfManyPastBudget(t *testing.T) {
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{ContextTokens: 4096}))

	const n = 40
	var b strings.Builder
	b.WriteString(`{"type":"session","session":{"id":"x"}}` + "\n")
	b.WriteString(`{"type":"turn","turn":{"id":1,"role":"user","content":"go"}}` + "\n")
	var calls []string
	for i := range n {
		calls = append(calls, fmt.Sprintf(`{"id":"c%d","type":"function","function":{"name":"f","arguments":"{}"}}`, i))
	}
	fmt.Fprintf(&b, `{"type":"turn","turn":{"id":2,"parent_id":1,"role":"assistant","content":"","tool_calls":[%s]}}`+"\n", strings.Join(calls, ","))
	pad := strings.Repeat("r", 8<<10) // 2,000 tokens: two results fill the budget
	for i := range n {
		fmt.Fprintf(&b, `{"type":"turn","turn":{"id":%d,"parent_id":%d,"role":"tool","tool_call_id":"c%d","content":"%s"}}`+"\n", i+3, i+2, i, pad)
	}
	msgs := importAndAssemble(t, svc, b.String(), n+2, 4096)
	var got []string
	results, ncalls := 0, -1
	for _, m := range msgs {
		got = append(got, m.Role+":"+m.ToolCallID)
		switch m.Role {
		case RoleTool:
			results++
		case RoleAssistant:
			ncalls = len(m.ToolCalls)
		}
	}
	if results == 0 || results > 2 || ncalls != results || msgs[len(msgs)-1].ToolCallID != fmt.Sprintf("c%d", n-1) {
		t.Fatalf("the model is sent %v: want the call, the newest result and the results the budget takes (2 at most)", got)
	}
}

// importAndAssemble imports the session export jsonl and returns the
// context assembled for the branch ending at turn leaf, within budget.
func importAndAssemble(t *testing.T, svc *Service, jsonl string, leaf int64, budget int) []Message {
	t.Helper()
	ctx := context.Background()
	s, err := svc.Import(ctx, "local", strings.NewReader(jsonl), "")
	if err != nil {
		t.Fatal(err)
	}
	stub, err := svc.sessions.Get(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) ([]Message, error) {
		return o.assembleContext(ctx, tx, "", leaf, budget)
	})
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// Content parts count with what they hold, not only their text: turns
// each carrying a large image used to count as empty and pass any budget
// whole (1.2 MB sent against a budget of 1,200 tokens).
func TestContextCountsContentParts(t *testing.T) {
	const budget = 4096 // less the reply's room: about three images
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{ContextTokens: budget}))
	var b strings.Builder
	b.WriteString(`{"type":"session","session":{"id":"x"}}` + "\n")
	image := `{"type":"image_url","image_url":{"url":"data:image/png;base64,` + strings.Repeat("A", 400<<10) + `"}}`
	const n = 8
	for i := range n {
		parent := "null"
		if i > 0 {
			parent = fmt.Sprint(i)
		}
		fmt.Fprintf(&b, `{"type":"turn","turn":{"id":%d,"parent_id":%s,"role":"user","content":[{"type":"text","text":"look %d"},%s]}}`+"\n", i+1, parent, i, image)
	}
	msgs := importAndAssemble(t, svc, b.String(), n, budget)
	if len(msgs) == 0 || len(msgs) >= n {
		t.Fatalf("the model is sent %d of %d turns of an image each: want the newest ones the budget takes", len(msgs), n)
	}
	if got := msgs[len(msgs)-1].Text(); got != fmt.Sprintf("look %d", n-1) {
		t.Fatalf("the newest turn sent is %q", got)
	}
}

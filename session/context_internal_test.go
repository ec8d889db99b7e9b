package session

import (
	"fmt"
	"strings"
	"testing"
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

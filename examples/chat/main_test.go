package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"sessiond/web/client"
	"sessiond/web/webtest"
)

// TestChatThenResume chats in a new session, then resumes it by ID as a
// second terminal would: the history is printed and the chat goes on.
func TestChatThenResume(t *testing.T) {
	c := client.New(webtest.New(t, nil).URL, "")

	var out bytes.Buffer
	if err := chat(context.Background(), c, "", strings.NewReader("/say first reply\n"), &out); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--session (\S+)\)`).FindStringSubmatch(out.String())
	if m == nil || !strings.Contains(out.String(), "assistant: first reply\n") {
		t.Fatalf("first run:\n%s", out.String())
	}
	out.Reset()
	if err := chat(context.Background(), c, m[1], strings.NewReader("/say second\n"), &out); err != nil {
		t.Fatal(err)
	}
	want := "user: /say first reply\nassistant: first reply\n> assistant: second\n"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("resumed run:\n%s\nwant it to contain:\n%s", out.String(), want)
	}
}

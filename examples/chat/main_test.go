package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"sessiond/objects"
	"sessiond/session"
	"sessiond/web"
	"sessiond/web/client"
)

// TestChatThenResume chats in a new session, then resumes it by ID as a
// second terminal would: the history is printed and the chat goes on.
func TestChatThenResume(t *testing.T) {
	rt := objects.NewRuntime(t.TempDir())
	rt.Durability = objects.DurabilityNormal
	rt.Logger = slog.New(slog.DiscardHandler)
	reg := session.NewRegistry()
	reg.Register("offline", session.NewOfflineModel(0), session.ModelInfo{})
	svc, err := session.NewService(rt, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	svc.Start()
	srv := httptest.NewServer(web.NewHandler(svc, web.Config{AuthOff: true}))
	defer func() { srv.Close(); svc.Close(); rt.Close() }()
	c := client.New(srv.URL, "")

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

// Command chat is a terminal chat on sessiond: it starts a conversation, or
// resumes one by ID from any machine, and streams each reply as it is
// generated. It uses only the Go client (sessiond/web/client).
//
//	go run ./examples/chat                       # a new conversation
//	go run ./examples/chat --session 01K…        # resume one
//
// Type a message and Enter; Ctrl-D ends. If a reply is still being
// generated when you resume, it is streamed from its start.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"sessiond/session"
	"sessiond/web/client"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "sessiond base URL")
	key := flag.String("key", os.Getenv("SESSIOND_KEY"), "API key, if sessiond has keys")
	id := flag.String("session", "", "session ID to resume; empty starts a new one")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := chat(ctx, client.New(*url, *key), *id, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

// chat runs the conversation: history first when resuming, then one
// streamed reply per input line.
func chat(ctx context.Context, c *client.Client, id string, in io.Reader, out io.Writer) error {
	if id == "" {
		s, err := c.CreateSession(ctx, session.CreateRequest{Title: "terminal chat"})
		if err != nil {
			return err
		}
		id = s.ID
		fmt.Fprintf(out, "New session %s (resume it with --session %s)\n", id, id)
	} else {
		// One read: a reply is in it either finished, printed here, or
		// still streaming, streamed in full below; never both. (Reading
		// the session's running generation, then the turns, printed a
		// reply that finished in between twice.)
		turns, _, err := c.Turns(ctx, id, session.TurnQuery{Limit: 20})
		if err != nil {
			return err
		}
		running := ""
		for _, t := range turns {
			if t.Status == session.TurnStreaming {
				if t.GenerationID != nil {
					running = *t.GenerationID
				}
				continue
			}
			fmt.Fprintf(out, "%s: %s\n", t.Role, text(t))
		}
		if running != "" {
			if err := stream(ctx, c, id, running, out); err != nil {
				return err
			}
		}
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 32<<20)
	for fmt.Fprint(out, "> "); sc.Scan(); fmt.Fprint(out, "> ") {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		content, _ := json.Marshal(line)
		res, err := c.Post(ctx, id, session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: content}}, Generate: true})
		if err != nil {
			return err
		}
		if res.Generation != nil {
			if err := stream(ctx, c, id, res.Generation.ID, out); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(out)
	return sc.Err()
}

// stream prints a generation's text as it arrives.
func stream(ctx context.Context, c *client.Client, id, gid string, out io.Writer) error {
	fmt.Fprint(out, "assistant: ")
	return c.Follow(ctx, id, gid, 0, func(ev client.Event) error {
		switch ev.Type {
		case "delta":
			if ev.ToolCall != nil {
				fmt.Fprintf(out, "[tool call %s]", ev.ToolCall)
			}
			fmt.Fprint(out, ev.Text)
		case "done":
			fmt.Fprintln(out)
		case "error":
			fmt.Fprintf(out, "\n[error %s: %s]\n", ev.Code, ev.Message)
		}
		return nil
	})
}

func text(t session.Turn) string {
	var s string
	if json.Unmarshal(t.Content, &s) == nil {
		return s
	}
	return string(t.Content)
}

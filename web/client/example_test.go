package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"

	"sessiond/session"
	"sessiond/web/client"
)

// A conversation: create a session, post a message that starts a
// generation, and stream the reply; Follow resumes by itself across broken
// connections. (It needs a running sessiond: go run ./cmd/sessiond.)
func Example() {
	ctx := context.Background()
	c := client.New("http://127.0.0.1:8080", "") // and an API key, if the server has keys
	s, err := c.CreateSession(ctx, session.CreateRequest{Title: "first"})
	if err != nil {
		log.Fatal(err)
	}
	text, _ := json.Marshal("/words 5")
	res, err := c.Post(ctx, s.ID, session.PostRequest{
		Turns:          []session.NewTurn{{Role: session.RoleUser, Content: text}},
		Generate:       true,
		IdempotencyKey: "first-message", // a retry posts it once
	})
	if err != nil {
		log.Fatal(err)
	}
	err = c.Follow(ctx, s.ID, res.Generation.ID, 0, func(ev client.Event) error {
		switch ev.Type {
		case "delta":
			fmt.Print(ev.Text)
		case "done":
			fmt.Println()
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Later, from anywhere: the session's turns by its id.
	turns, _, err := c.Turns(ctx, s.ID, session.TurnQuery{Limit: 50})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(turns), "turns")
}

package session_test

import (
	"context"
	"fmt"

	"sessiond/session"
)

// The offline model streams one word per delta; its commands script the
// reply, here /say.
func ExampleOfflineModel() {
	reg := session.NewRegistry()
	if err := reg.Register(session.OfflineModelName, session.NewOfflineModel(0), session.ModelInfo{ContextTokens: 32_000}); err != nil {
		fmt.Println(err)
		return
	}
	m, _, err := reg.Get(reg.Default())
	if err != nil {
		fmt.Println(err)
		return
	}
	req := &session.ModelRequest{Messages: []session.Message{{Role: "user", Content: "/say Hello from sessiond"}}}
	res, err := m.Stream(context.Background(), req, func(d session.Delta) error {
		fmt.Printf("delta %q\n", d.Text)
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q %s %+v\n", res.Text, res.FinishReason, *res.Usage)
	// Output:
	// delta "Hello "
	// delta "from "
	// delta "sessiond"
	// "Hello from sessiond" stop {PromptTokens:6 CompletionTokens:3 TotalTokens:9}
}

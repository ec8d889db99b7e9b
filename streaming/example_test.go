package streaming_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"sessiond/streaming"
)

// printSink prints each frame: a stand-in for a WebSocket.
type printSink struct{}

func (printSink) WriteFrame(_ context.Context, frames [][]byte) error {
	for _, f := range frames {
		fmt.Println(string(f))
	}
	return nil
}

func (printSink) Close(code int, reason string) error {
	fmt.Println("close", code, reason)
	return nil
}

// A session's hub streams a generation to its viewers.
func ExampleHub() {
	hub := streaming.NewHub(nil)
	defer hub.Close()

	// One per connection, created by the web layer.
	v := streaming.NewViewer(printSink{}, &streaming.ViewerOptions{CloseOnFinal: true})
	if err := hub.AddViewer(v, nil); err != nil {
		fmt.Println(err)
		return
	}

	// The producer: one delta per chunk from the model, then done.
	l, err := hub.StartGeneration("g_1")
	if err != nil {
		fmt.Println(err)
		return
	}
	l.AppendText("Hello")
	l.AppendText(", world")
	l.Finish(streaming.Done{
		Turn:         json.RawMessage(`{"id":2,"role":"assistant","content":"Hello, world"}`),
		Usage:        json.RawMessage(`{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}`),
		FinishReason: "stop",
	})
	<-v.Done()

	// Output:
	// {"type":"delta","generation":"g_1","offset":1,"text":"Hello"}
	// {"type":"delta","generation":"g_1","offset":2,"text":", world"}
	// {"type":"done","generation":"g_1","offset":3,"turn":{"id":2,"role":"assistant","content":"Hello, world"},"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"finish_reason":"stop"}
	// close 1000 generation finished
}

// An SSE endpoint for one generation, resuming after Last-Event-ID
// (GET /v1/sessions/{id}/generations/{gid}/stream).
func ExampleNewSSE() {
	var hub *streaming.Hub // the session's
	handler := func(w http.ResponseWriter, r *http.Request) {
		after, err := streaming.ParseLastEventID(r.Header.Get("Last-Event-ID"))
		if err != nil {
			http.Error(w, `{"error":{"code":"invalid_request","message":"bad Last-Event-ID"}}`, http.StatusBadRequest)
			return
		}
		gid := r.PathValue("gid")
		if !hub.Retained(gid) {
			// Past retention: send the committed turn instead.
			return
		}
		sse, err := streaming.NewSSE(w, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		v := streaming.NewViewer(sse, &streaming.ViewerOptions{CloseOnFinal: true})
		defer v.Close() // must return before the handler does
		if err := hub.Resume(v, gid, after); err != nil {
			return
		}
		select {
		case <-v.Done(): // done or error written, or dropped
		case <-r.Context().Done(): // client gone
		}
	}
	_ = handler
}

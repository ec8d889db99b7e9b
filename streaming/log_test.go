package streaming_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"sessiond/streaming"
)

func TestEncodeEvents(t *testing.T) {
	tests := []struct {
		name string
		enc  func() (json.RawMessage, error)
		want string
	}{
		{"text", func() (json.RawMessage, error) {
			return streaming.EncodeDelta("g_1", 3, streaming.Delta{Text: "Hi <b>\n"})
		}, `{"type":"delta","generation":"g_1","offset":3,"text":"Hi <b>\n"}`},
		{"empty text", func() (json.RawMessage, error) {
			return streaming.EncodeDelta("g_1", 1, streaming.Delta{})
		}, `{"type":"delta","generation":"g_1","offset":1,"text":""}`},
		{"tool call first part", func() (json.RawMessage, error) {
			return streaming.EncodeDelta("g_1", 4, streaming.Delta{ToolCall: &streaming.ToolCallDelta{
				Index: 0, ID: "call_1", Name: "read_file", Arguments: `{"pa`}})
		}, `{"type":"delta","generation":"g_1","offset":4,"tool_call":{"index":0,"id":"call_1","name":"read_file","arguments":"{\"pa"}}`},
		{"tool call later part", func() (json.RawMessage, error) {
			return streaming.EncodeDelta("g_1", 5, streaming.Delta{ToolCall: &streaming.ToolCallDelta{Index: 1, Arguments: `th"}`}})
		}, `{"type":"delta","generation":"g_1","offset":5,"tool_call":{"index":1,"arguments":"th\"}"}}`},
		{"done", func() (json.RawMessage, error) {
			return streaming.EncodeDone("g_1", 6, streaming.Done{
				Turn: json.RawMessage(`{"id": 3}`), Usage: json.RawMessage(`{"total_tokens":17}`), FinishReason: "stop"})
		}, `{"type":"done","generation":"g_1","offset":6,"turn":{"id":3},"usage":{"total_tokens":17},"finish_reason":"stop"}`},
		{"done without usage", func() (json.RawMessage, error) {
			return streaming.EncodeDone("g_1", 2, streaming.Done{Turn: json.RawMessage(`{"id":3}`), FinishReason: "tool_calls"})
		}, `{"type":"done","generation":"g_1","offset":2,"turn":{"id":3},"usage":null,"finish_reason":"tool_calls"}`},
		{"error", func() (json.RawMessage, error) {
			return streaming.EncodeError("g_1", 7, "upstream_error", "model said no")
		}, `{"type":"error","generation":"g_1","offset":7,"code":"upstream_error","message":"model said no"}`},
		{"resume_required", func() (json.RawMessage, error) {
			return streaming.EncodeResumeRequired("g_1", 9), nil
		}, `{"type":"resume_required","generation":"g_1","after":9}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.enc()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	if _, err := streaming.EncodeDelta("g", 1, streaming.Delta{Text: "a", ToolCall: &streaming.ToolCallDelta{}}); err == nil {
		t.Error("EncodeDelta with text and tool call: no error")
	}
	if _, err := streaming.EncodeDone("g", 1, streaming.Done{}); err == nil {
		t.Error("EncodeDone without turn: no error")
	}
	if _, err := streaming.EncodeDone("g", 1, streaming.Done{Turn: json.RawMessage(`{"id":`)}); err == nil {
		t.Error("EncodeDone with invalid turn: no error")
	}
	if _, err := streaming.EncodeError("g", 1, "", "x"); err == nil {
		t.Error("EncodeError without code: no error")
	}
}

func TestLogOffsetsAndBacklog(t *testing.T) {
	l := streaming.NewLog("g_1", nil)
	for i, text := range []string{"a", "b", "c"} {
		e := mustAppend(t, l, text)
		if got, want := e.Offset, int64(i+1); got != want {
			t.Fatalf("Offset=%d, want %d", got, want)
		}
		if e.Generation != "g_1" || e.Type != streaming.TypeDelta {
			t.Fatalf("event %+v", e)
		}
	}
	done := mustFinish(t, l)
	if got, want := done.Offset, int64(4); got != want {
		t.Fatalf("done Offset=%d, want %d", got, want)
	}
	if !l.Ended() || l.Last() != 4 {
		t.Fatalf("Ended=%v Last=%d", l.Ended(), l.Last())
	}
	evs, err := l.Events(1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(evs), 3; got != want {
		t.Fatalf("Events(1)=%d events, want %d", got, want)
	}
	if evs[0].Offset != 2 || evs[2].Type != streaming.TypeDone {
		t.Fatalf("Events(1)=%+v", evs)
	}
	if evs, _ := l.Events(4); len(evs) != 0 {
		t.Fatalf("Events(4)=%d events, want 0", len(evs))
	}
	for _, after := range []int64{-1, 5} {
		if _, err := l.Events(after); !errors.Is(err, streaming.ErrOffsetOutOfRange) {
			t.Errorf("Events(%d) err=%v, want ErrOffsetOutOfRange", after, err)
		}
	}
	if _, err := l.AppendText("late"); !errors.Is(err, streaming.ErrLogEnded) {
		t.Errorf("Append after Finish err=%v, want ErrLogEnded", err)
	}
	if _, err := l.Fail("x", "y"); !errors.Is(err, streaming.ErrLogEnded) {
		t.Errorf("Fail after Finish err=%v, want ErrLogEnded", err)
	}
	l.Release()
	l.Release()
	if l.Retained() {
		t.Fatal("Retained after Release")
	}
	if _, err := l.Events(0); !errors.Is(err, streaming.ErrReleased) {
		t.Errorf("Events after Release err=%v, want ErrReleased", err)
	}
	if err := l.Subscribe(streaming.NewViewer(&recSink{}, nil), 0); !errors.Is(err, streaming.ErrReleased) {
		t.Errorf("Subscribe after Release err=%v, want ErrReleased", err)
	}
}

func TestLogFail(t *testing.T) {
	l := streaming.NewLog("g_2", nil)
	mustAppend(t, l, "a")
	e, err := l.Fail("upstream_error", "boom")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(e.Data), `{"type":"error","generation":"g_2","offset":2,"code":"upstream_error","message":"boom"}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if !e.Final() || !l.Ended() {
		t.Fatal("error event does not end the log")
	}
}

func TestLogRetentionExpires(t *testing.T) {
	l := streaming.NewLog("g_1", &streaming.LogOptions{Retention: 1})
	mustAppend(t, l, "a")
	if !l.Retained() {
		t.Fatal("running log not retained")
	}
	mustFinish(t, l)
	checkFor(t, "log released after its retention", func() bool { return !l.Retained() })
}

func TestLogDefaultRetentionKeepsEvents(t *testing.T) {
	l := streaming.NewLog("g_1", nil)
	mustAppend(t, l, "a")
	mustFinish(t, l)
	if !l.Retained() {
		t.Fatal("ended log not retained")
	}
	if got, want := streaming.DefaultRetention.Minutes(), 10.0; got < want {
		t.Fatalf("DefaultRetention=%v min, want at least %v", got, want)
	}
	l.Release()
}

// A finished log keeps its deltas' text instead of their encoded messages
// (compacted): every event read or resumed from it afterwards must be the
// event Append returned, byte for byte, from any offset, for text of any
// kind and tool-call parts mixed in, ended by done or by error.
func TestFinishedLogReplaysEventsExactly(t *testing.T) {
	texts := []string{"word", " ", "", "é", "\"quoted\"", "back\\slash", "line\nbreak", "\x00\x1f", "\xff\xfe invalid", "\u2028\u2029", "<b>&</b>", "日本語"}
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 40 {
		l := streaming.NewLog(fmt.Sprintf("g_round%d", round), &streaming.LogOptions{Retention: -1})
		var want []streaming.Event
		for range r.IntN(60) {
			var e streaming.Event
			var err error
			if r.IntN(6) == 0 {
				e, err = l.Append(streaming.Delta{ToolCall: &streaming.ToolCallDelta{Index: r.IntN(3), ID: "call_1", Name: "f", Arguments: texts[r.IntN(len(texts))]}})
			} else {
				e, err = l.AppendText(texts[r.IntN(len(texts))] + texts[r.IntN(len(texts))])
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, e)
		}
		var final streaming.Event
		var err error
		if round%4 == 3 {
			final, err = l.Fail("upstream_error", "the model failed")
		} else {
			final, err = l.Finish(streaming.Done{Turn: []byte(`{"id":7}`), FinishReason: "stop"})
		}
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, final)
		for after := int64(0); after <= int64(len(want)); after++ {
			got, err := l.Events(after)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want)-int(after) {
				t.Fatalf("round %d, Events(%d): %d events, want %d", round, after, len(got), len(want)-int(after))
			}
			for i, g := range got {
				w := want[int(after)+i]
				if g.Offset != w.Offset || g.Type != w.Type || g.Generation != w.Generation || string(g.Data) != string(w.Data) {
					t.Fatalf("round %d, Events(%d)[%d] = %+v %s, appended as %+v %s", round, after, i, g, g.Data, w, w.Data)
				}
			}
		}
		// A viewer resuming the finished generation gets the same bytes.
		after := r.Int64N(int64(len(want)) + 1)
		sink := &recSink{}
		v := streaming.NewViewer(sink, nil)
		if err := l.Subscribe(v, after); err != nil {
			t.Fatal(err)
		}
		var expect [][]byte
		for _, e := range want[after:] {
			expect = append(expect, e.Data)
		}
		checkFor(t, "the resumed viewer's messages", func() bool { return sink.count() >= len(expect) })
		frames, _ := sink.snapshot()
		if len(frames) != len(expect) {
			t.Fatalf("round %d: resumed viewer got %d messages, want %d", round, len(frames), len(expect))
		}
		for i := range frames {
			if string(frames[i]) != string(expect[i]) {
				t.Fatalf("round %d: resumed message %d = %s, want %s", round, i, frames[i], expect[i])
			}
		}
		v.Close()
	}
}

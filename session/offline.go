package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// OfflineModelName is the name the offline model is registered under.
const OfflineModelName = "offline"

// DefaultOfflineTPS is the offline model's pace in words per second: about
// what a hosted model streams, so that demos and load tests look real.
const DefaultOfflineTPS = 30

// Limits of the offline model's commands.
const (
	maxOfflineWords = 1_000_000 // largest N of /words
	maxOfflineQuote = 200       // runes of a message or tool result quoted back
	maxOfflineCode  = 64        // bytes of a /fail code
)

// OfflineModel is the built-in model that needs no endpoint: a fresh install
// works with no key, and demos, tests and load tests get deterministic,
// scriptable output. The same request always gives the same deltas.
//
// It streams one word per delta (the word with the whitespace that follows
// it, so the deltas concatenate to the reply byte for byte) at TPS deltas per
// second, and reports usage: prompt tokens are [EstimateTokens] summed over
// the messages, completion tokens the number of deltas. With
// ModelRequest.MaxTokens > 0 it stops after that many deltas with finish
// reason "length".
//
// When the newest message is a tool result (role tool), it replies
// "Tool result received: " and the first 200 characters of that result, so
// that an agent loop ends. Otherwise it reads the last user message; a
// command must start the message (after leading whitespace), followed by one
// space or newline:
//
//	/say TEXT        replies exactly TEXT, whitespace and newlines included
//	/words N         replies "1 2 3 … N", for N from 1 to 1,000,000
//	/tool NAME JSON  calls tool NAME with the JSON value as arguments ("{}"
//	                 when JSON is omitted); finish reason "tool_calls"
//	/fail CODE       streams nothing and fails with a *ModelError with Code
//	                 CODE (letters, digits, '_', '.', '-'; at most 64 bytes)
//
// A malformed command fails with Code "invalid_request". Anything else,
// including an unknown command, gets a short reply that says it is the
// offline model and quotes the message.
//
// It is safe for concurrent use; set TPS before the first Stream.
type OfflineModel struct {
	// TPS is the pace in deltas (words) per second; 0 (or less) streams as
	// fast as it can. The first delta is emitted at once.
	TPS float64
}

var _ Model = (*OfflineModel)(nil)

// NewOfflineModel returns an offline model streaming tps words per second
// (0: as fast as it can); pass DefaultOfflineTPS for the usual pace.
func NewOfflineModel(tps float64) *OfflineModel {
	return &OfflineModel{TPS: tps}
}

// Stream implements [Model]. A nil emit discards the deltas.
func (m *OfflineModel) Stream(ctx context.Context, req *ModelRequest, emit func(Delta) error) (*ModelResult, error) {
	if req == nil {
		req = &ModelRequest{}
	}
	if emit == nil {
		emit = func(Delta) error { return nil }
	}
	usage := Usage{PromptTokens: promptTokens(req.Messages)}
	deltas, finish, err := offlineReply(req.Messages)
	if err != nil {
		usage.TotalTokens = usage.PromptTokens
		return &ModelResult{Usage: &usage, FinishReason: FinishError}, err
	}
	return m.play(ctx, deltas, finish, req.MaxTokens, usage, emit)
}

// play emits deltas at the model's pace and assembles the result.
func (m *OfflineModel) play(ctx context.Context, deltas iter.Seq[Delta], finish string, maxTokens int, usage Usage, emit func(Delta) error) (*ModelResult, error) {
	var b ResultBuilder
	result := func(reason string) *ModelResult {
		r := b.Result()
		usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
		u := usage
		r.Usage = &u
		r.FinishReason = reason
		return r
	}
	var tick <-chan time.Time
	if iv := m.interval(); iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
	}
	for d := range deltas {
		if maxTokens > 0 && usage.CompletionTokens >= maxTokens {
			return result(FinishLength), nil
		}
		if tick != nil && usage.CompletionTokens > 0 {
			select {
			case <-ctx.Done():
			case <-tick:
			}
		}
		if err := ctx.Err(); err != nil {
			return result(FinishCancelled), err
		}
		if err := b.Add(d); err != nil {
			// Unreachable: offlineReply numbers its one tool call 0.
			return result(FinishError), fmt.Errorf("offline model: %w", err)
		}
		usage.CompletionTokens++
		if err := emit(d); err != nil {
			return result(FinishError), err
		}
	}
	return result(finish), nil
}

// interval is the time between two deltas, 0 for no pacing.
func (m *OfflineModel) interval() time.Duration {
	if !(m.TPS > 0) { // also catches NaN
		return 0
	}
	return time.Duration(float64(time.Second) / m.TPS) // +Inf gives 0
}

// offlineReply decides what the offline model answers to msgs: the deltas to
// stream and the finish reason, or a *ModelError.
func offlineReply(msgs []Message) (iter.Seq[Delta], string, error) {
	if n := len(msgs); n > 0 && msgs[n-1].Role == "tool" {
		return textDeltas("Tool result received: " + truncateRunes(msgs[n-1].Text(), maxOfflineQuote)), FinishStop, nil
	}
	var said string
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			said = msgs[i].Text()
			break
		}
	}
	cmd, arg := splitCommand(said)
	switch cmd {
	case "/say":
		return textDeltas(arg), FinishStop, nil
	case "/words":
		n, err := strconv.Atoi(strings.TrimSpace(arg))
		if err != nil || n < 1 || n > maxOfflineWords {
			return nil, "", invalidOffline("/words needs a whole number from 1 to %d, got %q", maxOfflineWords, truncateRunes(arg, maxOfflineQuote))
		}
		return countDeltas(n), FinishStop, nil
	case "/tool":
		name, args := cutSpace(strings.TrimSpace(arg))
		args = strings.TrimSpace(args)
		if name == "" {
			return nil, "", invalidOffline("usage: /tool NAME JSON")
		}
		if args == "" {
			args = "{}"
		}
		if !json.Valid([]byte(args)) {
			return nil, "", invalidOffline("/tool %s: arguments are not valid JSON", truncateRunes(name, maxOfflineQuote))
		}
		return toolDeltas(callID(len(msgs), name, args), name, args), FinishToolCalls, nil
	case "/fail":
		code := strings.TrimSpace(arg)
		if !validCode(code) {
			return nil, "", invalidOffline("usage: /fail CODE, where CODE is 1 to %d letters, digits, '_', '.' or '-'", maxOfflineCode)
		}
		return nil, "", &ModelError{Code: code, Message: "the offline model was asked to fail with " + code}
	}
	reply := `This is sessiond's offline model (no model endpoint is configured). You said: "` + truncateRunes(said, maxOfflineQuote) + `"`
	return textDeltas(reply), FinishStop, nil
}

// splitCommand splits "/cmd ARG" into "/cmd" and ARG, which starts after the
// one whitespace byte that ends the command word and is kept verbatim. It
// returns "" for a message that does not start with '/' after leading
// whitespace.
func splitCommand(s string) (cmd, arg string) {
	s = strings.TrimLeft(s, " \t\r\n\v\f")
	if !strings.HasPrefix(s, "/") {
		return "", ""
	}
	cmd, rest := cutSpace(s)
	if rest != "" {
		rest = rest[1:]
	}
	return cmd, rest
}

// cutSpace cuts s before its first whitespace byte: the word, and the rest
// starting with that whitespace ("" when there is none).
func cutSpace(s string) (word, rest string) {
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			return s[:i], s[i:]
		}
	}
	return s, ""
}

func invalidOffline(format string, args ...any) error {
	return &ModelError{Code: CodeInvalidRequest, Message: "offline model: " + fmt.Sprintf(format, args...)}
}

func validCode(code string) bool {
	if code == "" || len(code) > maxOfflineCode {
		return false
	}
	for _, c := range []byte(code) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// textDeltas splits s into words, each with the whitespace that follows it;
// leading whitespace goes with the first word. The pieces concatenate to s.
func textDeltas(s string) iter.Seq[Delta] {
	return func(yield func(Delta) bool) {
		start, i := 0, 0
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) { // only whitespace, or empty
			if s != "" {
				yield(Delta{Text: s})
			}
			return
		}
		for i < len(s) {
			for i < len(s) && !isSpace(s[i]) {
				i++
			}
			for i < len(s) && isSpace(s[i]) {
				i++
			}
			if !yield(Delta{Text: s[start:i]}) {
				return
			}
			start = i
		}
	}
}

// countDeltas yields "1 ", "2 ", …, "n".
func countDeltas(n int) iter.Seq[Delta] {
	return func(yield func(Delta) bool) {
		for i := 1; i <= n; i++ {
			w := strconv.Itoa(i)
			if i < n {
				w += " "
			}
			if !yield(Delta{Text: w}) {
				return
			}
		}
	}
}

// toolDeltas yields one tool call as a real provider streams it: ID and name
// first, then the arguments in three pieces cut at rune boundaries.
func toolDeltas(id, name, args string) iter.Seq[Delta] {
	return func(yield func(Delta) bool) {
		if !yield(Delta{ToolCall: &ToolCallDelta{Index: 0, ID: id, Name: name}}) {
			return
		}
		const pieces = 3
		start := 0
		for k := 1; k <= pieces && start < len(args); k++ {
			end := len(args) * k / pieces
			for end < len(args) && !utf8.RuneStart(args[end]) {
				end++
			}
			if end <= start {
				continue
			}
			if !yield(Delta{ToolCall: &ToolCallDelta{Index: 0, Arguments: args[start:end]}}) {
				return
			}
			start = end
		}
	}
}

// callID derives a tool call ID from the call's position in the conversation
// and its content, so that replays agree and two calls of one session differ.
func callID(position int, name, args string) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(position) + "\x00" + name + "\x00" + args))
	return "call_" + hex.EncodeToString(sum[:12])
}

// truncateRunes returns s cut to at most n runes, with "…" when cut.
func truncateRunes(s string, n int) string {
	i := 0
	for j := range s {
		if i == n {
			return s[:j] + "…"
		}
		i++
	}
	return s
}

// promptTokens estimates the prompt size of msgs.
func promptTokens(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		n += EstimateTokens(m.Text())
		for _, tc := range m.ToolCalls {
			n += EstimateTokens(tc.Function.Name) + EstimateTokens(tc.Function.Arguments)
		}
	}
	return n
}

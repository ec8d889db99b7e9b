package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	goopenai "github.com/sashabaranov/go-openai"

	"sessiond/session"
)

// Defaults of Config.
const (
	// DefaultBaseURL is OpenAI's API root.
	DefaultBaseURL = "https://api.openai.com/v1"
	// DefaultTimeout bounds one whole Stream call, retries included: none
	// (0). A stalled stream ends at FirstTokenTimeout or IdleTimeout, an
	// endless one at the session's turn size limit; a model that writes
	// for longer than any fixed bound (a slow local model, a long
	// reasoning run) is not cut while it writes.
	DefaultTimeout = 0
	// DefaultFirstTokenTimeout is how long an attempt may wait for the first
	// chunk of the stream.
	DefaultFirstTokenTimeout = 60 * time.Second
	// DefaultIdleTimeout is the longest pause between two chunks.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxRetries is how many times a failed request is retried.
	DefaultMaxRetries = 3
	// DefaultRetryBackoff is the wait before the first retry.
	DefaultRetryBackoff = 500 * time.Millisecond
)

const (
	// maxBackoff caps the exponential backoff between two attempts.
	maxBackoff = 30 * time.Second
	// maxRetryAfter is the longest Retry-After the adapter waits out; a
	// longer one fails the request at once, as the caller is better told.
	maxRetryAfter = time.Minute
	// maxErrorBody is how much of an error body, or of an error's message,
	// goes into a turn's error message.
	maxErrorBody = 512
	// maxErrorRead is how much of an error answer's body is read.
	maxErrorRead = 64 << 10
)

// Log attribute keys.
const (
	keyCode    = "code"
	keyStatus  = "status"
	keyAttempt = "attempt"
	keyBackoff = "backoff"
	keyError   = "error"
	keyModel   = "model"
)

// Config configures a Model. Zero values mean the documented defaults.
type Config struct {
	// BaseURL is the API root, the part before /chat/completions, e.g.
	// "http://localhost:11434/v1" for Ollama or "http://localhost:8000/v1"
	// for vLLM. Default DefaultBaseURL.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer APIKEY". Empty sends no
	// Authorization header, as local servers need none.
	APIKey string
	// Model is the upstream model name. When empty, ModelRequest.Model is
	// sent instead; a request with neither fails with "invalid_request".
	Model string
	// Headers are added to every request, replacing a header of the same
	// name set by the client (Authorization included).
	Headers map[string]string
	// Timeout bounds one whole Stream call, retries and backoff included.
	// Default DefaultTimeout (none); negative also means none.
	Timeout time.Duration
	// FirstTokenTimeout is how long one attempt waits for the first chunk of
	// the stream (response headers included). Then the attempt fails with
	// "upstream_timeout" and is retried. Default DefaultFirstTokenTimeout
	// (60 s); negative means no limit. Reasoning models that think for long
	// before their first chunk need more.
	FirstTokenTimeout time.Duration
	// IdleTimeout is the longest pause between two chunks; a longer stall
	// fails the stream with "upstream_timeout" (retried only if nothing was
	// emitted yet). Only data chunks count: a pause filled with SSE comments
	// (keep-alives) is a stall. Default DefaultIdleTimeout (60 s); negative
	// means no limit.
	IdleTimeout time.Duration
	// MaxRetries is how many times a request that failed with 429, 5xx, a
	// timeout or a connection error is retried, only ever before the first
	// delta was emitted. Default DefaultMaxRetries (3); negative means none.
	MaxRetries int
	// RetryBackoff is the wait before the first retry; it doubles for every
	// further retry (capped at 30 s), with random jitter of up to half. A
	// longer Retry-After of the answer retried (a 429, a 503, any status
	// that is retried) is waited for instead, up to a minute; a longer one
	// fails the request at once. Default DefaultRetryBackoff (500 ms);
	// negative means no wait.
	RetryBackoff time.Duration
	// HTTPClient sends the requests; default a new http.Client using
	// http.DefaultTransport. It is copied, not modified. Its own Timeout
	// should be 0: it would cut long streams, which Timeout and IdleTimeout
	// bound instead.
	HTTPClient *http.Client
	// Logger receives a warning for every retry. Default slog.Default().
	Logger *slog.Logger
}

// Model is a session.Model backed by an OpenAI-compatible chat completions
// endpoint (OpenAI, vLLM, Ollama, llama.cpp, LM Studio, …). It is safe for
// concurrent use; it holds no state between calls but idle connections.
type Model struct {
	client     *goopenai.Client
	model      string
	timeout    time.Duration // 0: none
	firstToken time.Duration // 0: none
	idle       time.Duration // 0: none
	maxRetries int
	backoff    time.Duration
	logger     *slog.Logger
}

var _ session.Model = (*Model)(nil)

// New returns a Model for cfg. It checks cfg but does not contact the
// endpoint.
func New(cfg Config) (*Model, error) {
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("new openai model: base url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("new openai model: base url %q is not an absolute http(s) url", base)
	}
	headers := make(http.Header, len(cfg.Headers))
	for k, v := range cfg.Headers {
		if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("new openai model: invalid header %q", k)
		}
		headers.Set(k, v)
	}

	hc := new(http.Client)
	if cfg.HTTPClient != nil {
		*hc = *cfg.HTTPClient
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = &transport{base: rt, headers: headers}

	occ := goopenai.DefaultConfig(cfg.APIKey)
	occ.BaseURL = strings.TrimRight(base, "/")
	occ.HTTPClient = hc
	// The filter (sseFilter) bounds the lines without data by their
	// bytes, as docs/models.md says; go-openai's own bound, 300 of them
	// between two chunks (a few KiB), failed streams well inside it.
	occ.EmptyMessagesLimit = 1 << 20

	m := &Model{
		client:     goopenai.NewClientWithConfig(occ),
		model:      cfg.Model,
		timeout:    orDefault(cfg.Timeout, DefaultTimeout),
		firstToken: orDefault(cfg.FirstTokenTimeout, DefaultFirstTokenTimeout),
		idle:       orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		maxRetries: cfg.MaxRetries,
		backoff:    orDefault(cfg.RetryBackoff, DefaultRetryBackoff),
		logger:     cfg.Logger,
	}
	switch {
	case m.maxRetries == 0:
		m.maxRetries = DefaultMaxRetries
	case m.maxRetries < 0:
		m.maxRetries = 0
	}
	if m.logger == nil {
		m.logger = slog.Default()
	}
	return m, nil
}

// orDefault maps 0 to def and a negative d to 0 (none).
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range []byte(k) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Causes of an attempt's cancellation by its watchdog, and of the end of the
// whole call.
var (
	errFirstToken = errors.New("no first chunk within the first token timeout")
	errIdle       = errors.New("stream stalled for longer than the idle timeout")
	errTail       = errors.New("stream stalled after the model finished")
	errTimeout    = errors.New("request took longer than the timeout")
)

// Stream implements session.Model. Errors from the endpoint are
// *session.ModelError; when ctx is cancelled it returns ctx.Err() with the
// partial result; an error of emit is returned as is.
func (m *Model) Stream(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
	if req == nil {
		req = &session.ModelRequest{}
	}
	if emit == nil {
		emit = func(session.Delta) error { return nil }
	}
	creq, err := m.request(req)
	if err != nil {
		return &session.ModelResult{FinishReason: session.FinishError}, err
	}
	callCtx := ctx
	if m.timeout > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeoutCause(ctx, m.timeout, errTimeout)
		defer cancel()
	}
	timedOut := func() error {
		return &session.ModelError{Code: session.CodeUpstreamTimeout, Message: fmt.Sprintf("%v (%v)", errTimeout, m.timeout)}
	}
	for attempt := 0; ; attempt++ {
		st := newStreamState()
		err := m.attempt(callCtx, creq, st, emit)
		switch {
		case err == nil:
			return st.result(st.finishReason()), nil
		case ctx.Err() != nil:
			return st.result(session.FinishCancelled), ctx.Err()
		case st.emitErr:
			return st.result(session.FinishError), err
		case callCtx.Err() != nil:
			return st.result(session.FinishError), timedOut()
		}
		merr, ok := err.(*session.ModelError)
		if !ok || st.emitted || !merr.Retryable || attempt >= m.maxRetries {
			return st.result(session.FinishError), err
		}
		wait := m.backoffFor(attempt)
		if st.retryAfter > wait {
			wait = st.retryAfter
		}
		if st.retryAfter > maxRetryAfter {
			return st.result(session.FinishError), err
		}
		if dl, ok := callCtx.Deadline(); ok && time.Until(dl) < wait {
			return st.result(session.FinishError), err
		}
		m.logger.LogAttrs(ctx, slog.LevelWarn, "model request failed, retrying",
			slog.String(keyModel, creq.Model), slog.String(keyCode, merr.Code),
			slog.Int(keyStatus, merr.Status), slog.Int(keyAttempt, attempt+1),
			slog.Duration(keyBackoff, wait), slog.String(keyError, merr.Message))
		if err := waitFor(callCtx, wait); err != nil {
			if ctx.Err() != nil {
				return st.result(session.FinishCancelled), ctx.Err()
			}
			return st.result(session.FinishError), timedOut()
		}
	}
}

// backoffFor returns the wait before retry number attempt+1: RetryBackoff
// doubled attempt times, capped, with up to half of it taken off at random so
// that many clients do not retry in step.
func (m *Model) backoffFor(attempt int) time.Duration {
	d := m.backoff
	for i := 0; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	return d - rand.N(d/2+1)
}

// waitFor waits d or until ctx is done, whichever is first.
func waitFor(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// attempt runs one HTTP request and reads its stream into st. It returns nil
// at the end of the stream, the error of emit (st.emitErr set), or a
// *session.ModelError; the caller checks its contexts first, as their
// cancellation surfaces here as any kind of error.
func (m *Model) attempt(ctx context.Context, creq goopenai.ChatCompletionRequest, st *streamState, emit func(session.Delta) error) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	actx = context.WithValue(actx, retryAfterKey{}, &st.retryAfter)
	actx = context.WithValue(actx, doneKey{}, &st.done)

	// The watchdog cancels the attempt when the next chunk is late: the
	// first within firstToken, every later one within idle.
	var watchdog *time.Timer
	arm := func(d time.Duration, cause error) {
		if watchdog != nil {
			watchdog.Stop()
		}
		watchdog = nil
		if d > 0 {
			watchdog = time.AfterFunc(d, func() { cancel(cause) })
		}
	}
	defer func() { arm(0, nil) }()
	arm(m.firstToken, errFirstToken)

	stream, err := m.client.CreateChatCompletionStream(actx, creq)
	if err != nil {
		return classify(actx, err, true)
	}
	defer stream.Close()
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return st.end()
		}
		if err != nil {
			if st.finish != "" && brokenTail(actx, err) {
				// The model had finished (finish_reason): only the usage
				// chunk or [DONE] was missing. The answer stands.
				return nil
			}
			return classify(actx, err, false)
		}
		if err := st.add(chunk, emit); err != nil {
			return err
		}
		if st.finish != "" {
			arm(min(m.idle, tailTimeout), errTail)
		} else {
			arm(m.idle, errIdle)
		}
	}
}

// tailTimeout bounds the wait, after the chunk with a finish reason, for
// what may follow it (the usage chunk, [DONE]).
const tailTimeout = 5 * time.Second

// brokenTail reports whether err, from reading a stream after its finish
// reason, is the stream breaking off (a reset, a stall) rather than the
// upstream's own error.
func brokenTail(actx context.Context, err error) bool {
	if c := context.Cause(actx); c == errTail || c == errIdle {
		return true
	}
	var apiErr *goopenai.APIError
	var reqErr *goopenai.RequestError
	return actx.Err() == nil && !errors.As(err, &apiErr) && !errors.As(err, &reqErr) && !errors.Is(err, errStreamLine)
}

// classify turns an error of the client into a *session.ModelError.
// connecting tells whether it came from sending the request rather than from
// reading the stream.
func classify(actx context.Context, err error, connecting bool) error {
	switch cause := context.Cause(actx); cause {
	case errFirstToken, errIdle:
		return &session.ModelError{Code: session.CodeUpstreamTimeout, Message: cause.Error(), Retryable: true}
	}
	var reqErr *goopenai.RequestError
	if errors.As(err, &reqErr) {
		return statusError(reqErr.HTTPStatusCode, truncateMessage(string(reqErr.Body)), nil)
	}
	var apiErr *goopenai.APIError
	if errors.As(err, &apiErr) {
		if apiErr.HTTPStatusCode == 0 {
			// An error event in the stream after a 200 answer.
			return &session.ModelError{Code: session.CodeUpstreamError, Message: upstreamMessage(apiErr)}
		}
		return statusError(apiErr.HTTPStatusCode, upstreamMessage(apiErr), apiErr.Code)
	}
	var urlErr *url.Error
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &urlErr):
		// The request did not get an answer: refused, reset, DNS, TLS, …
		return &session.ModelError{Code: session.CodeUpstreamError, Message: "connect to upstream: " + urlErr.Err.Error(), Retryable: true}
	case errors.As(err, &syntaxErr), errors.As(err, &typeErr):
		return &session.ModelError{Code: session.CodeUpstreamError, Message: "malformed stream chunk: " + err.Error()}
	case errors.Is(err, errStreamLine):
		return &session.ModelError{Code: session.CodeUpstreamError, Message: "malformed " + err.Error()}
	case errors.Is(err, goopenai.ErrTooManyEmptyStreamMessages):
		return &session.ModelError{Code: session.CodeUpstreamError, Message: "stream sent too many lines without data"}
	case connecting:
		// Refused by the client before sending: unsupported model, invalid
		// parameters for a reasoning model, …
		return &session.ModelError{Code: session.CodeInvalidRequest, Message: err.Error()}
	default:
		// Reading the stream broke: connection reset, truncated body, …
		return &session.ModelError{Code: session.CodeUpstreamError, Message: "read stream: " + err.Error(), Retryable: true}
	}
}

// truncateMessage cuts an upstream's message to maxErrorBody bytes, on a
// rune boundary, marking the cut with "…".
func truncateMessage(msg string) string {
	if len(msg) <= maxErrorBody {
		return msg
	}
	cut := maxErrorBody
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

// upstreamMessage is the human part of an API error.
func upstreamMessage(e *goopenai.APIError) string {
	if e.Message != "" {
		return truncateMessage(e.Message)
	}
	if e.Type != "" {
		return e.Type
	}
	return "upstream error"
}

// statusError maps an HTTP error answer to a ModelError.
func statusError(status int, msg string, code any) *session.ModelError {
	if msg == "" {
		msg = http.StatusText(status)
	}
	e := &session.ModelError{Code: session.CodeUpstreamError, Message: msg, Status: status}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Code = session.CodeUpstreamUnauthorized
	case status == http.StatusTooManyRequests:
		e.Code = session.CodeUpstreamRateLimited
		// An exhausted quota does not come back by waiting a second.
		e.Retryable = code != "insufficient_quota"
	case (status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge || status == http.StatusUnprocessableEntity) &&
		(code == session.CodeContextLengthExceeded || isContextLength(msg)):
		e.Code = session.CodeContextLengthExceeded
	case status == http.StatusRequestTimeout || status == http.StatusGatewayTimeout:
		e.Code = session.CodeUpstreamTimeout
		e.Retryable = true
	case status >= 500:
		e.Retryable = true
	}
	return e
}

// isContextLength recognises the context window errors of OpenAI, vLLM,
// llama.cpp and the like by their messages.
func isContextLength(msg string) bool {
	msg = strings.ToLower(msg)
	for _, s := range []string{
		"context_length_exceeded", "maximum context length", "context length",
		"context window", "context size", "exceed_context_size", "too many tokens",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// request maps req to the wire request.
func (m *Model) request(req *session.ModelRequest) (goopenai.ChatCompletionRequest, error) {
	invalid := func(format string, args ...any) error {
		return &session.ModelError{Code: session.CodeInvalidRequest, Message: fmt.Sprintf(format, args...)}
	}
	model := m.model
	if model == "" {
		model = req.Model
	}
	if model == "" {
		return goopenai.ChatCompletionRequest{}, invalid("no upstream model name: set Config.Model or ModelRequest.Model")
	}
	creq := goopenai.ChatCompletionRequest{
		Model:         model,
		Messages:      make([]goopenai.ChatCompletionMessage, 0, len(req.Messages)),
		StreamOptions: &goopenai.StreamOptions{IncludeUsage: true},
	}
	for i, msg := range req.Messages {
		om := goopenai.ChatCompletionMessage{Role: msg.Role, ToolCallID: msg.ToolCallID, Content: msg.Content}
		if p := msg.Parts; len(p) > 0 && string(p) != "null" {
			var parts []goopenai.ChatMessagePart
			if err := json.Unmarshal(p, &parts); err != nil {
				return goopenai.ChatCompletionRequest{}, invalid("message %d: parts are not a content parts array: %v", i, err)
			}
			if len(parts) > 0 {
				om.Content, om.MultiContent = "", parts
			}
		}
		for _, tc := range msg.ToolCalls {
			typ := goopenai.ToolType(tc.Type)
			if typ == "" {
				typ = goopenai.ToolTypeFunction
			}
			om.ToolCalls = append(om.ToolCalls, goopenai.ToolCall{
				ID:       tc.ID,
				Type:     typ,
				Function: goopenai.FunctionCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments},
			})
		}
		creq.Messages = append(creq.Messages, om)
	}
	for _, t := range req.Tools {
		params := t.Parameters
		if len(params) == 0 {
			params = json.RawMessage(`{"type":"object","properties":{}}`)
		} else if !json.Valid(params) {
			return goopenai.ChatCompletionRequest{}, invalid("tool %q: parameters are not valid JSON", t.Name)
		}
		creq.Tools = append(creq.Tools, goopenai.Tool{
			Type:     goopenai.ToolTypeFunction,
			Function: &goopenai.FunctionDefinition{Name: t.Name, Description: t.Description, Parameters: params},
		})
	}
	if req.MaxTokens > 0 {
		if reasoningModel(model) {
			// These models refuse max_tokens; other servers may not know
			// max_completion_tokens yet.
			creq.MaxCompletionTokens = req.MaxTokens
		} else {
			creq.MaxTokens = req.MaxTokens
		}
	}
	return creq, nil
}

func reasoningModel(model string) bool {
	for _, p := range []string{"o1", "o3", "o4", "gpt-5", "gpt-6"} {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

// streamState is what one attempt has read so far.
type streamState struct {
	b          session.ResultBuilder
	index      map[int]int    // upstream tool call index → ours
	ids        []string       // ID of each of our tool calls, for chunks without index
	usage      *session.Usage // nil until a chunk carries usage
	finish     goopenai.FinishReason
	chunks     int
	emitted    bool
	emitErr    bool
	retryAfter time.Duration // of an error answer, set by the transport
	done       bool          // the body had a "data: [DONE]" line (see sseFilter)
}

func newStreamState() *streamState {
	return &streamState{index: make(map[int]int)}
}

// add takes in one chunk, emitting its deltas.
func (st *streamState) add(c goopenai.ChatCompletionStreamResponse, emit func(session.Delta) error) error {
	st.chunks++
	if u := c.Usage; u != nil {
		st.usage = &session.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
		if st.usage.TotalTokens == 0 {
			st.usage.TotalTokens = u.PromptTokens + u.CompletionTokens
		}
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 { // we never ask for n > 1
			continue
		}
		if ch.FinishReason != "" && ch.FinishReason != goopenai.FinishReasonNull {
			st.finish = ch.FinishReason
		}
		for _, text := range []string{ch.Delta.Refusal, ch.Delta.Content} {
			if text != "" {
				if err := st.emit(session.Delta{Text: text}, emit); err != nil {
					return err
				}
			}
		}
		for _, tc := range ch.Delta.ToolCalls {
			i, isNew := st.toolIndex(tc)
			if !isNew && tc.ID == "" && tc.Function.Name == "" && tc.Function.Arguments == "" {
				continue
			}
			d := &session.ToolCallDelta{Index: i, ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments}
			if err := st.emit(session.Delta{ToolCall: d}, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// toolIndex maps the index of a tool call part to ours, which counts calls
// from 0 in order of first appearance. A part starts a new call when its
// index is new, or when it carries a new ID (at a known index, or without
// index: some servers send whole calls), unless the call there has none
// yet: an id that comes after the call's first part is that call's.
func (st *streamState) toolIndex(tc goopenai.ToolCall) (i int, isNew bool) {
	same := func(i int) bool {
		if tc.ID == "" || tc.ID == st.ids[i] {
			return true
		}
		if st.ids[i] == "" {
			st.ids[i] = tc.ID
			return true
		}
		return false
	}
	if tc.Index != nil {
		// A new id at a known index is a new call: some servers send every
		// call at index 0.
		if i, ok := st.index[*tc.Index]; ok && same(i) {
			return i, false
		}
		i = len(st.ids)
		st.index[*tc.Index] = i
		st.ids = append(st.ids, tc.ID)
		return i, true
	}
	if n := len(st.ids); n > 0 && same(n-1) {
		return n - 1, false
	}
	st.ids = append(st.ids, tc.ID)
	return len(st.ids) - 1, true
}

func (st *streamState) emit(d session.Delta, emit func(session.Delta) error) error {
	if err := st.b.Add(d); err != nil {
		return &session.ModelError{Code: session.CodeUpstreamError, Message: err.Error()} // unreachable: toolIndex keeps indexes dense
	}
	st.emitted = true
	if err := emit(d); err != nil {
		st.emitErr = true
		return err
	}
	return nil
}

// end checks the stream that ended cleanly: go-openai reports the end of
// the body as it reports [DONE]. A stream with neither [DONE] nor a finish
// reason was cut off (a proxy in front of a model server that died closes
// its answer cleanly): a failure, retried if nothing was emitted yet.
func (st *streamState) end() error {
	if st.chunks == 0 {
		return &session.ModelError{Code: session.CodeUpstreamError, Message: "stream ended without any chunk"}
	}
	if !st.done && st.finish == "" {
		return &session.ModelError{Code: session.CodeUpstreamError, Retryable: true,
			Message: "the stream ended before the model finished (no [DONE], no finish_reason)"}
	}
	return nil
}

// finishReason maps the upstream finish reason to one of session's.
func (st *streamState) finishReason() string {
	switch st.finish {
	case goopenai.FinishReasonLength:
		return session.FinishLength
	case goopenai.FinishReasonContentFilter:
		return session.FinishContentFilter
	case goopenai.FinishReasonToolCalls, goopenai.FinishReasonFunctionCall:
		return session.FinishToolCalls
	}
	// "stop", none, or a server's own ("eos", …). Some servers say "stop"
	// after tool calls; the agent loop needs to know there are calls to run.
	if len(st.ids) > 0 {
		return session.FinishToolCalls
	}
	return session.FinishStop
}

func (st *streamState) result(reason string) *session.ModelResult {
	r := st.b.Result()
	r.Usage = st.usage
	r.FinishReason = reason
	return r
}

// transport adds the configured headers to every request and notes the
// Retry-After of an error answer for the attempt that sent it.
type transport struct {
	base    http.RoundTripper
	headers http.Header
}

type retryAfterKey struct{}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(t.headers) > 0 {
		req = req.Clone(req.Context()) // a RoundTripper must not modify its request
		for k, v := range t.headers {
			req.Header[k] = v
		}
	}
	resp, err := t.base.RoundTrip(req)
	if p, ok := req.Context().Value(doneKey{}).(*bool); ok && err == nil && resp.StatusCode == http.StatusOK {
		resp.Body = newSSEFilter(resp.Body, p)
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		// An error answer is read whole to be decoded: bound it (a proxy's
		// endless HTML page). A cut body is reported as text, truncated.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxErrorRead), resp.Body}
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		// Any error answer may say when to come back (a 429, a 503 of a
		// server that is overloaded or still loading its model); Stream
		// waits for it only if it retries the answer's status.
		if p, ok := req.Context().Value(retryAfterKey{}).(*time.Duration); ok {
			*p = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	}
	return resp, err
}

// doneKey carries the *bool the body's filter sets at "data: [DONE]"
// (go-openai reads the body in Recv, on the goroutine that reads it).
type doneKey struct{}

// parseRetryAfter reads a Retry-After value, seconds or an HTTP date; 0 when
// absent or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"sessiond/session"
)

// Client talks to one sessiond.
type Client struct {
	// BaseURL is sessiond's address, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// APIKey is sent as a Bearer token when set.
	APIKey string
	// HTTP defaults to http.DefaultClient. Streams need no timeout on it.
	HTTP *http.Client
}

// New returns a client of the sessiond at baseURL.
func New(baseURL, apiKey string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey}
}

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("sessiond: %d %s: %s", e.Status, e.Code, e.Message)
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// url is BaseURL with path: a BaseURL set with a trailing slash (as New
// trims) must not make every path "//v1/…", which the server does not know.
func (c *Client) url(path string) string {
	return strings.TrimRight(c.BaseURL, "/") + path
}

func (c *Client) request(ctx context.Context, method, path string, body any, hdr http.Header) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header[k] = v
	}
	return c.send(req)
}

// send sends req with the API key and turns an error answer into *Error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(raw, &e)
		if e.Error.Code == "" {
			e.Error.Code, e.Error.Message = "http_error", strings.TrimSpace(string(raw))
		}
		return nil, &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.request(ctx, method, path, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// CreateSession creates a session. req.IdempotencyKey, when set, is sent
// as Idempotency-Key: a retry with it returns the session the first made.
func (c *Client) CreateSession(ctx context.Context, req session.CreateRequest) (*session.Session, error) {
	return c.create(ctx, "/v1/sessions", req, req.IdempotencyKey)
}

// create posts body to path, with idemKey as Idempotency-Key when set, and
// decodes the session answered.
func (c *Client) create(ctx context.Context, path string, body any, idemKey string) (*session.Session, error) {
	hdr := http.Header{}
	if idemKey != "" {
		hdr.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.request(ctx, "POST", path, body, hdr)
	if err != nil {
		return nil, err
	}
	return decodeSession(resp, path)
}

// decodeSession decodes the session a POST to path answered, and closes
// the answer's body.
func decodeSession(resp *http.Response, path string) (*session.Session, error) {
	defer resp.Body.Close()
	var s session.Session
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("POST %s: decode answer: %w", path, err)
	}
	return &s, nil
}

// Session returns a session.
func (c *Client) Session(ctx context.Context, id string) (*session.Session, error) {
	var s session.Session
	return &s, c.do(ctx, "GET", "/v1/sessions/"+url.PathEscape(id), nil, &s)
}

// UpdateSession changes a session.
func (c *Client) UpdateSession(ctx context.Context, id string, req session.UpdateRequest) (*session.Session, error) {
	var s session.Session
	return &s, c.do(ctx, "PATCH", "/v1/sessions/"+url.PathEscape(id), req, &s)
}

// DeleteSession deletes a session.
func (c *Client) DeleteSession(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/sessions/"+url.PathEscape(id), nil, nil)
}

// Sessions returns a page of the caller's sessions and the next cursor ("" at the end).
func (c *Client) Sessions(ctx context.Context, cursor string, limit int) ([]session.DirEntry, string, error) {
	var page struct {
		Sessions   []session.DirEntry `json:"sessions"`
		NextCursor *string            `json:"next_cursor"`
	}
	q := url.Values{}
	if limit > 0 { // 0: the server's default
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if err := c.do(ctx, "GET", "/v1/sessions?"+q.Encode(), nil, &page); err != nil {
		return nil, "", err
	}
	next := ""
	if page.NextCursor != nil {
		next = *page.NextCursor
	}
	return page.Sessions, next, nil
}

// Turns returns a page of turns (see session.TurnQuery and API.md).
func (c *Client) Turns(ctx context.Context, id string, q session.TurnQuery) ([]session.Turn, bool, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.After != nil {
		v.Set("after", strconv.FormatInt(*q.After, 10))
	}
	if q.Before != nil {
		v.Set("before", strconv.FormatInt(*q.Before, 10))
	}
	if q.Branch != 0 {
		v.Set("branch", strconv.FormatInt(q.Branch, 10))
	}
	var page struct {
		Turns   []session.Turn `json:"turns"`
		HasMore bool           `json:"has_more"`
	}
	err := c.do(ctx, "GET", "/v1/sessions/"+url.PathEscape(id)+"/turns?"+v.Encode(), nil, &page)
	return page.Turns, page.HasMore, err
}

// Post appends turns and, with req.Generate, starts a generation.
// req.IdempotencyKey, when set, is sent as Idempotency-Key.
func (c *Client) Post(ctx context.Context, id string, req session.PostRequest) (*session.PostResult, error) {
	hdr := http.Header{}
	if req.IdempotencyKey != "" {
		hdr.Set("Idempotency-Key", req.IdempotencyKey)
	}
	resp, err := c.request(ctx, "POST", "/v1/sessions/"+url.PathEscape(id)+"/turns", req, hdr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res session.PostResult
	return &res, json.NewDecoder(resp.Body).Decode(&res)
}

// Generation returns a generation's state.
func (c *Client) Generation(ctx context.Context, id, gid string) (*session.Generation, error) {
	var g session.Generation
	return &g, c.do(ctx, "GET", "/v1/sessions/"+url.PathEscape(id)+"/generations/"+url.PathEscape(gid), nil, &g)
}

// Cancel cancels a generation and returns its final state.
func (c *Client) Cancel(ctx context.Context, id, gid string) (*session.Generation, error) {
	var g session.Generation
	return &g, c.do(ctx, "POST", "/v1/sessions/"+url.PathEscape(id)+"/generations/"+url.PathEscape(gid)+"/cancel", nil, &g)
}

// Fork makes a new session holding a copy of id's history up to turnID
// (that turn's branch). idemKey, when set, is sent as Idempotency-Key: a
// retry with it returns the session the first made.
func (c *Client) Fork(ctx context.Context, id string, turnID int64, idemKey string) (*session.Session, error) {
	return c.create(ctx, "/v1/sessions/"+url.PathEscape(id)+"/fork", map[string]int64{"turn_id": turnID}, idemKey)
}

// Export writes session id as JSON lines (docs/api.md) to w. An error after
// the first bytes reached w leaves w holding an incomplete export.
func (c *Client) Export(ctx context.Context, id string, w io.Writer) error {
	path := "/v1/sessions/" + url.PathEscape(id) + "/export"
	resp, err := c.request(ctx, "GET", path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// Import makes a session of an export read from r (JSON lines, as Export
// writes). idemKey, when set, is sent as Idempotency-Key.
func (c *Client) Import(ctx context.Context, r io.Reader, idemKey string) (*session.Session, error) {
	const path = "/v1/sessions/import"
	req, err := http.NewRequestWithContext(ctx, "POST", c.url(path), r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return decodeSession(resp, path)
}

// Ticket returns a single-use ticket that opens session id's WebSocket
// (GET /v1/sessions/{id}/ws?ticket=…, where a browser cannot send the API
// key) and when it stops being good.
func (c *Client) Ticket(ctx context.Context, id string) (ticket string, expires time.Time, err error) {
	var t struct {
		Ticket    string    `json:"ticket"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := c.do(ctx, "POST", "/v1/tickets", map[string]string{"session_id": id}, &t); err != nil {
		return "", time.Time{}, err
	}
	return t.Ticket, t.ExpiresAt, nil
}

// Event is one event of a generation's stream (API.md): a delta, or the
// final done or error.
type Event struct {
	Type         string          `json:"type"` // delta | done | error | turn
	Generation   string          `json:"generation"`
	Offset       int64           `json:"offset"`
	Text         string          `json:"text"`
	ToolCall     json.RawMessage `json:"tool_call,omitempty"`
	Turn         *session.Turn   `json:"turn,omitempty"`
	FinishReason string          `json:"finish_reason,omitempty"`
	Usage        *session.Usage  `json:"usage,omitempty"` // of a done event
	Code         string          `json:"code,omitempty"`
	Message      string          `json:"message,omitempty"`
	// Error says why a generation ended other than done, when it is
	// known: a done event's "error", {"code": "superseded", …} for one
	// that ended before it started (Turn nil, FinishReason its status),
	// {"code": "deleted", …} for one its session's deletion cancelled.
	Error *session.ErrorInfo `json:"error,omitempty"`
}

// Follow streams generation gid after offset after, calling fn for each
// event in order, until the generation ends (done or error) or ctx ends.
// When the connection breaks it reconnects and resumes after the last
// offset it saw (Last-Event-ID), so fn sees every event exactly once: the
// "turn" event of a finished generation resumed (which has no offset)
// included, by its turn's id.
func (c *Client) Follow(ctx context.Context, id, gid string, after int64, fn func(Event) error) error {
	const firstBackoff = 100 * time.Millisecond
	backoff := firstBackoff
	turns := map[int64]bool{} // the turn events fn was given
	for {
		seen := after
		final, err := c.followOnce(ctx, id, gid, &after, turns, fn)
		if after > seen {
			backoff = firstBackoff // it got somewhere: the next break is a new one
		}
		if final || ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if err == nil {
			// The stream ended without a final event: the final event was
			// seen before a reconnect (the server has nothing after it),
			// or the connection broke cleanly.
			g, gerr := c.Generation(ctx, id, gid)
			if gerr == nil && g.Finished() && after >= g.Offset {
				return nil
			}
		}
		// 429: the owner holds its most streams open; one may close soon.
		var ae *Error
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *Client) followOnce(ctx context.Context, id, gid string, after *int64, turns map[int64]bool, fn func(Event) error) (final bool, err error) {
	hdr := http.Header{"Accept": {"text/event-stream"}, "Last-Event-ID": {strconv.FormatInt(*after, 10)}}
	resp, err := c.request(ctx, "GET", "/v1/sessions/"+url.PathEscape(id)+"/generations/"+url.PathEscape(gid)+"/stream", nil, hdr)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	// The SSE format: a "data" field's value follows its colon and one
	// optional space; the values of an event's data lines are joined with
	// "\n"; a blank line ends the event.
	var data strings.Builder
	hasData := false
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		switch {
		case line != "" && field == "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(value, " "))
			hasData = true
		case line == "" && hasData:
			var ev Event
			if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
				return false, fmt.Errorf("decode event: %w", err)
			}
			data.Reset()
			hasData = false
			if ev.Type == "resume_required" {
				// Too slow for the server, which closes the stream:
				// reconnect after the last offset fn saw.
				return false, nil
			}
			if ev.Offset > 0 {
				if ev.Offset <= *after {
					continue // seen before a reconnect
				}
				*after = ev.Offset
			}
			if ev.Type == "turn" && ev.Turn != nil {
				if turns[ev.Turn.ID] {
					continue // given before a reconnect
				}
				turns[ev.Turn.ID] = true
			}
			if err := fn(ev); err != nil {
				return true, err
			}
			if ev.Type == "done" || ev.Type == "error" {
				return true, nil
			}
		}
	}
	return false, sc.Err()
}

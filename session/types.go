package session

import (
	"encoding/json"
	"time"

	"sessiond/streaming"
	"sessiond/streaming/jsonenc"
)

// Roles of turns.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// Turn statuses.
const (
	TurnComplete    = "complete"
	TurnStreaming   = "streaming"
	TurnCancelled   = "cancelled"
	TurnFailed      = "failed"
	TurnInterrupted = "interrupted"
)

// Generation statuses.
const (
	GenQueued      = "queued"
	GenRunning     = "running"
	GenDone        = "done"
	GenCancelled   = "cancelled"
	GenFailed      = "failed"
	GenInterrupted = "interrupted"
)

// Busy policies: what a new user turn does while a generation runs.
const (
	PolicyQueue     = "queue"
	PolicyReject    = "reject"
	PolicyInterrupt = "interrupt"
)

// Timestamp is a time as the API writes it (jsonenc.TimeLayout: RFC 3339
// in UTC with exactly three digits of milliseconds, so that the strings
// sort as the times do); it reads any RFC 3339 time.
type Timestamp struct{ time.Time }

// MarshalJSON writes t as jsonenc.Time does.
func (t Timestamp) MarshalJSON() ([]byte, error) { return jsonenc.Time(nil, t.Time), nil }

// Session is a conversation's metadata as the API shows it.
type Session struct {
	ID         string          `json:"id"`
	Title      string          `json:"title"`
	Model      string          `json:"model"`
	System     string          `json:"system"`
	Owner      string          `json:"owner"`
	Metadata   json.RawMessage `json:"metadata"`
	BusyPolicy string          `json:"busy_policy"`
	CreatedAt  Timestamp       `json:"created_at"`
	UpdatedAt  Timestamp       `json:"updated_at"`
	LastTurnID int64           `json:"last_turn_id"`
	HeadTurnID int64           `json:"head_turn_id"`
	Generation *GenRef         `json:"generation"`
}

// GenRef is the running (or queued) generation of a session.
type GenRef struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Offset int64  `json:"offset"`
}

// MarshalJSON encodes t as AppendTurnJSON does, the one encoding of a turn
// in the API: tool_calls is [] when the turn has none (the API's turn shape
// always has it).
func (t Turn) MarshalJSON() ([]byte, error) { return AppendTurnJSON(nil, t), nil }

// Turn is one message of a conversation.
type Turn struct {
	ID           int64           `json:"id"`
	ParentID     *int64          `json:"parent_id"`
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`    // a JSON string or an array of content parts
	ToolCalls    []ToolCall      `json:"tool_calls"` // [] when none (see MarshalJSON)
	ToolCallID   *string         `json:"tool_call_id"`
	Model        *string         `json:"model"`
	Usage        *Usage          `json:"usage"`
	FinishReason *string         `json:"finish_reason"`
	Status       string          `json:"status"`
	Error        *ErrorInfo      `json:"error"`
	GenerationID *string         `json:"generation_id"`
	CreatedAt    Timestamp       `json:"created_at"`
}

// ErrorInfo is a stable code and a human message.
type ErrorInfo struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// done returns e as a done event's error; nil for none.
func (e *ErrorInfo) done() *streaming.DoneError {
	if e == nil {
		return nil
	}
	return &streaming.DoneError{Code: e.Code, Message: e.Message}
}

// Generation is one model call that produces an assistant turn.
type Generation struct {
	ID     string     `json:"id"`
	Status string     `json:"status"`
	TurnID int64      `json:"turn_id"`
	Offset int64      `json:"offset"`
	Error  *ErrorInfo `json:"error"`
}

// Finished reports whether the generation has ended.
func (g *Generation) Finished() bool {
	return g.Status != GenQueued && g.Status != GenRunning
}

// PastEnd reports whether offset after is past the generation's last event,
// so that no client can have seen it: a resume from there is refused. Not
// so for a generation a restart interrupted: its final event takes the
// offset after the last delta the node journal saved, and a client may
// have seen deltas after those (up to a persist interval's worth).
func (g *Generation) PastEnd(after int64) bool {
	return after > g.Offset && g.Status != GenInterrupted
}

// finalUnseen reports whether a finished generation's final event is still
// to be sent to a client that saw its events up to offset after: one
// before it, or past it in an interrupted generation (see PastEnd), whose
// client saw output that was lost and gets the saved turn.
func (g *Generation) finalUnseen(after int64) bool {
	return after < g.Offset || after > g.Offset && g.Status == GenInterrupted
}

// NewTurn is a turn a client posts: a user message or a tool result.
type NewTurn struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// CreateRequest creates a session. Every field is optional.
type CreateRequest struct {
	ID         string          `json:"id,omitempty"`
	Title      string          `json:"title,omitempty"`
	Model      string          `json:"model,omitempty"`
	System     string          `json:"system,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	BusyPolicy string          `json:"busy_policy,omitempty"`
	// IdempotencyKey makes the create idempotent: a repeat returns the
	// session the first made (the Idempotency-Key header).
	IdempotencyKey string `json:"-"`
}

// UpdateRequest changes a session; nil fields are left alone.
type UpdateRequest struct {
	Title      *string         `json:"title,omitempty"`
	Model      *string         `json:"model,omitempty"`
	System     *string         `json:"system,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	BusyPolicy *string         `json:"busy_policy,omitempty"`
}

// PostRequest appends turns and optionally starts a generation.
type PostRequest struct {
	Turns          []NewTurn `json:"turns"`
	Generate       bool      `json:"generate"`
	Model          string    `json:"model,omitempty"`
	IdempotencyKey string    `json:"-"`
	// Parent, when non-zero, appends the turns under that turn instead of
	// the head: an edit, which starts a sibling branch.
	Parent int64 `json:"parent_id,omitempty"`
	// Root appends the turns with no parent, as the first turn of a new
	// branch: a sibling of the session's first turn (an edit of the first
	// message). It excludes Parent, and needs turns. (parent_id 0 or null
	// means the head, as it always has.)
	Root bool `json:"root,omitempty"`
}

// PostResult is what posting turns produced.
type PostResult struct {
	Turns      []Turn      `json:"turns"`
	Generation *Generation `json:"generation"`

	replayed bool // the answer to a repeated idempotency key: nothing was written
}

// TurnQuery pages through the turns of one branch.
type TurnQuery struct {
	After  *int64 // page starts just after this id (ascending)
	Before *int64 // page is the newest turns before this id
	Limit  int
	Branch int64 // leaf turn of the branch; 0 = the session's head
}

// DirEntry is one session in an owner's directory.
type DirEntry struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	UpdatedAt Timestamp `json:"updated_at"`
	CreatedAt Timestamp `json:"created_at"`
	Preview   string    `json:"preview"`
}

package session

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"sessiond/objects"
)

// directory is the durable object that lists one owner's sessions, newest
// activity first. Sessions keep it up to date.
type directory struct{}

func newDirectory(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
	return &directory{}, nil
}

// upsert writes session e.ID's entry; with keepPreview, an entry the
// directory has keeps its preview, and e.Preview is ignored.
func (d *directory) upsert(ctx context.Context, tx *objects.Tx, e DirEntry, keepPreview bool) error {
	_, err := tx.Exec(ctx, `INSERT INTO sessions (id, title, preview, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
		ON CONFLICT (id) DO UPDATE SET title = excluded.title,
			preview = CASE WHEN ?6 THEN sessions.preview ELSE excluded.preview END,
			updated_at = max(sessions.updated_at, excluded.updated_at)`,
		e.ID, e.Title, e.Preview, e.CreatedAt.UnixMilli(), e.UpdatedAt.UnixMilli(), keepPreview)
	if err != nil {
		return fmt.Errorf("directory upsert %s: %w", e.ID, err)
	}
	return nil
}

func (d *directory) remove(ctx context.Context, tx *objects.Tx, id string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM sessions WHERE id = ?`, id); err != nil {
		return err
	}
	// A late retry of the request that made it must not make it again
	// (see claim). Deletions are rare: the scan of a day's keys is cheap.
	if _, err := tx.Exec(ctx, `UPDATE create_keys SET deleted = 1 WHERE session_id = ?`, id); err != nil {
		return fmt.Errorf("mark idempotency keys of a deleted session: %w", err)
	}
	return nil
}

// keepEvents stores evs, the events session id had not published as its
// object goes (see Service.keepDeletedEvents), in place of any kept
// before, for takeEvents.
func (d *directory) keepEvents(ctx context.Context, tx *objects.Tx, id string, evs []objects.Event) error {
	kept := make([]deletedEvent, len(evs))
	for i, ev := range evs {
		kept[i] = deletedEvent{ID: ev.ID, Subject: ev.Subject, Data: ev.Data}
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT OR REPLACE INTO deleted_events (session_id, events) VALUES (?, ?)`, id, string(b)); err != nil {
		return fmt.Errorf("keep the unpublished events of session %s: %w", id, err)
	}
	return nil
}

// takeEvents removes and returns the events kept for session id (none
// when there are none).
func (d *directory) takeEvents(ctx context.Context, tx *objects.Tx, id string) ([]deletedEvent, error) {
	var kept string
	err := tx.QueryRow(ctx, `SELECT events FROM deleted_events WHERE session_id = ?`, id).Scan(&kept)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	var evs []deletedEvent
	if err == nil {
		err = json.Unmarshal([]byte(kept), &evs)
	}
	if err == nil {
		_, err = tx.Exec(ctx, `DELETE FROM deleted_events WHERE session_id = ?`, id)
	}
	if err != nil {
		return nil, fmt.Errorf("take the kept events of session %s: %w", id, err)
	}
	return evs, nil
}

// deletedEvent is one of a deleted session's events kept in its owner's
// directory (keepEvents).
type deletedEvent struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Data    []byte `json:"data"`
}

// list returns a page, newest first; the cursor encodes the last entry's
// (updated_at, id).
func (d *directory) list(ctx context.Context, tx *objects.Tx, cursor string, limit int) ([]DirEntry, string, error) {
	q := `SELECT id, title, preview, created_at, updated_at FROM sessions ORDER BY updated_at DESC, id DESC LIMIT ?`
	args := []any{limit + 1}
	if cursor != "" {
		at, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		q = `SELECT id, title, preview, created_at, updated_at FROM sessions
			WHERE updated_at < ? OR (updated_at = ? AND id < ?) ORDER BY updated_at DESC, id DESC LIMIT ?`
		args = []any{at, at, id, limit + 1}
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	out := []DirEntry{}
	for rows.Next() {
		var e DirEntry
		var c, u int64
		if err := rows.Scan(&e.ID, &e.Title, &e.Preview, &c, &u); err != nil {
			return nil, "", err
		}
		e.CreatedAt, e.UpdatedAt = Timestamp{time.UnixMilli(c).UTC()}, Timestamp{time.UnixMilli(u).UTC()}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(last.UpdatedAt.UnixMilli(), last.ID)
	}
	return out, next, nil
}

func encodeCursor(at int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + ":" + id))
}

// CheckCursor reports whether c is a cursor List can take ("" is: the
// first page). It is ErrInvalid otherwise.
func CheckCursor(c string) error {
	if c == "" {
		return nil
	}
	_, _, err := decodeCursor(c)
	return err
}

func decodeCursor(c string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	at, id, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil {
		return 0, "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	return n, id, nil
}

// dirUpdates batches directory updates off the request path: the latest
// entry per session wins, and a worker applies them.
type dirUpdates struct {
	mu      sync.Mutex
	pending map[string]map[string]dirUpdate // owner → id → update
	wake    chan struct{}
	// flushMu, one of them per owner (owners share them by hash), is
	// held from taking an owner's pending entries until they are applied,
	// and by Delete around its removal: an owner's entries are applied in
	// the order they were taken, and none after its session's removal.
	flushMu [64]sync.Mutex
}

// flushLock returns the flush mutex of owner (see dirUpdates.flushMu).
func (u *dirUpdates) flushLock(owner string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(owner))
	return &u.flushMu[h.Sum32()%uint32(len(u.flushMu))]
}

// dirUpdate is a pending update of a directory entry.
type dirUpdate struct {
	e DirEntry
	// keepPreview leaves the entry's preview as it is (e.Preview unused).
	keepPreview bool
}

// merge returns u, taken after older, with the preview older would set
// when u keeps the entry's.
func (u dirUpdate) merge(older dirUpdate) dirUpdate {
	if u.keepPreview {
		u.e.Preview, u.keepPreview = older.e.Preview, older.keepPreview
	}
	return u
}

// touchDirectory queues the session's directory entry as m has it, with
// preview p (see sessionObj.branchPreview), or the entry's own when p is
// nil (the head's branch did not change).
func (svc *Service) touchDirectory(m *meta, p *string) {
	up := dirUpdate{e: DirEntry{ID: m.ID, Title: m.Title, CreatedAt: Timestamp{m.CreatedAt}, UpdatedAt: Timestamp{m.UpdatedAt}}, keepPreview: p == nil}
	if p != nil {
		up.e.Preview = *p
	}
	u := &svc.dir
	u.mu.Lock()
	if u.pending[m.Owner] == nil {
		u.pending[m.Owner] = make(map[string]dirUpdate)
	}
	if old, ok := u.pending[m.Owner][m.ID]; ok {
		up = up.merge(old)
	}
	u.pending[m.Owner][m.ID] = up
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// runDirectory applies pending directory updates until ctx ends, then once more.
// Updates wait up to directoryDelay so that a busy owner's many turns cost
// one directory commit, not one each; List applies what is pending first,
// so a client always sees its own changes. Updates that failed are tried
// again after directoryRetry, or with the next ones.
func (svc *Service) runDirectory(ctx context.Context) {
	defer svc.wg.Done()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			svc.flushDirectory()
			return
		case <-svc.dir.wake:
		case <-retry:
		}
		select {
		case <-ctx.Done():
		case <-time.After(directoryDelay):
		}
		retry = nil
		if !svc.flushDirectory() {
			retry = time.After(directoryRetry)
		}
	}
}

const (
	// directoryDelay bounds how stale an owner's directory may be.
	directoryDelay = 200 * time.Millisecond
	// directoryRetry is how long updates that failed wait to be tried
	// again, when no newer update comes first.
	directoryRetry = 5 * time.Second
)

// flushDirectory applies every owner's pending updates and reports whether
// all were applied.
func (svc *Service) flushDirectory() bool {
	u := &svc.dir
	u.mu.Lock()
	owners := make([]string, 0, len(u.pending))
	for owner := range u.pending {
		owners = append(owners, owner)
	}
	u.mu.Unlock()
	ok := true
	for _, owner := range owners {
		if !svc.flushDirectoryOf(owner) {
			ok = false
		}
	}
	return ok
}

// applyDirectory takes owner's pending entries and applies them in one
// call of its directory; entries it could not apply go back to wait for
// the next try, behind any newer of the same session (a directory that
// missed an update would list a session stale, or not at all, until the
// session changed again). It reports whether it applied them. The caller
// holds dir.flushLock(owner), so a Delete cannot remove an entry between
// the take and the put back.
func (svc *Service) applyDirectory(owner string) bool {
	u := &svc.dir
	u.mu.Lock()
	entries := u.pending[owner]
	delete(u.pending, owner)
	u.mu.Unlock()
	if len(entries) == 0 {
		return true
	}
	stub, err := svc.dirs.Get(owner)
	if err == nil {
		_, err = objects.Do(context.Background(), stub, func(ctx context.Context, d *directory, tx *objects.Tx) (struct{}, error) {
			for _, up := range entries {
				if err := d.upsert(ctx, tx, up.e, up.keepPreview); err != nil {
					return struct{}{}, err
				}
			}
			return struct{}{}, nil
		})
	}
	if err == nil {
		return true
	}
	svc.logger().Warn("session: update directory, to be tried again", "owner", owner, "sessions", len(entries), "err", err)
	u.mu.Lock()
	defer u.mu.Unlock()
	pending := u.pending[owner]
	if pending == nil {
		pending = make(map[string]dirUpdate)
		u.pending[owner] = pending
	}
	for id, up := range entries {
		if newer, ok := pending[id]; ok {
			pending[id] = newer.merge(up) // as touchDirectory merges
			continue
		}
		pending[id] = up
	}
	return false
}

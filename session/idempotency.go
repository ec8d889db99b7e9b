package session

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"sessiond/objects"
)

// Creating a session (create, fork, import) is idempotent by key, as
// posting turns is (API.md: Idempotency-Key on POSTs that create things):
// the owner's directory remembers which session id a key stands for, for
// createKeyTTL, and the session the key it was made with. The id is chosen
// and recorded before the session is made, so a request that stops
// between the two (a crash, a timeout) is finished by its retry, under
// the same id; a session that exists answers a repeat only if it was made
// with the key. A repeat after the session's deletion is a conflict, not
// a new session: a late retry must not undo a delete.
const createKeyTTL = 24 * time.Hour

// maxKeyBytes bounds an Idempotency-Key.
const maxKeyBytes = 256

// createHash identifies a create request: op and its fields, each
// length-prefixed.
func createHash(op string, fields ...[]byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", op)
	for _, f := range fields {
		fmt.Fprintf(h, "%d\x00", len(f))
		h.Write(f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hash identifies a create request by its fields as sent.
func (r *CreateRequest) hash() string {
	return createHash("create", []byte(r.ID), []byte(r.Title), []byte(r.Model), []byte(r.System), r.Metadata, []byte(r.BusyPolicy))
}

// claimCreate returns the session id that key stands for in owner's
// directory: the one an earlier request with the key recorded, or want,
// recorded now. A key used for another request is ErrConflict. The session
// itself records the key it was made with (meta.CreateKey): creating it
// again under the claimed id answers it (sessionObj.existing), and a
// session that the first request never made is made now. One that was
// made and deleted since is ErrConflict (see refuseDeletedReplay).
func (svc *Service) claimCreate(ctx context.Context, owner, key, hash, want string) (string, error) {
	if len(key) > maxKeyBytes {
		return "", fmt.Errorf("%w: Idempotency-Key is longer than %d bytes", ErrInvalid, maxKeyBytes)
	}
	stub, err := svc.dirs.Get(owner)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var replay bool
	id, err := objects.Do(ctx, stub, func(ctx context.Context, d *directory, tx *objects.Tx) (string, error) {
		id, r, err := d.claim(ctx, tx, key, hash, want, time.Now())
		replay = r
		return id, err
	})
	if err != nil || !replay {
		return id, err
	}
	return id, svc.refuseDeletedReplay(ctx, owner, key, id)
}

// refuseDeletedReplay answers a repeat of key, which names session id: a
// session that no longer exists but that its owner's list still holds was
// made and deleted since, and a crash (or the deletion under way) came
// before its entry's removal, which marks the key. The entry goes now
// (unlistGhost, marking the key), and the repeat is ErrConflict, as any
// after a deletion. Without the check it would make the deleted session
// again, empty, under its old id. A session neither existing nor listed
// was never made (the first request's crash came between its claim and
// its create): the repeat makes it.
func (svc *Service) refuseDeletedReplay(ctx context.Context, owner, key, id string) error {
	if exists, err := svc.sessions.Exists(ctx, id); err != nil || exists {
		return err
	}
	removed, err := svc.unlistGhost(ctx, owner, id)
	if err != nil {
		return err
	}
	if _, deleting := svc.deletions.Load(id); removed || deleting {
		return fmt.Errorf("%w: session %s, made with idempotency key %q, has been deleted since", ErrConflict, id, key)
	}
	return nil
}

// madeWith returns the id of the session that key was claimed for by the
// request hash in owner's directory, if it was and the session was not
// deleted since. The session may not exist: the first request may have
// failed, or not come so far.
func (svc *Service) madeWith(ctx context.Context, owner, key, hash string) (string, error) {
	if ok, err := svc.dirs.Exists(ctx, owner); !ok || err != nil {
		return "", err
	}
	stub, err := svc.dirs.Get(owner)
	if err != nil {
		return "", err
	}
	return objects.Do(ctx, stub, func(ctx context.Context, d *directory, tx *objects.Tx) (string, error) {
		k, err := d.key(ctx, tx, key, time.Now())
		if err != nil || !k.found || k.request != hash || k.deleted {
			return "", err
		}
		return k.sessionID, nil
	})
}

// createKey is a create key's record in the directory.
type createKey struct {
	found              bool
	request, sessionID string
	deleted            bool
}

// key reads key's record, if it is younger than createKeyTTL at now.
func (d *directory) key(ctx context.Context, tx *objects.Tx, key string, now time.Time) (createKey, error) {
	var k createKey
	err := tx.QueryRow(ctx, `SELECT request, session_id, deleted FROM create_keys WHERE key = ? AND created_at >= ?`,
		key, now.Add(-createKeyTTL).UnixMilli()).Scan(&k.request, &k.sessionID, &k.deleted)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return createKey{}, nil
	case err != nil:
		return createKey{}, fmt.Errorf("read idempotency key: %w", err)
	}
	k.found = true
	return k, nil
}

// claim is claimCreate inside the directory, and reports whether the key
// was claimed before (replay). Keys older than createKeyTTL are
// forgotten as new ones come.
func (d *directory) claim(ctx context.Context, tx *objects.Tx, key, hash, want string, now time.Time) (id string, replay bool, err error) {
	k, err := d.key(ctx, tx, key, now)
	switch {
	case err != nil:
		return "", false, err
	case k.found && k.request != hash:
		return "", false, fmt.Errorf("%w: idempotency key %q was used for a different request", ErrConflict, key)
	case k.found && k.deleted:
		return "", false, fmt.Errorf("%w: session %s, made with idempotency key %q, has been deleted since", ErrConflict, k.sessionID, key)
	case k.found:
		return k.sessionID, true, nil
	}
	if _, err := tx.Exec(ctx, `DELETE FROM create_keys WHERE created_at < ?`, now.Add(-createKeyTTL).UnixMilli()); err != nil {
		return "", false, fmt.Errorf("expire idempotency keys: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT OR REPLACE INTO create_keys (key, request, session_id, created_at) VALUES (?, ?, ?, ?)`,
		key, hash, want, now.UnixMilli()); err != nil {
		return "", false, fmt.Errorf("record idempotency key: %w", err)
	}
	return want, false, nil
}

// moveCreateClaim points key, claimed for session id from, at session id
// to instead (from was found taken by another request), and returns the id
// key stands for now: to, or the id a concurrent request with the same key
// moved it to first.
func (svc *Service) moveCreateClaim(ctx context.Context, owner, key, hash, from, to string) (string, error) {
	stub, err := svc.dirs.Get(owner)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return objects.Do(ctx, stub, func(ctx context.Context, d *directory, tx *objects.Tx) (string, error) {
		if _, err := tx.Exec(ctx, `UPDATE create_keys SET session_id = ? WHERE key = ? AND request = ? AND session_id = ?`,
			to, key, hash, from); err != nil {
			return "", fmt.Errorf("move idempotency key: %w", err)
		}
		id, _, err := d.claim(ctx, tx, key, hash, to, time.Now())
		return id, err
	})
}

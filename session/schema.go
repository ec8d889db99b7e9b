package session

// sessionSchema is the session object's schema, one migration per step.
var sessionSchema = []string{
	`CREATE TABLE meta (
		id          INTEGER PRIMARY KEY CHECK (id = 1),
		session_id  TEXT NOT NULL,
		owner       TEXT NOT NULL,
		title       TEXT NOT NULL DEFAULT '',
		model       TEXT NOT NULL,
		system      TEXT NOT NULL DEFAULT '',
		metadata    TEXT NOT NULL DEFAULT '{}',
		busy_policy TEXT NOT NULL DEFAULT 'queue',
		head        INTEGER NOT NULL DEFAULT 0,
		branched    INTEGER NOT NULL DEFAULT 0,
		created_at  INTEGER NOT NULL,
		updated_at  INTEGER NOT NULL
	);
	CREATE TABLE turns (
		id                INTEGER PRIMARY KEY,
		parent_id         INTEGER,
		role              TEXT NOT NULL,
		content           TEXT NOT NULL,
		tool_calls        TEXT,
		tool_call_id      TEXT,
		model             TEXT,
		prompt_tokens     INTEGER,
		completion_tokens INTEGER,
		total_tokens      INTEGER,
		finish_reason     TEXT,
		status            TEXT NOT NULL,
		error_code        TEXT,
		error_message     TEXT,
		generation_id     TEXT,
		idempotency_key   TEXT,
		created_at        INTEGER NOT NULL,
		updated_at        INTEGER NOT NULL
	);
	CREATE INDEX turns_parent ON turns(parent_id);
	CREATE TABLE generations (
		id            TEXT PRIMARY KEY,
		turn_id       INTEGER NOT NULL,
		parent_id     INTEGER NOT NULL,
		model         TEXT NOT NULL,
		status        TEXT NOT NULL,
		offset        INTEGER NOT NULL DEFAULT 0,
		error_code    TEXT,
		error_message TEXT,
		created_at    INTEGER NOT NULL,
		finished_at   INTEGER
	);
	CREATE TABLE idempotency (
		key        TEXT PRIMARY KEY,
		request    TEXT NOT NULL,
		turn_ids   TEXT NOT NULL,
		generation TEXT,
		created_at INTEGER NOT NULL
	);`,
	// Output of a running generation, appended every PersistInterval: a
	// piece is the text since the previous one, so a save writes one small
	// row instead of the whole reply so far (which made a thousand streams
	// spend a third of their CPU rewriting their turns). The turn gets the
	// whole text when the generation ends, or at recovery after a crash.
	`CREATE TABLE partials (
		turn_id    INTEGER NOT NULL,
		upto       INTEGER NOT NULL, -- the generation's stream offset after this piece
		text       TEXT NOT NULL,    -- text produced since the previous piece
		tool_calls TEXT,             -- every tool call so far (JSON), when there are any
		PRIMARY KEY (turn_id, upto)
	) WITHOUT ROWID;`,
	// No query looks turns up by parent (branches are walked from a leaf up,
	// by id): the index only cost a page write per turn.
	`DROP INDEX IF EXISTS turns_parent;`,
	// The Idempotency-Key a session was created with (idempotency.go).
	`ALTER TABLE meta ADD COLUMN create_key TEXT;`,
	// Queued and running generations are looked up on every post that
	// generates and at every wake: without an index each was a scan of
	// every generation the session ever ran.
	`CREATE INDEX generations_status ON generations(status);`,
}

// directorySchema is the owner directory's schema.
var directorySchema = []string{
	`CREATE TABLE sessions (
		id         TEXT PRIMARY KEY,
		title      TEXT NOT NULL,
		preview    TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL
	);
	CREATE INDEX sessions_updated ON sessions(updated_at DESC, id DESC);`,
	// Idempotency-Key of creates, forks and imports (idempotency.go).
	`CREATE TABLE create_keys (
		key        TEXT PRIMARY KEY,
		request    TEXT NOT NULL,    -- createHash of the request
		session_id TEXT NOT NULL,
		created_at INTEGER NOT NULL
	);
	CREATE INDEX create_keys_created ON create_keys(created_at);`,
	// A key whose session was deleted: its repeat must not make the
	// session again (idempotency.go).
	`ALTER TABLE create_keys ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;`,
	// The events a session being deleted had not published, kept here
	// before its object goes and published with its entry's removal
	// (Service.Delete): a crash in between leaves them for unlistGhost.
	`CREATE TABLE deleted_events (
		session_id TEXT PRIMARY KEY,
		events     TEXT NOT NULL -- JSON: [{"id", "subject", "data" (base64)}]
	) WITHOUT ROWID;`,
}

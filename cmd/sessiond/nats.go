package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"sessiond/objects/natsbus"
	"sessiond/session"
)

// eventSubjects is what the event stream stores: every subject sessiond
// and its objects publish on (docs/events.md).
var eventSubjects = []string{"sessiond.>"}

// events is the running NATS side: an embedded server (or none), the
// connection, the bus and its adapter for the runtime.
type events struct {
	embedded *natsbus.Embedded
	conn     *nats.Conn
	bus      *natsbus.Bus
	objects  *natsbus.Objects
}

// health says what is wrong with the event bus, "" when nothing: while
// the connection to NATS is down (reconnecting), events wait in the
// outboxes and subscribers hear nothing.
func (e *events) health() string {
	if st := e.conn.Status(); st != nats.CONNECTED {
		return "disconnected"
	}
	return ""
}

// startEvents starts the embedded NATS server or connects to the external
// one, and opens the event stream.
func startEvents(ctx context.Context, cfg config, logger *slog.Logger) (*events, error) {
	ev := &events{}
	var err error
	if cfg.NATSURL == "" {
		opts := natsbus.EmbeddedOptions{Dir: filepath.Join(cfg.Data, "nats"), Listen: cfg.NATSListen, Logger: logger}
		if cfg.NATSSync == "always" {
			opts.SyncAlways = true
		} else {
			opts.SyncInterval, _ = time.ParseDuration(cfg.NATSSync)
		}
		if ev.embedded, err = natsbus.StartEmbedded(ctx, opts); err != nil {
			return nil, fmt.Errorf("start embedded NATS: %w", err)
		}
		if ev.conn, err = ev.embedded.Connect(ctx); err != nil {
			ev.close()
			return nil, fmt.Errorf("connect to embedded NATS: %w", err)
		}
		if u := ev.embedded.ClientURL(); u != "" {
			logger.Info("embedded NATS listening", "url", u)
		}
	} else {
		ev.conn, err = natsbus.ConnectExternal(ctx, natsbus.ExternalOptions{
			URL: cfg.NATSURL, CredsFile: cfg.NATSCreds, User: cfg.NATSUser, Password: cfg.NATSPassword,
			Token: cfg.NATSToken, TLSCAFile: cfg.NATSTLSCA, TLSCertFile: cfg.NATSTLSCert, TLSKeyFile: cfg.NATSTLSKey,
			Name: "sessiond",
		})
		if err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(cfg.NATSURL), err)
		}
	}
	if ev.bus, err = natsbus.New(ev.conn, &natsbus.BusOptions{Subjects: eventSubjects, DuplicateWindow: cfg.NATSDedup, Logger: logger}); err != nil {
		ev.close()
		return nil, err
	}
	node, err := nodeID(cfg.Data)
	if err != nil {
		ev.close()
		return nil, err
	}
	ev.objects = &natsbus.Objects{Bus: ev.bus, Durable: "sessiond-node-" + node}
	// Before the stream is opened: a server refused leaves no stream made.
	if n := ev.objects.MaxEventBytes(); n < session.MinBusEventBytes {
		ev.close()
		return nil, fmt.Errorf("the NATS server takes messages of at most %d bytes (its max_payload): sessions publish events of up to %d bytes, and need %d for headers besides; set max_payload to %d or more",
			n+natsbus.HeaderRoom, session.MinBusEventBytes, natsbus.HeaderRoom, session.MinBusEventBytes+natsbus.HeaderRoom)
	}
	if err := ev.bus.Open(ctx); err != nil {
		ev.close()
		return nil, fmt.Errorf("open event stream: %w", err)
	}
	return ev, nil
}

// close closes the bus, the connection and the embedded server, in order.
func (ev *events) close() {
	if ev.bus != nil {
		ev.bus.Close()
	}
	if ev.conn != nil {
		ev.conn.Close()
	}
	if ev.embedded != nil {
		ev.embedded.Close()
	}
}

// nodeID is this data folder's node name, made once and kept in a file, so
// that the node's durable consumer resumes across restarts.
func nodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return id, nil
}

// redactURLs returns list, comma-separated URLs, with the password of each
// that has one replaced by "redacted": it is for messages and logs.
func redactURLs(list string) string {
	items := strings.Split(list, ",")
	for i, item := range items {
		u, err := url.Parse(strings.TrimSpace(item))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "redacted")
		} else {
			u.User = url.User("redacted") // a user name alone may be a token
		}
		items[i] = u.String()
	}
	return strings.Join(items, ",")
}

// checkNATSFiles returns a *usageError naming the setting whose file, of
// an external NATS's credentials and TLS, cannot be read: found before
// anything starts, it is a mistake in the command line, not a failure to
// connect.
func checkNATSFiles(cfg config) error {
	for _, f := range []struct{ flag, path string }{
		{"nats-creds", cfg.NATSCreds},
		{"nats-tls-ca", cfg.NATSTLSCA},
		{"nats-tls-cert", cfg.NATSTLSCert},
		{"nats-tls-key", cfg.NATSTLSKey},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return usageErrorf("%s: %w", cfg.source(f.flag), err)
		}
		fh.Close()
	}
	return nil
}

package natsbus

import (
	"context"
	"fmt"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect connects to an external NATS deployment at url (a comma-separated
// list of servers is allowed). The connection reconnects forever unless opts
// say otherwise; opts are applied after these defaults. ctx's deadline, if
// any and shorter than nats.DefaultTimeout, bounds each dial and handshake;
// cancellation is checked before connecting. The caller owns and must close
// the connection.
func Connect(ctx context.Context, url string, opts ...nats.Option) (*nats.Conn, error) {
	all := make([]nats.Option, 0, len(opts)+2)
	all = append(all, nats.Name("sessiond"), nats.MaxReconnects(-1))
	all = append(all, opts...)
	nc, err := connect(ctx, url, all)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", redactURLs(url), err)
	}
	return nc, nil
}

// redactURLs hides user info (password, or a token in the user position) in
// a comma-separated list of URLs, for errors.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = neturl.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func connect(ctx context.Context, url string, opts []nats.Option) (*nats.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d <= 0 {
			return nil, context.DeadlineExceeded
		}
		if d < nats.DefaultTimeout {
			opts = append(opts, nats.Timeout(d))
		}
	}
	return nats.Connect(url, opts...)
}

// ExternalOptions describes how to reach an external NATS deployment. At most
// one of CredsFile, User/Password and Token may be set. File paths are read
// when connecting (and again on each reconnect).
type ExternalOptions struct {
	// URL is the server URL, or several separated by commas. Required.
	URL string

	// CredsFile is a NATS credentials file (user JWT and nkey seed), as
	// issued by nsc or a NATS operator.
	CredsFile string

	// User and Password authenticate with a username and password.
	User, Password string

	// Token authenticates with a bearer token.
	Token string

	// TLSCAFile is a PEM file of CAs trusted to sign the server's
	// certificate; empty means the system pool. Setting it, or a client
	// certificate, requires TLS.
	TLSCAFile string

	// TLSCertFile and TLSKeyFile are a PEM client certificate and its key,
	// for servers that verify clients. Both or neither.
	TLSCertFile, TLSKeyFile string

	// Name identifies this client in the server's monitoring. Default
	// "sessiond".
	Name string
}

// natsOptions checks o and turns it into nats options.
func (o ExternalOptions) natsOptions() ([]nats.Option, error) {
	if o.URL == "" {
		return nil, fmt.Errorf("%w: URL is required", ErrInvalidOptions)
	}
	auth := 0
	if o.CredsFile != "" {
		auth++
	}
	if o.User != "" || o.Password != "" {
		if o.User == "" {
			return nil, fmt.Errorf("%w: Password without User", ErrInvalidOptions)
		}
		auth++
	}
	if o.Token != "" {
		auth++
	}
	if auth > 1 {
		return nil, fmt.Errorf("%w: set only one of CredsFile, User/Password, Token", ErrInvalidOptions)
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return nil, fmt.Errorf("%w: TLSCertFile and TLSKeyFile go together", ErrInvalidOptions)
	}

	var opts []nats.Option
	if o.Name != "" {
		opts = append(opts, nats.Name(o.Name))
	}
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}
	if o.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(o.TLSCAFile))
	}
	if o.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
	}
	return opts, nil
}

// ConnectExternal connects as Connect does, with the credentials and TLS
// settings of o. It wraps ErrInvalidOptions when o is inconsistent.
func ConnectExternal(ctx context.Context, o ExternalOptions) (*nats.Conn, error) {
	opts, err := o.natsOptions()
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	return Connect(ctx, o.URL, opts...)
}

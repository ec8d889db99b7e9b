package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"sessiond/objects"
	"sessiond/objects/natsbus"
	"sessiond/session"
	"sessiond/streaming"
)

// config is sessiond's settings, resolved from flags, then environment
// variables, then defaults.
type config struct {
	Addr        string             // listen address, host:port
	Data        string             // data folder: index.db and objects/
	Durability  objects.Durability // commit durability of every database
	IdleTimeout time.Duration      // how long an idle object stays in memory
	MaxOpen     int                // cap on open object databases
	MaxStreams  int                // cap on one owner's open WebSockets and event streams; 0 = none
	LogLevel    slog.Level
	LogFormat   string // "text" or "json"
	DebugAddr   string // net/http/pprof listener; "" = none
	GCFloorMiB  int    // heap goal floor in MiB (see heapfloor); 0 = GOGC alone

	OfflineTPS     float64            // words per second of the offline model; 0 = as fast as it can
	FlushInterval  time.Duration      // least time between two writes to a WebSocket viewer
	FlushBytes     int                // queued bytes that are written without waiting for FlushInterval
	OpenAIBaseURL  string             // an OpenAI-compatible endpoint; "" = none
	OpenAIKey      string             // its API key
	OpenAIModel    string             // the upstream model name, also the model's name here
	ModelsFile     string             // JSON file of named models (see docs/configuration.md)
	APIKeys        map[string]keySpec // API key → owner
	InsecureNoAuth bool               // allow a non-loopback address without API keys
	AllowedOrigins []string           // extra WebSocket origins (host patterns)

	NATSURL      string        // external NATS; "" = embedded
	NATSListen   string        // embedded: client address to open, "" = none
	NATSSync     string        // embedded: JetStream fsync: "always" or an interval
	NATSDedup    time.Duration // how long the event stream remembers message ids; 0 = the stream's own (natsbus default for a new one)
	NATSCreds    string        // external: credentials file
	NATSUser     string        // external: user
	NATSPassword string        // external: password
	NATSToken    string        // external: token
	NATSTLSCA    string        // external: CA file
	NATSTLSCert  string        // external: client certificate
	NATSTLSKey   string        // external: client key
	Events       bool          // publish session lifecycle events

	// from holds, for each setting given a non-empty value, where it came
	// from: "--flag" or the variable's name (see source).
	from map[string]string
}

// source names where setting flag's value came from, for a message about
// it: the flag or the environment variable that gave it.
func (c *config) source(flag string) string {
	if f, ok := c.from[flag]; ok {
		return f
	}
	return "--" + flag
}

// keySpec is who an API key acts for.
type keySpec struct {
	Owner string
	Admin bool
}

// setting is one knob: its flag, its environment variable, its default, and
// how its value is checked and stored. The table below is the single source
// of the usage text and of docs/configuration.md.
type setting struct {
	flag  string // without dashes
	env   string
	def   string
	arg   string // placeholder in the usage text
	usage string
	apply func(c *config, v string) error
}

var settings = []setting{
	{"addr", "SESSIOND_ADDR", "127.0.0.1:8080", "host:port",
		"address to listen on (port 0 picks a free one; the log says which)",
		func(c *config, v string) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			c.Addr = v
			return nil
		}},
	{"data", "SESSIOND_DATA", "./data", "dir",
		"data folder, created if missing",
		func(c *config, v string) error {
			if v == "" {
				return errors.New("must not be empty")
			}
			c.Data = v
			return nil
		}},
	{"durability", "SESSIOND_DURABILITY", "full", "normal|full",
		"normal survives a process crash; full also survives power loss",
		func(c *config, v string) error {
			d, err := objects.ParseDurability(v)
			if err != nil {
				return fmt.Errorf("%q: want normal or full", v)
			}
			c.Durability = d
			return nil
		}},
	{"idle-timeout", "SESSIOND_IDLE_TIMEOUT", objects.DefaultIdleTimeout.String(), "duration",
		"how long an idle object stays in memory before it hibernates",
		func(c *config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("%q: want a positive duration such as 10s", v)
			}
			c.IdleTimeout = d
			return nil
		}},
	{"max-open", "SESSIOND_MAX_OPEN", strconv.Itoa(objects.DefaultMaxOpen), "n",
		"most object databases open at once (about 3 file descriptors each)",
		func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("%q: want a positive integer", v)
			}
			c.MaxOpen = n
			return nil
		}},
	{"max-streams-per-owner", "SESSIOND_MAX_STREAMS_PER_OWNER", strconv.Itoa(session.DefaultMaxStreamsPerOwner), "n",
		"most WebSockets and event streams one owner may hold open at once (0: no limit)",
		func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q: want 0 or a positive integer", v)
			}
			c.MaxStreams = n
			return nil
		}},
	{"offline-tps", "SESSIOND_OFFLINE_TPS", "30", "n",
		"words per second the built-in offline model streams (0: as fast as it can)",
		func(c *config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f >= 0 && f <= 1e6) { // NaN fails every comparison
				return fmt.Errorf("%q: want a number from 0 to 1000000", v)
			}
			c.OfflineTPS = f
			return nil
		}},
	{"flush-interval", "SESSIOND_FLUSH_INTERVAL", session.DefaultViewerOptions().FlushInterval.String(), "duration",
		"least time between two writes to a WebSocket viewer: deltas arriving meanwhile go out together (0: each at once)",
		func(c *config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > time.Second {
				return fmt.Errorf("%q: want a duration from 0 to 1s, such as 5ms", v)
			}
			c.FlushInterval = d
			return nil
		}},
	{"flush-bytes", "SESSIOND_FLUSH_BYTES", strconv.Itoa(streaming.DefaultFlushBytes), "n",
		"queued bytes for a WebSocket viewer that are written without waiting for --flush-interval",
		func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > 32<<20 {
				return fmt.Errorf("%q: want an integer from 1 to 33554432", v)
			}
			c.FlushBytes = n
			return nil
		}},
	{"openai-base-url", "SESSIOND_OPENAI_BASE_URL", "", "url",
		"an OpenAI-compatible endpoint (e.g. http://127.0.0.1:11434/v1); with it, its model is the default",
		func(c *config, v string) error {
			if v != "" && !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") {
				return fmt.Errorf("%q: want an http:// or https:// URL", v)
			}
			c.OpenAIBaseURL = v
			return nil
		}},
	{"openai-api-key", "SESSIOND_OPENAI_API_KEY", "", "key",
		"API key of the OpenAI-compatible endpoint (prefer the environment variable)",
		func(c *config, v string) error { c.OpenAIKey = v; return nil }},
	{"openai-model", "SESSIOND_OPENAI_MODEL", "", "name",
		"upstream model name of the endpoint, e.g. gpt-4o-mini or llama3.1",
		func(c *config, v string) error { c.OpenAIModel = v; return nil }},
	{"models", "SESSIOND_MODELS", "", "file",
		"JSON file of named models: [{\"name\",\"base_url\",\"api_key_env\",\"model\",\"headers\",\"context_tokens\",\"default\"}]",
		func(c *config, v string) error { c.ModelsFile = v; return nil }},
	{"api-keys", "SESSIOND_API_KEYS", "", "key=owner,…",
		"API keys, comma-separated key=owner pairs; key=owner:admin sees every owner (prefer the environment variable: flags show in process listings). Without keys, auth is off (loopback only)",
		func(c *config, v string) error {
			keys, err := parseAPIKeys(v)
			if err == nil && v != "" && len(keys) == 0 {
				// " , " would otherwise turn auth off.
				err = errors.New("no key=owner pair in it")
			}
			c.APIKeys = keys
			return err
		}},
	{"insecure-no-auth", "SESSIOND_INSECURE_NO_AUTH", "false", "bool",
		"serve a non-loopback address with auth off (everything owned by one local owner): only behind your own authenticating proxy",
		func(c *config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			c.InsecureNoAuth = b
			return nil
		}},
	{"allowed-origins", "SESSIOND_ALLOWED_ORIGINS", "", "host,…",
		"other origins (host patterns such as app.example.com or *.example.com) whose pages may use the API from the browser (CORS) and open WebSockets; loopback origins always may",
		func(c *config, v string) error {
			c.AllowedOrigins = nil
			for _, o := range strings.Split(v, ",") {
				if o = strings.TrimSpace(o); o != "" {
					c.AllowedOrigins = append(c.AllowedOrigins, o)
				}
			}
			return nil
		}},
	{"nats-url", "SESSIOND_NATS_URL", "", "url",
		"an external NATS deployment with JetStream (nats://host:4222,…); empty runs NATS embedded, stored under the data folder",
		func(c *config, v string) error {
			if err := checkNATSURLs(v); err != nil {
				return err
			}
			c.NATSURL = v
			return nil
		}},
	{"nats-listen", "SESSIOND_NATS_LISTEN", "", "host:port",
		"embedded NATS: also listen here for other clients such as the nats CLI (unauthenticated: keep it on loopback)",
		func(c *config, v string) error {
			if v != "" {
				if err := checkHostPort(v); err != nil {
					return err
				}
			}
			c.NATSListen = v
			return nil
		}},
	{"nats-sync", "SESSIOND_NATS_SYNC", "2m", "always|duration",
		"embedded NATS: how often JetStream fsyncs; an acknowledged event survives a crash at once but power loss only after the sync (always: fsync each)",
		func(c *config, v string) error {
			if v != "always" {
				if d, err := time.ParseDuration(v); err != nil || d <= 0 {
					return fmt.Errorf("%q: want always or a positive duration", v)
				}
			}
			c.NATSSync = v
			return nil
		}},
	{"nats-dedup-window", "SESSIOND_NATS_DEDUP_WINDOW", "", "duration",
		"how long the event stream remembers event ids, so that an event published again within it (after a crash or a retry) is stored once; longer costs memory and CPU under load. Unset: the existing stream's own window, " + natsbus.DefaultDuplicateWindow.String() + " for a stream sessiond creates",
		func(c *config, v string) error {
			if v == "" {
				c.NATSDedup = 0 // the stream's own, or natsbus's default
				return nil
			}
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > 24*time.Hour {
				return fmt.Errorf("%q: want a duration from 1s to 24h", v)
			}
			c.NATSDedup = d
			return nil
		}},
	{"nats-creds", "SESSIOND_NATS_CREDS", "", "file", "external NATS: credentials file",
		func(c *config, v string) error { c.NATSCreds = v; return nil }},
	{"nats-user", "SESSIOND_NATS_USER", "", "user", "external NATS: user name",
		func(c *config, v string) error { c.NATSUser = v; return nil }},
	{"nats-password", "SESSIOND_NATS_PASSWORD", "", "password", "external NATS: password (prefer the environment variable)",
		func(c *config, v string) error { c.NATSPassword = v; return nil }},
	{"nats-token", "SESSIOND_NATS_TOKEN", "", "token", "external NATS: token (prefer the environment variable)",
		func(c *config, v string) error { c.NATSToken = v; return nil }},
	{"nats-tls-ca", "SESSIOND_NATS_TLS_CA", "", "file", "external NATS: CA certificate file",
		func(c *config, v string) error { c.NATSTLSCA = v; return nil }},
	{"nats-tls-cert", "SESSIOND_NATS_TLS_CERT", "", "file", "external NATS: client certificate file",
		func(c *config, v string) error { c.NATSTLSCert = v; return nil }},
	{"nats-tls-key", "SESSIOND_NATS_TLS_KEY", "", "file", "external NATS: client key file",
		func(c *config, v string) error { c.NATSTLSKey = v; return nil }},
	{"events", "SESSIOND_EVENTS", "true", "bool",
		"publish session lifecycle events (docs/events.md)",
		func(c *config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			c.Events = b
			return nil
		}},
	{"log-level", "SESSIOND_LOG_LEVEL", "info", "level",
		"debug, info, warn or error",
		func(c *config, v string) error {
			l, ok := logLevels[strings.ToLower(v)]
			if !ok {
				return fmt.Errorf("%q: want debug, info, warn or error", v)
			}
			c.LogLevel = l
			return nil
		}},
	{"log-format", "SESSIOND_LOG_FORMAT", "text", "text|json",
		"log line format, written to stderr",
		func(c *config, v string) error {
			switch v = strings.ToLower(v); v {
			case "text", "json":
				c.LogFormat = v
				return nil
			}
			return fmt.Errorf("%q: want text or json", v)
		}},
	{"gc-floor", "SESSIOND_GC_FLOOR", "128", "MiB",
		"the garbage collector lets the heap grow to at least this many MiB before it collects (0: GOGC alone)",
		func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1<<20 {
				return fmt.Errorf("%q: want a number of MiB from 0 to 1048576", v)
			}
			c.GCFloorMiB = n
			return nil
		}},
	{"debug-addr", "SESSIOND_DEBUG_ADDR", "", "host:port",
		"serve Go's profiler (net/http/pprof) on this address, without authentication: keep it on loopback (it answers requests to loopback names only); empty = off",
		func(c *config, v string) error {
			if v != "" {
				if err := checkHostPort(v); err != nil {
					return err
				}
			}
			c.DebugAddr = v
			return nil
		}},
}

// checkHostPort checks a listen address: host:port with a port number from
// 0 to 65535 (net.Listen would take 99999 as far as parsing goes and fail
// only when sessiond is already starting).
func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: want host:port with a port number from 0 to 65535", v)
	}
	return nil
}

// checkNATSURLs checks a comma-separated list of NATS server URLs as the
// NATS client will read them (a URL without a scheme is nats://): a scheme
// it speaks, a host, and a port number if there is one. The error does
// not repeat the URL, which may hold a password.
func checkNATSURLs(v string) error {
	if v != "" && strings.Trim(v, ", \t") == "" {
		// A list of nothing, not the empty value (NATS embedded).
		return errors.New("no URL in it (want nats://host:port,…)")
	}
	for i, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "://") {
			item = "nats://" + item
		}
		u, err := url.Parse(item)
		if err != nil {
			return fmt.Errorf("URL %d of the list is not a URL (want nats://host:port,…)", i+1)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("URL %d of the list has scheme %q: want nats, tls, ws or wss", i+1, u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("URL %d of the list names no host (want nats://host:port,…)", i+1)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
				return fmt.Errorf("URL %d of the list has port %q: want a number from 1 to 65535", i+1, p)
			}
		}
	}
	return nil
}

// parseAPIKeys parses "key=owner,key2=owner2:admin".
func parseAPIKeys(v string) (map[string]keySpec, error) {
	out := map[string]keySpec{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		// The owner follows the last "=": a key may end in base64's padding.
		i := strings.LastIndexByte(item, '=')
		key, owner, ok := item[:max(i, 0)], item[i+1:], i >= 0
		if !ok || len(key) < 16 || owner == "" {
			return nil, errors.New("want comma-separated key=owner pairs, each key at least 16 characters")
		}
		if strings.IndexFunc(key, unicode.IsSpace) >= 0 {
			// A key that ends in a space can never match: HTTP drops
			// the spaces around a header's value. Never echo it.
			return nil, errors.New("a key holds a space: keys are written without spaces, key=owner")
		}
		if strings.TrimSpace(owner) != owner {
			return nil, fmt.Errorf("owner %q: spaces around an owner's name would make it another owner than the one meant", owner)
		}
		spec := keySpec{Owner: owner}
		if o, ok := strings.CutSuffix(owner, ":admin"); ok {
			spec = keySpec{Owner: o, Admin: true}
		}
		if strings.Contains(spec.Owner, ":") {
			// A mistyped role must not become part of an owner's name
			// (and a key without the admin it was meant to have).
			return nil, fmt.Errorf("owner %q: a colon separates the owner from its role, and the only role is admin (key=owner:admin)", owner)
		}
		if err := objects.ValidateName(spec.Owner); err != nil {
			return nil, fmt.Errorf("owner %q: %w", spec.Owner, err)
		}
		if _, dup := out[key]; dup {
			return nil, errors.New("a key is listed twice")
		}
		out[key] = spec
	}
	return out, nil
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// isBoolFlag reports whether f takes no value of its own (--flag means
// true).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// usageError is a bad flag, argument or setting: main exits with code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

// parseConfig resolves every setting: a flag given in args wins, then a
// non-empty environment variable, then the default. It returns flag.ErrHelp
// for -h/--help and a *usageError for anything it cannot accept; an error
// names where the bad value came from.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	fs := flag.NewFlagSet("sessiond", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the caller prints errors and usage
	vals := make(map[string]*string, len(settings))
	for _, s := range settings {
		v := &stringValue{s: s.def, isBool: s.arg == "bool"}
		fs.Var(v, s.flag, s.usage)
		vals[s.flag] = &v.s
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, &usageError{err}
	}
	if fs.NArg() > 0 {
		// "--events false": a true/false flag takes its value after "="
		// only (Go's flag package); say so rather than leave it a puzzle.
		if i := len(args) - fs.NArg(); i > 0 {
			name := strings.TrimLeft(args[i-1], "-")
			if f := fs.Lookup(name); f != nil && isBoolFlag(f) && (fs.Arg(0) == "true" || fs.Arg(0) == "false") {
				return config{}, usageErrorf("unexpected argument %q: give a true/false flag its value with =, as --%s=%s", fs.Arg(0), name, fs.Arg(0))
			}
		}
		return config{}, usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var c config
	// set holds, for each setting given a non-empty value by a flag or a
	// variable, where it came from: the checks below name it.
	set := make(map[string]string)
	for _, s := range settings {
		v, from, explicit := s.def, "default of --"+s.flag, false
		if given[s.flag] {
			v, from, explicit = *vals[s.flag], "--"+s.flag, true
		} else if e := getenv(s.env); e != "" {
			v, from, explicit = e, s.env, true
		}
		if err := s.apply(&c, v); err != nil {
			if s.flag == "api-keys" { // never echo a key
				from = strings.Split(from, " ")[0]
			}
			return config{}, usageErrorf("%s: %w", from, err)
		}
		if explicit && v != "" {
			set[s.flag] = from
		}
	}
	c.from = set
	// Settings that only mean something with another are refused without
	// it: ignored, they would leave sessiond running other than intended
	// (on the offline model, say) with nothing to tell why.
	if c.OpenAIBaseURL != "" && c.OpenAIModel == "" {
		return config{}, usageErrorf("%s needs --openai-model (SESSIOND_OPENAI_MODEL: the upstream model name)", c.source("openai-base-url"))
	}
	if c.OpenAIBaseURL == "" {
		for _, f := range []string{"openai-model", "openai-api-key"} {
			from, ok := set[f]
			// A models file may read the key's variable (api_key_env).
			if ok && !(f == "openai-api-key" && c.ModelsFile != "" && !strings.HasPrefix(from, "--")) {
				return config{}, usageErrorf("%s needs --openai-base-url (SESSIOND_OPENAI_BASE_URL): without an endpoint it is not used", from)
			}
		}
	}
	if c.NATSURL != "" {
		for _, f := range []string{"nats-listen", "nats-sync"} {
			if from, ok := set[f]; ok {
				return config{}, usageErrorf("%s is for the embedded NATS; it cannot go with --nats-url", from)
			}
		}
		// What the NATS client would refuse only when it connects, after
		// the data folder is locked and the port bound.
		if from, ok := set["nats-password"]; ok && c.NATSUser == "" {
			return config{}, usageErrorf("%s needs --nats-user (SESSIOND_NATS_USER)", from)
		}
		n := 0
		for _, f := range []string{"nats-creds", "nats-user", "nats-token"} {
			if _, ok := set[f]; ok {
				n++
			}
		}
		if n > 1 {
			return config{}, usageErrorf("give one of --nats-creds, --nats-user (with --nats-password) and --nats-token, not several")
		}
		if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
			return config{}, usageErrorf("--nats-tls-cert and --nats-tls-key go together")
		}
	} else {
		for _, f := range []string{"nats-creds", "nats-user", "nats-password", "nats-token", "nats-tls-ca", "nats-tls-cert", "nats-tls-key"} {
			if from, ok := set[f]; ok {
				return config{}, usageErrorf("%s is for an external NATS: it needs --nats-url (SESSIOND_NATS_URL)", from)
			}
		}
	}
	if len(c.APIKeys) == 0 && !c.InsecureNoAuth && !isLoopback(c.Addr) {
		return config{}, usageErrorf("refusing to listen on %s with no API keys: anyone who can reach it could read and write every session. "+
			"Set --api-keys (SESSIOND_API_KEYS), listen on 127.0.0.1, or pass --insecure-no-auth if a proxy in front authenticates", c.Addr)
	}
	return c, nil
}

// isLoopback reports whether addr's host only accepts local connections.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// printUsage writes the help text: every flag with its variable and default.
func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: sessiond [flags]

sessiond serves durable LLM agent sessions over HTTP.
Flags override environment variables, which override defaults.

`)
	for _, s := range settings {
		def := ""
		if s.def != "" {
			def = ", default " + s.def
		}
		fmt.Fprintf(w, "  --%s %s\n        %s (env %s%s)\n", s.flag, s.arg, s.usage, s.env, def)
	}
}

// stringValue is a flag's raw text; settings with arg "bool" may be given
// without a value (--insecure-no-auth means true), like flag.Bool.
type stringValue struct {
	s      string
	isBool bool
}

func (v *stringValue) String() string     { return v.s }
func (v *stringValue) Set(s string) error { v.s = s; return nil }
func (v *stringValue) IsBoolFlag() bool   { return v.isBool }

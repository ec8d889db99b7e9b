package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"sessiond/objects"
)

// config is sessiond's settings, resolved from flags, then environment
// variables, then defaults.
type config struct {
	Addr        string             // listen address, host:port
	Data        string             // data folder: index.db and objects/
	Durability  objects.Durability // commit durability of every database
	IdleTimeout time.Duration      // how long an idle object stays in memory
	MaxOpen     int                // cap on open object databases
	LogLevel    slog.Level
	LogFormat   string // "text" or "json"
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
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("want host:port: %w", err)
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
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
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
		vals[s.flag] = fs.String(s.flag, s.def, s.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, &usageError{err}
	}
	if fs.NArg() > 0 {
		return config{}, usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var c config
	for _, s := range settings {
		v, from := s.def, "default of --"+s.flag
		if given[s.flag] {
			v, from = *vals[s.flag], "--"+s.flag
		} else if e := getenv(s.env); e != "" {
			v, from = e, s.env
		}
		if err := s.apply(&c, v); err != nil {
			return config{}, usageErrorf("%s: %w", from, err)
		}
	}
	return c, nil
}

// printUsage writes the help text: every flag with its variable and default.
func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: sessiond [flags]

sessiond serves durable LLM agent sessions over HTTP.
Flags override environment variables, which override defaults.

`)
	for _, s := range settings {
		fmt.Fprintf(w, "  --%s %s\n        %s (env %s, default %s)\n", s.flag, s.arg, s.usage, s.env, s.def)
	}
}

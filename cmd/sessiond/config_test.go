package main

import (
	"errors"
	"flag"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"sessiond/objects"
)

func TestParseConfig(t *testing.T) {
	defaults := config{
		Addr:          "127.0.0.1:8080",
		Data:          "./data",
		Durability:    objects.DurabilityFull,
		IdleTimeout:   10 * time.Second,
		MaxOpen:       2000,
		MaxStreams:    10_000,
		LogLevel:      slog.LevelInfo,
		LogFormat:     "text",
		OfflineTPS:    30,
		FlushInterval: 5 * time.Millisecond,
		FlushBytes:    16 << 10,
		APIKeys:       map[string]keySpec{},
		NATSSync:      "2m",
		Events:        true,
		GCFloorMiB:    128,
	}
	with := func(f func(c *config)) config {
		c := defaults
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string // substring; empty means success
	}{
		{name: "defaults", want: defaults},
		{
			name: "every flag",
			args: []string{"--addr", ":9000", "--data=/srv/s", "--durability", "NORMAL", "--idle-timeout", "1m30s",
				"--max-open", "5", "--max-streams-per-owner", "0", "--log-level", "debug", "--log-format", "json", "--insecure-no-auth", "--offline-tps", "0",
				"--allowed-origins", "a.example, *.b.example", "--flush-interval", "0", "--flush-bytes", "4096", "--gc-floor", "0", "--nats-dedup-window", "20s"},
			want: config{Addr: ":9000", Data: "/srv/s", Durability: objects.DurabilityNormal, IdleTimeout: 90 * time.Second,
				FlushInterval: 0, FlushBytes: 4096, MaxOpen: 5, MaxStreams: 0, LogLevel: slog.LevelDebug, LogFormat: "json", InsecureNoAuth: true, APIKeys: map[string]keySpec{},
				NATSSync: "2m", NATSDedup: 20 * time.Second, Events: true, GCFloorMiB: 0,
				AllowedOrigins: []string{"a.example", "*.b.example"}},
		},
		{
			name: "every variable",
			env: map[string]string{"SESSIOND_ADDR": "0.0.0.0:1", "SESSIOND_DATA": "d", "SESSIOND_DURABILITY": "normal",
				"SESSIOND_IDLE_TIMEOUT": "250ms", "SESSIOND_MAX_OPEN": "7", "SESSIOND_MAX_STREAMS_PER_OWNER": "50", "SESSIOND_LOG_LEVEL": "warn",
				"SESSIOND_LOG_FORMAT": "json", "SESSIOND_API_KEYS": "0123456789abcdef=alice, fedcba9876543210=root:admin, q1w2e3r4t5y6u7i8o9p0==bob",
				"SESSIOND_OFFLINE_TPS": "12.5", "SESSIOND_OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "SESSIOND_OPENAI_MODEL": "llama3.1",
				"SESSIOND_FLUSH_INTERVAL": "40ms", "SESSIOND_FLUSH_BYTES": "65536", "SESSIOND_GC_FLOOR": "512"},
			want: config{Addr: "0.0.0.0:1", Data: "d", Durability: objects.DurabilityNormal, IdleTimeout: 250 * time.Millisecond,
				MaxOpen: 7, MaxStreams: 50, LogLevel: slog.LevelWarn, LogFormat: "json", OfflineTPS: 12.5, FlushInterval: 40 * time.Millisecond, FlushBytes: 64 << 10,
				OpenAIBaseURL: "http://127.0.0.1:11434/v1", OpenAIModel: "llama3.1", NATSSync: "2m", Events: true, GCFloorMiB: 512,
				APIKeys: map[string]keySpec{"0123456789abcdef": {Owner: "alice"}, "fedcba9876543210": {Owner: "root", Admin: true},
					"q1w2e3r4t5y6u7i8o9p0=": {Owner: "bob"}}}, // base64 padding stays with the key
		},
		{
			name: "flag beats variable",
			args: []string{"-max-open=3"},
			env:  map[string]string{"SESSIOND_MAX_OPEN": "9", "SESSIOND_LOG_LEVEL": "error"},
			want: with(func(c *config) { c.MaxOpen = 3; c.LogLevel = slog.LevelError }),
		},
		{
			name: "empty variable means unset",
			env:  map[string]string{"SESSIOND_DATA": ""},
			want: defaults,
		},
		{
			name:    "bad flag value is not hidden by a good variable",
			args:    []string{"--durability", "maybe"},
			env:     map[string]string{"SESSIOND_DURABILITY": "normal"},
			wantErr: `--durability: "maybe": want normal or full`,
		},
		{name: "bad variable", env: map[string]string{"SESSIOND_IDLE_TIMEOUT": "10"}, wantErr: "SESSIOND_IDLE_TIMEOUT: \"10\": want a positive duration"},
		{name: "negative duration", args: []string{"--idle-timeout=-1s"}, wantErr: "--idle-timeout"},
		{name: "zero max-open", args: []string{"--max-open", "0"}, wantErr: "--max-open: \"0\": want a positive integer"},
		{name: "negative max-streams-per-owner", args: []string{"--max-streams-per-owner", "-1"}, wantErr: "want 0 or a positive integer"},
		{name: "not a number", env: map[string]string{"SESSIOND_MAX_OPEN": "lots"}, wantErr: "SESSIOND_MAX_OPEN"},
		{name: "bad level", args: []string{"--log-level", "trace"}, wantErr: "--log-level"},
		{name: "bad format", args: []string{"--log-format", "xml"}, wantErr: "--log-format"},
		{name: "addr without port", args: []string{"--addr", "localhost"}, wantErr: "--addr: want host:port"},
		{name: "addr port too large", args: []string{"--addr", "127.0.0.1:99999"}, wantErr: `--addr: "127.0.0.1:99999": want host:port with a port number from 0 to 65535`},
		{name: "addr port not a number", env: map[string]string{"SESSIOND_ADDR": "127.0.0.1:http"}, wantErr: "SESSIOND_ADDR: \"127.0.0.1:http\": want host:port with a port number"},
		{name: "addr empty port", args: []string{"--addr", "127.0.0.1:"}, wantErr: "--addr"},
		{name: "nats listen port too large", args: []string{"--nats-listen", "127.0.0.1:65536"}, wantErr: "--nats-listen: \"127.0.0.1:65536\""},
		{name: "debug addr negative port", args: []string{"--debug-addr", "127.0.0.1:-1"}, wantErr: "--debug-addr"},
		{name: "empty data", args: []string{"--data="}, wantErr: "--data: must not be empty"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "flag provided but not defined: -nope"},
		{name: "missing value", args: []string{"--addr"}, wantErr: "flag needs an argument"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "public address without keys", args: []string{"--addr", "0.0.0.0:8080"}, wantErr: "refusing to listen on 0.0.0.0:8080 with no API keys"},
		{name: "short key", env: map[string]string{"SESSIOND_API_KEYS": "abc=alice"}, wantErr: "at least 16 characters"},
		{name: "key without owner", env: map[string]string{"SESSIOND_API_KEYS": "0123456789abcdef"}, wantErr: "key=owner"},
		{name: "unknown role", env: map[string]string{"SESSIOND_API_KEYS": "0123456789abcdef=alice:root"}, wantErr: "the only role is admin"},
		{name: "role with a space", env: map[string]string{"SESSIOND_API_KEYS": "0123456789abcdef=alice: admin"}, wantErr: "the only role is admin"},
		{name: "role twice", env: map[string]string{"SESSIOND_API_KEYS": "0123456789abcdef=alice:admin:admin"}, wantErr: "the only role is admin"},
		{name: "key ending in a space", env: map[string]string{"SESSIOND_API_KEYS": "0123456789abcdef =alice"}, wantErr: "a key holds a space"},
		{name: "key with a space", env: map[string]string{"SESSIOND_API_KEYS": "01234567 89abcdef=alice"}, wantErr: "a key holds a space"},
		{name: "owner after a space", env: map[string]string{"SESSIOND_API_KEYS": "0123456789abcdef= bob"}, wantErr: `owner " bob": spaces around`},
		{name: "endpoint without model", env: map[string]string{"SESSIOND_OPENAI_BASE_URL": "http://x/v1"}, wantErr: "SESSIOND_OPENAI_BASE_URL needs --openai-model"},
		{name: "endpoint flag without model", args: []string{"--openai-base-url", "http://x/v1"}, wantErr: "--openai-base-url needs --openai-model"},
		{name: "bad tps", args: []string{"--offline-tps", "-1"}, wantErr: "--offline-tps"},
		{name: "tps not a number", args: []string{"--offline-tps", "NaN"}, wantErr: `--offline-tps: "NaN": want a number from 0 to 1000000`},
		{name: "tps infinite", env: map[string]string{"SESSIOND_OFFLINE_TPS": "+Inf"}, wantErr: "SESSIOND_OFFLINE_TPS"},
		{name: "tps negative infinite", args: []string{"--offline-tps", "-inf"}, wantErr: "--offline-tps"},
		{name: "bool flag value after a space", args: []string{"--events", "false"}, wantErr: `unexpected argument "false": give a true/false flag its value with =, as --events=false`},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "nats url not a url", args: []string{"--nats-url", "not a url"}, wantErr: "--nats-url: URL 1 of the list"},
		{name: "nats url port too large", args: []string{"--nats-url", "nats://:99999"}, wantErr: "--nats-url: URL 1 of the list names no host"},
		{name: "nats url bad port", args: []string{"--nats-url", "nats://a:4222, nats://b:99999"}, wantErr: "--nats-url: URL 2 of the list has port \"99999\""},
		{name: "nats url scheme", args: []string{"--nats-url", "http://a:4222"}, wantErr: "scheme \"http\""},
		{name: "nats url password not echoed", args: []string{"--nats-url", "nats://u:s3cret@a:0"}, wantErr: "URL 1 of the list has port \"0\""},
		{name: "nats url list without a url", args: []string{"--nats-url", " , "}, wantErr: "--nats-url: no URL in it"},
		{name: "nats listen with url", args: []string{"--nats-url", "nats://x:4222", "--nats-listen", "127.0.0.1:4222"}, wantErr: "cannot go with --nats-url"},
		{name: "negative flush interval", args: []string{"--flush-interval", "-5ms"}, wantErr: "--flush-interval"},
		{name: "flush interval too long", args: []string{"--flush-interval", "2s"}, wantErr: "want a duration from 0 to 1s"},
		{name: "zero flush bytes", env: map[string]string{"SESSIOND_FLUSH_BYTES": "0"}, wantErr: "SESSIOND_FLUSH_BYTES"},
		{name: "negative gc floor", args: []string{"--gc-floor", "-1"}, wantErr: "--gc-floor: \"-1\": want a number of MiB"},
		{name: "gc floor with a unit", env: map[string]string{"SESSIOND_GC_FLOOR": "128MiB"}, wantErr: "SESSIOND_GC_FLOOR"},
		{name: "dedup window too short", args: []string{"--nats-dedup-window", "500ms"}, wantErr: "--nats-dedup-window: \"500ms\": want a duration from 1s to 24h"},
		{name: "bad nats sync", args: []string{"--nats-sync", "sometimes"}, wantErr: "--nats-sync"},
		{name: "model without endpoint", env: map[string]string{"SESSIOND_OPENAI_MODEL": "gpt-4o-mini"}, wantErr: "SESSIOND_OPENAI_MODEL needs --openai-base-url"},
		{name: "endpoint key without endpoint", args: []string{"--openai-api-key", "sk-x"}, wantErr: "--openai-api-key needs --openai-base-url"},
		{name: "endpoint key variable without endpoint", env: map[string]string{"SESSIOND_OPENAI_API_KEY": "sk-x"}, wantErr: "SESSIOND_OPENAI_API_KEY needs --openai-base-url"},
		{
			name: "endpoint key variable read by a models file",
			args: []string{"--models", "m.json"},
			env:  map[string]string{"SESSIOND_OPENAI_API_KEY": "sk-x"},
			want: with(func(c *config) { c.ModelsFile, c.OpenAIKey = "m.json", "sk-x" }),
		},
		{name: "nats password without user", args: []string{"--nats-url", "nats://x:4222"}, env: map[string]string{"SESSIOND_NATS_PASSWORD": "p"}, wantErr: "SESSIOND_NATS_PASSWORD needs --nats-user"},
		{name: "nats creds and token", args: []string{"--nats-url", "nats://x:4222", "--nats-creds", "a.creds", "--nats-token", "t"}, wantErr: "give one of --nats-creds"},
		{name: "nats tls cert without key", args: []string{"--nats-url", "nats://x:4222", "--nats-tls-cert", "c.pem"}, wantErr: "--nats-tls-cert and --nats-tls-key go together"},
		{name: "blank api keys", env: map[string]string{"SESSIOND_API_KEYS": " , "}, wantErr: "SESSIOND_API_KEYS: no key=owner pair in it"},
		{name: "nats sync with url", args: []string{"--nats-url", "nats://x:4222", "--nats-sync", "always"}, wantErr: "--nats-sync is for the embedded NATS"},
		{name: "nats sync variable with url", args: []string{"--nats-url", "nats://x:4222"}, env: map[string]string{"SESSIOND_NATS_SYNC": "1s"}, wantErr: "SESSIOND_NATS_SYNC is for the embedded NATS"},
		{name: "nats token without url", args: []string{"--nats-token", "t"}, wantErr: "--nats-token is for an external NATS: it needs --nats-url"},
		{name: "nats user without url", env: map[string]string{"SESSIOND_NATS_USER": "u"}, wantErr: "SESSIOND_NATS_USER is for an external NATS"},
		{name: "nats password without url", env: map[string]string{"SESSIOND_NATS_PASSWORD": "p"}, wantErr: "SESSIOND_NATS_PASSWORD is for an external NATS"},
		{name: "nats creds without url", args: []string{"--nats-creds", "a.creds"}, wantErr: "--nats-creds is for an external NATS"},
		{name: "nats tls ca without url", args: []string{"--nats-tls-ca", "ca.pem"}, wantErr: "--nats-tls-ca is for an external NATS"},
		{name: "nats tls cert without url", args: []string{"--nats-tls-cert", "c.pem"}, wantErr: "--nats-tls-cert is for an external NATS"},
		{name: "nats tls key without url", env: map[string]string{"SESSIOND_NATS_TLS_KEY": "k.pem"}, wantErr: "SESSIOND_NATS_TLS_KEY is for an external NATS"},
		{
			name: "external nats with credentials",
			args: []string{"--nats-url", "tls://n1:4222,tls://n2:4222", "--nats-user", "u", "--nats-tls-ca", "ca.pem"},
			env:  map[string]string{"SESSIOND_NATS_PASSWORD": "p"},
			want: with(func(c *config) {
				c.NATSURL, c.NATSUser, c.NATSPassword, c.NATSTLSCA = "tls://n1:4222,tls://n2:4222", "u", "p", "ca.pem"
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) {
					t.Fatalf("err=%v (%T), want a *usageError", err, err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err=%q, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.from = nil // where each value came from: checked by the messages above
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("config=%+v\n want %+v", got, tt.want)
			}
		})
	}
}

func TestParseConfigHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		if _, err := parseConfig([]string{arg}, func(string) string { return "" }); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s: err=%v, want flag.ErrHelp", arg, err)
		}
	}
}

// The usage text is generated from the settings table: every flag, variable
// and default shows up in it.
func TestUsageListsEverySetting(t *testing.T) {
	var b strings.Builder
	printUsage(&b)
	for _, s := range settings {
		want := []string{"--" + s.flag, s.env}
		if s.def != "" {
			want = append(want, "default "+s.def)
		}
		for _, want := range want {
			if !strings.Contains(b.String(), want) {
				t.Errorf("usage lacks %q:\n%s", want, b.String())
			}
		}
	}
	// A setting without a default says none, rather than "default )".
	if strings.Contains(b.String(), "default )") {
		t.Errorf("usage shows an empty default:\n%s", b.String())
	}
}

// docs/configuration.md documents every setting: its flag, its variable and
// its default.
func TestConfigurationDocListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		row := "| `--" + s.flag + "` | `" + s.env + "` |"
		if !strings.Contains(string(b), row) {
			t.Errorf("docs/configuration.md has no row %q", row)
		}
	}
}

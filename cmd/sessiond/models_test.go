package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildModels(t *testing.T) {
	openaiCfg := config{OpenAIBaseURL: "http://127.0.0.1:11434/v1", OpenAIModel: "llama3.1"}
	tests := []struct {
		name        string
		cfg         config
		file        string // the --models file's content; "" = none
		wantDefault string
		wantErr     string // substring of a *usageError; empty means success
	}{
		{name: "offline alone", wantDefault: "offline"},
		{name: "endpoint is the default", cfg: openaiCfg, wantDefault: "llama3.1"},
		{
			name:        "file with a default",
			file:        `[{"name": "a", "base_url": "http://a/v1"}, {"name": "b", "base_url": "http://b/v1", "default": true, "context_tokens": 8000}]`,
			wantDefault: "b",
		},
		{
			name:        "endpoint and a file without a default",
			cfg:         openaiCfg,
			file:        `[{"name": "a", "base_url": "http://a/v1"}]`,
			wantDefault: "llama3.1",
		},
		{
			name:    "negative context",
			file:    `[{"name": "a", "base_url": "http://a/v1", "context_tokens": -1}]`,
			wantErr: "model a: context_tokens -1: want 0 (unknown) or more",
		},
		{
			name:    "base url without a scheme",
			file:    `[{"name": "a", "base_url": "localhost:11434/v1"}]`,
			wantErr: `model a: new openai model: base url "localhost:11434/v1" is not an absolute http(s) url`,
		},
		{
			name:    "endpoint without a host",
			cfg:     config{OpenAIBaseURL: "http://", OpenAIModel: "m"},
			wantErr: "--openai-base-url: model m:",
		},
		{
			name:    "endpoint named as the offline model, by its variable",
			cfg:     config{OpenAIBaseURL: "http://127.0.0.1:11434/v1", OpenAIModel: "offline", from: map[string]string{"openai-model": "SESSIOND_OPENAI_MODEL"}},
			wantErr: "SESSIOND_OPENAI_MODEL offline:",
		},
		{
			name:    "endpoint named as the offline model",
			cfg:     config{OpenAIBaseURL: "http://127.0.0.1:11434/v1", OpenAIModel: "offline"},
			wantErr: "--openai-model offline:",
		},
		{
			name:    "text after the array",
			file:    `[{"name": "a", "base_url": "http://a/v1"}] trailing`,
			wantErr: "text after the JSON array",
		},
		{
			name:        "white space after the array",
			file:        "[{\"name\": \"a\", \"base_url\": \"http://a/v1\", \"default\": true}]\n\n",
			wantDefault: "a",
		},
		{
			name:    "null",
			file:    " null\n",
			wantErr: "null: the file must hold one array of models",
		},
		{
			name:    "a name with a space at its end",
			file:    `[{"name": "a ", "base_url": "http://a/v1"}]`,
			wantErr: "begins or ends with a space",
		},
		{
			name:    "a name with a control character",
			file:    `[{"name": "a\tb", "base_url": "http://a/v1"}]`,
			wantErr: "control character",
		},
		{
			name:    "a name too long",
			file:    `[{"name": "` + strings.Repeat("n", 257) + `", "base_url": "http://a/v1"}]`,
			wantErr: "more than 256",
		},
		{
			name:        "a name with a slash",
			file:        `[{"name": "meta/llama-3.1", "base_url": "http://a/v1", "default": true}]`,
			wantDefault: "meta/llama-3.1",
		},
		{
			name:    "two defaults",
			file:    `[{"name": "a", "base_url": "http://a/v1", "default": true}, {"name": "b", "base_url": "http://b/v1", "default": true}]`,
			wantErr: "models a and b are both marked default",
		},
		{
			name:    "a default beside the endpoint's",
			cfg:     openaiCfg,
			file:    `[{"name": "a", "base_url": "http://a/v1", "default": true}]`,
			wantErr: "model a is marked default, but the model of --openai-base-url is the default",
		},
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if tt.file != "" {
				cfg.ModelsFile = filepath.Join(t.TempDir(), "models.json")
				if err := os.WriteFile(cfg.ModelsFile, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			reg, err := buildModels(cfg, noEnv, logger)
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err=%v (%T), want a *usageError containing %q", err, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := reg.Default(); got != tt.wantDefault {
				t.Fatalf("default model %q, want %q", got, tt.wantDefault)
			}
		})
	}
}

// SESSIOND_OPENAI_API_KEY beside a models file that does not read it is
// set for nothing: sessiond says so rather than ignore it silently.
func TestBuildModelsWarnsOfAnUnusedKey(t *testing.T) {
	for _, tt := range []struct {
		name, file string
		warn       bool
	}{
		{"not read", `[{"name": "a", "base_url": "http://a/v1", "api_key_env": "OTHER_KEY"}]`, true},
		{"read by a model", `[{"name": "a", "base_url": "http://a/v1", "api_key_env": "SESSIOND_OPENAI_API_KEY"}]`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs strings.Builder
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			cfg := config{OpenAIKey: "sk-x", ModelsFile: filepath.Join(t.TempDir(), "models.json")}
			if err := os.WriteFile(cfg.ModelsFile, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			getenv := func(k string) string { return map[string]string{"OTHER_KEY": "sk-o", openAIKeyEnv: "sk-x"}[k] }
			if _, err := buildModels(cfg, getenv, logger); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "the key is not used"); got != tt.warn {
				t.Fatalf("warned %v, want %v; log:\n%s", got, tt.warn, logs.String())
			}
		})
	}
}

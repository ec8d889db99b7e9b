package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"

	"sessiond/session"
	"sessiond/session/openai"
)

// modelSpec is one entry of the --models file.
type modelSpec struct {
	Name          string            `json:"name"`
	BaseURL       string            `json:"base_url"`
	APIKeyEnv     string            `json:"api_key_env"` // the variable that holds the key: keys stay out of files
	Model         string            `json:"model"`
	Headers       map[string]string `json:"headers"`
	ContextTokens int               `json:"context_tokens"`
	Default       bool              `json:"default"`
}

// openAIKeyEnv is the variable of --openai-api-key.
const openAIKeyEnv = "SESSIOND_OPENAI_API_KEY"

// buildModels returns the model registry: the offline model always, an
// endpoint from --openai-* (then the default), and the --models file, in
// which at most one model may be marked default, and none with --openai-*.
// A model that cannot be used as configured is a *usageError.
func buildModels(cfg config, getenv func(string) string, logger *slog.Logger) (*session.Registry, error) {
	reg := session.NewRegistry()
	if err := reg.Register(session.OfflineModelName, session.NewOfflineModel(cfg.OfflineTPS), session.ModelInfo{}); err != nil {
		return nil, err
	}
	def := session.OfflineModelName
	keyUsed := false // a model of the --models file reads openAIKeyEnv
	if cfg.OpenAIBaseURL != "" {
		m, err := openai.New(openai.Config{BaseURL: cfg.OpenAIBaseURL, APIKey: cfg.OpenAIKey, Model: cfg.OpenAIModel, Logger: logger})
		if err != nil {
			return nil, usageErrorf("%s: model %s: %w", cfg.source("openai-base-url"), cfg.OpenAIModel, err)
		}
		if err := reg.Register(cfg.OpenAIModel, m, session.ModelInfo{}); err != nil {
			return nil, usageErrorf("%s %s: %w (the built-in offline model has that name: choose another)", cfg.source("openai-model"), cfg.OpenAIModel, err)
		}
		def = cfg.OpenAIModel
	}
	if cfg.ModelsFile != "" {
		b, err := os.ReadFile(cfg.ModelsFile)
		if err != nil {
			return nil, usageErrorf("%s: %w", cfg.source("models"), err)
		}
		var specs []modelSpec
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&specs); err != nil {
			return nil, usageErrorf("%s %s: %w", cfg.source("models"), cfg.ModelsFile, err)
		}
		if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
			return nil, usageErrorf("%s %s: null: the file must hold one array of models", cfg.source("models"), cfg.ModelsFile)
		}
		if dec.InputOffset() < int64(len(bytes.TrimRight(b, " \t\r\n"))) {
			return nil, usageErrorf("%s %s: text after the JSON array: the file must hold one array of models", cfg.source("models"), cfg.ModelsFile)
		}
		marked := "" // the model marked default
		for _, s := range specs {
			keyUsed = keyUsed || s.APIKeyEnv == openAIKeyEnv
			if s.Name == "" || s.BaseURL == "" {
				return nil, usageErrorf("%s %s: every model needs a name and a base_url", cfg.source("models"), cfg.ModelsFile)
			}
			if s.ContextTokens < 0 {
				return nil, usageErrorf("%s %s: model %s: context_tokens %d: want 0 (unknown) or more", cfg.source("models"), cfg.ModelsFile, s.Name, s.ContextTokens)
			}
			if s.Default {
				if marked != "" {
					return nil, usageErrorf("%s %s: models %s and %s are both marked default: mark one", cfg.source("models"), cfg.ModelsFile, marked, s.Name)
				}
				if cfg.OpenAIBaseURL != "" {
					return nil, usageErrorf("%s %s: model %s is marked default, but the model of --openai-base-url is the default: unmark it, or drop --openai-base-url", cfg.source("models"), cfg.ModelsFile, s.Name)
				}
				marked = s.Name
			}
			key := ""
			if s.APIKeyEnv != "" {
				if key = getenv(s.APIKeyEnv); key == "" {
					return nil, usageErrorf("%s %s: model %s: %s is not set", cfg.source("models"), cfg.ModelsFile, s.Name, s.APIKeyEnv)
				}
			}
			upstream := s.Model
			if upstream == "" {
				upstream = s.Name
			}
			m, err := openai.New(openai.Config{BaseURL: s.BaseURL, APIKey: key, Model: upstream, Headers: s.Headers, Logger: logger})
			if err != nil {
				return nil, usageErrorf("%s %s: model %s: %w", cfg.source("models"), cfg.ModelsFile, s.Name, err)
			}
			if err := reg.Register(s.Name, m, session.ModelInfo{ContextTokens: s.ContextTokens}); err != nil {
				return nil, usageErrorf("%s %s: %w", cfg.source("models"), cfg.ModelsFile, err)
			}
			if s.Default {
				def = s.Name
			}
		}
	}
	if cfg.OpenAIKey != "" && cfg.OpenAIBaseURL == "" && !keyUsed {
		// config refuses the flag alone; the variable may be set for a
		// models file to read, and this one does not.
		logger.Warn("the key is not used: no model of the models file reads it (api_key_env), and --openai-base-url is not set",
			"variable", openAIKeyEnv, "models", cfg.ModelsFile)
	}
	if err := reg.SetDefault(def); err != nil {
		return nil, err
	}
	return reg, nil
}

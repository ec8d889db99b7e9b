// Package openai implements session.Model for any OpenAI-compatible chat
// completions endpoint (OpenAI, vLLM, Ollama, llama.cpp, LM Studio, …),
// streaming text and tool calls through github.com/sashabaranov/go-openai.
//
// Build one [Model] per configured endpoint and model with [New], and
// register it in a session.Registry:
//
//	m, err := openai.New(openai.Config{BaseURL: "http://localhost:11434/v1", Model: "llama3.1"})
//	if err != nil {
//		return fmt.Errorf("configure model: %w", err)
//	}
//	err = reg.Register("llama3.1", m, session.ModelInfo{ContextTokens: 128_000})
//
// # Concurrency
//
// A Model is safe for concurrent use; each Stream call is independent and
// shares only the HTTP client's connection pool. Stream calls emit from the
// calling goroutine, one delta at a time.
//
// # Errors
//
// Stream returns a *session.ModelError for every failure of the endpoint,
// with a stable Code: "upstream_unauthorized" (401, 403),
// "upstream_rate_limited" (429, after retries), "context_length_exceeded"
// (the prompt does not fit the model), "upstream_timeout" (Timeout,
// FirstTokenTimeout or IdleTimeout exceeded, or 408/504), "invalid_request"
// (the request could not be built) and "upstream_error" (anything else,
// including an error event in the middle of a stream, whose upstream message
// it carries). Status holds the HTTP status when there was one.
//
// Failures with 429, 5xx, a timeout or a broken connection are retried with
// exponential backoff (or after the answer's Retry-After, when longer), but
// only as long as no delta has been emitted: a caller never sees output
// twice. When ctx is cancelled Stream returns
// ctx.Err() with the partial result (finish reason "cancelled"); an error
// returned by emit ends the stream and is returned as is.
package openai

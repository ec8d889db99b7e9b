package natsbus

// RetryDelay exposes the backoff schedule to the external tests.
var RetryDelay = retryDelay

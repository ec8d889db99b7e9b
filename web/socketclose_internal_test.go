package web

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// A socket the session refuses is closed with the code docs/protocol.md
// gives its error: 1013 when a later try may succeed, 1011 for a fault of
// the server's, 1008 for a refusal that stands (clients give up on it).
func TestAcceptCloseStatusAsDocumented(t *testing.T) {
	for code, want := range map[string]websocket.StatusCode{
		"overloaded":      websocket.StatusTryAgainLater,
		"unavailable":     websocket.StatusTryAgainLater,
		"rate_limited":    websocket.StatusTryAgainLater,
		"internal":        websocket.StatusInternalError,
		"not_found":       websocket.StatusPolicyViolation,
		"invalid_request": websocket.StatusPolicyViolation,
		"forbidden":       websocket.StatusPolicyViolation,
	} {
		if got := acceptCloseStatus(code); got != want {
			t.Errorf("acceptCloseStatus(%q) = %d, want %d", code, got, want)
		}
	}
}

// A close reason is cut to the 123 bytes a close frame holds, never
// inside a rune and, where it has spaces, between words, with "…" to say
// so; one that fits is kept whole.
func TestTruncateReasonFitsACloseFrame(t *testing.T) {
	words := "rate_limited: too many open streams: 10000 WebSockets and event streams are open for this owner, the most allowed; close one first"
	for _, c := range []struct {
		in, want string
	}{
		{"", ""},
		{strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{strings.Repeat("a", 124), strings.Repeat("a", 120) + "…"},
		{strings.Repeat("a", 119) + "é" + "xyz", strings.Repeat("a", 119) + "…"}, // é (2 bytes) would end at 121
		{strings.Repeat("€", 50), strings.Repeat("€", 40) + "…"},                 // whole runes only
		{words, "rate_limited: too many open streams: 10000 WebSockets and event streams are open for this owner, the most allowed…"},
	} {
		got := truncateReason(c.in)
		if got != c.want || len(got) > 123 || !utf8.ValidString(got) {
			t.Errorf("truncateReason(%d bytes) = %q (%d bytes), want %q", len(c.in), got, len(got), c.want)
		}
	}
}

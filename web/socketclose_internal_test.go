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
// inside a rune; one that fits is kept whole.
func TestTruncateReasonFitsACloseFrame(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int // bytes kept
	}{
		{"", 0},
		{strings.Repeat("a", 123), 123},
		{strings.Repeat("a", 124), 123},
		{strings.Repeat("a", 122) + "é", 122},  // é (2 bytes) would end at 124
		{strings.Repeat("a", 121) + "é", 123},  // ends at 123 exactly
		{strings.Repeat("a", 121) + "€x", 121}, // € (3 bytes) would end at 124
		{strings.Repeat("€", 50), 123},         // 41 whole runes
		{strings.Repeat("a", 120) + "😀", 120},  // 😀 (4 bytes) would end at 124
	} {
		got := truncateReason(c.in)
		if len(got) != c.want || !strings.HasPrefix(c.in, got) || !utf8.ValidString(got) {
			t.Errorf("truncateReason(%d bytes %q…) = %d bytes, want %d, a valid prefix", len(c.in), c.in[max(0, len(c.in)-6):], len(got), c.want)
		}
	}
}

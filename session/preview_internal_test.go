package session

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPreview(t *testing.T) {
	long := strings.Repeat("word ", 40) // 200 bytes, 39 spaces inside
	for _, c := range []struct{ content, want string }{
		{`"hello"`, "hello"},
		{`"  many   spaces\tand\nlines  "`, "many spaces and lines"},
		{`"caf\u00e9 \"quoted\""`, `café "quoted"`},
		{`[{"type":"text","text":"from parts"},{"type":"image_url","image_url":{"url":"x"}}]`, "from parts"},
		{`""`, ""},
		{`"` + strings.Repeat("a", previewRunes) + `"`, strings.Repeat("a", previewRunes)},
		{`"` + strings.Repeat("a", previewRunes+1) + `"`, strings.Repeat("a", previewRunes) + "…"},
		{`"` + strings.Repeat("é", previewRunes) + `"`, strings.Repeat("é", previewRunes)}, // 280 bytes, 140 runes: whole
		{`"` + strings.Repeat("é", 200) + `"`, strings.Repeat("é", previewRunes) + "…"},
		{`"` + long + `"`, truncateRunes(strings.TrimSpace(long), previewRunes)},
		{`"bad ` + "\xff" + ` utf8"`, "bad \uFFFD utf8"},
	} {
		got := preview(Turn{Content: json.RawMessage(c.content)})
		if got != c.want {
			t.Errorf("preview(%.40s…) = %q, want %q", c.content, got, c.want)
		}
		if n := utf8.RuneCountInString(got); n > previewRunes+1 {
			t.Errorf("preview(%.40s…) is %d runes", c.content, n)
		}
	}
}

// A long plain string is cut on a rune boundary at 4 KiB and previews as
// its decoding does; a 32 MiB one costs no more than that.
func TestPreviewLongPlainStringMatchesDecoding(t *testing.T) {
	for _, pad := range []int{0, 1, 2, 3} {
		text := strings.Repeat("x", pad) + strings.Repeat("日本語 ", 2000)
		content, _ := json.Marshal(text)
		got := preview(Turn{Content: content})
		want := truncateRunes(strings.Join(strings.Fields(text), " "), previewRunes)
		if got != want {
			t.Errorf("pad %d: preview %q, want %q", pad, got, want)
		}
		if s, ok := plainString(content); !ok || !utf8.ValidString(s) || len(s) > 4096 {
			t.Errorf("pad %d: plainString: ok %v, %d bytes, valid %v", pad, ok, len(s), utf8.ValidString(s))
		}
	}
	big := append(append([]byte(`"`), strings.Repeat("y", 32<<20)...), '"')
	if got := preview(Turn{Content: big}); got != strings.Repeat("y", previewRunes)+"…" {
		t.Errorf("32 MiB preview: %.20q… (%d bytes)", got, len(got))
	}
}

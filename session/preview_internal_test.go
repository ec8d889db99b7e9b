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

// A long string with escapes is cut between them, wherever they fall:
// lines of code (an escape every few bytes) used to run the cut below the
// start of the content and panic, failing the post.
func TestPreviewLongEscapedString(t *testing.T) {
	for _, text := range []string{
		strings.Repeat("x := 1\n", 800),
		strings.Repeat("x := 1\n", 800)[3:],
		strings.Repeat(`\\`, 3000),
		strings.Repeat("é\"", 1500),
		strings.Repeat("a", 2045) + "\u2028" + strings.Repeat("b", 3000),
		strings.Repeat("\x01", 2000),
	} {
		content, _ := json.Marshal(text)
		got := preview(Turn{Content: content})
		want := truncateRunes(strings.Join(strings.Fields(text), " "), previewRunes)
		if got != want {
			t.Errorf("preview of %.30q…: %q, want %q", text, got, want)
		}
	}
}

// FuzzPreview: the preview of any text, short or long, never fails, is
// valid UTF-8 of at most previewRunes runes (and "…"), and starts the
// preview of its whole decoding (a long string is previewed from its first
// 2 KiB, which may hold fewer words).
func FuzzPreview(f *testing.F) {
	f.Add("hello", 0)
	f.Add("x := 1\n", 800)
	f.Add(`\"é`+"\u2028\x01", 700)
	f.Fuzz(func(t *testing.T, unit string, n int) {
		n = min(max(n, 1), 5000)
		if len(unit)*n > 1<<16 {
			return
		}
		text := strings.Repeat(unit, n)
		content, _ := json.Marshal(text)
		var decoded string
		if err := json.Unmarshal(content, &decoded); err != nil {
			t.Fatal(err)
		}
		got := preview(Turn{Content: content})
		want := truncateRunes(strings.Join(strings.Fields(decoded), " "), previewRunes)
		if len(content) <= 4096 && got != want {
			t.Fatalf("preview %q, want %q", got, want)
		}
		if !utf8.ValidString(got) || utf8.RuneCountInString(got) > previewRunes+1 || !strings.HasPrefix(want, strings.TrimSuffix(got, "…")) {
			t.Fatalf("preview %q does not start %q", got, want)
		}
	})
}

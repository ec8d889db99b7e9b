package streaming

import (
	"bytes"
	"testing"
)

var jsonStringCases = []string{
	"", "hello", `quote " and \ back`, "tab\tnew\nline\rcr\bbs\fff", "\x00\x01\x1f\x7f",
	"<b>&amp;</b>", "héllo wörld ✓ 😀", "\u2028 line \u2029 para", "bad \xff\xfe utf8 \xc3",
	"mixed \"\u2028\xff\n😀",
}

// The hand-written delta encoding is byte for byte what encoding/json
// writes, for any text.
func TestEncodeDeltaMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonStringCases {
		checkDeltaEncoding(t, "g_1", 42, s)
	}
}

func FuzzEncodeDelta(f *testing.F) {
	for _, s := range jsonStringCases {
		f.Add("g_1", int64(7), s)
	}
	f.Fuzz(func(t *testing.T, gen string, offset int64, text string) {
		checkDeltaEncoding(t, gen, offset, text)
	})
}

func checkDeltaEncoding(t *testing.T, gen string, offset int64, text string) {
	t.Helper()
	got, err := EncodeDelta(gen, offset, Delta{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	want, err := marshal(deltaTextJSON{TypeDelta, gen, offset, text})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("EncodeDelta(%q, %d, %q)\n got %s\nwant %s", gen, offset, text, got, want)
	}
}

package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

var stringCases = []string{
	"", "hello", `quote " and \ back`, "tab\tnew\nline\rcr\bbs\fff", "\x00\x01\x1f\x7f",
	"<b>&amp;</b>", "héllo wörld ✓ 😀", "\u2028 line \u2029 para", "bad \xff\xfe utf8 \xc3",
	"mixed \"\u2028\xff\n😀",
}

// encode is what encoding/json writes for v with HTML escaping off.
func encode(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func checkString(t *testing.T, s string) {
	t.Helper()
	if m, _ := json.Marshal(s); MarshalLen(s) != len(m) {
		t.Fatalf("MarshalLen(%q) = %d, want len(json.Marshal) %d", s, MarshalLen(s), len(m))
	}
	if got, want := String([]byte("x"), s), append([]byte("x"), encode(t, s)...); !bytes.Equal(got, want) {
		t.Fatalf("String(%q)\n got %s\nwant %s", s, got, want)
	}
	if got, want := NullableString(nil, &s), encode(t, &s); !bytes.Equal(got, want) {
		t.Fatalf("NullableString(%q)\n got %s\nwant %s", s, got, want)
	}
}

func TestStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range stringCases {
		checkString(t, s)
	}
}

func FuzzString(f *testing.F) {
	for _, s := range stringCases {
		f.Add(s)
	}
	f.Fuzz(checkString)
}

func TestNullablesMatchEncodingJSON(t *testing.T) {
	if got := NullableString(nil, nil); string(got) != "null" {
		t.Errorf("NullableString(nil) = %s", got)
	}
	for _, n := range []*int64{nil, new(int64(0)), new(int64(-7)), new(int64(1 << 62))} {
		if got, want := NullableInt(nil, n), encode(t, n); !bytes.Equal(got, want) {
			t.Errorf("NullableInt(%v) = %s, want %s", n, got, want)
		}
	}
}

func TestTimeMatchesEncodingJSON(t *testing.T) {
	east := time.FixedZone("east", 5*3600+30*60)
	for _, tm := range []time.Time{
		{},
		time.Date(2026, 12, 6, 23, 40, 1, 0, time.UTC),
		time.Date(2026, 12, 6, 23, 40, 1, 120_000_000, time.UTC),
		time.Date(1999, 1, 2, 3, 4, 5, 123_456_789, east),
		time.Now(),
	} {
		if got, want := Time(nil, tm), encode(t, tm); !bytes.Equal(got, want) {
			t.Errorf("Time(%v) = %s, want %s", tm, got, want)
		}
	}
}

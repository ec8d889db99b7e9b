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

// TestTimeSortsAsTimes: Time writes every time of years 0–9999 in UTC with
// three digits of milliseconds, so the strings are one length and sort as
// the times do (time.Time's MarshalJSON writes ".66Z" for 660 ms, which
// sorts after ".665Z"); what it writes reads back as the time cut to the
// millisecond.
func TestTimeSortsAsTimes(t *testing.T) {
	east := time.FixedZone("east", 5*3600+30*60)
	times := []time.Time{
		{},
		time.Date(1999, 1, 2, 3, 4, 5, 123_456_789, east),
		time.Date(2026, 12, 6, 23, 40, 1, 0, time.UTC),
		time.Date(2026, 12, 6, 23, 40, 1, 600_000_000, time.UTC),
		time.Date(2026, 12, 6, 23, 40, 1, 660_000_000, time.UTC),
		time.Date(2026, 12, 6, 23, 40, 1, 665_000_000, time.UTC),
		time.Date(2026, 12, 6, 23, 40, 1, 665_900_000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
	}
	var prev []byte
	for i, tm := range times {
		got := Time(nil, tm)
		if want := `"` + tm.UTC().Format("2006-01-02T15:04:05.000Z") + `"`; string(got) != want || len(got) != 26 {
			t.Errorf("Time(%v) = %s, want %s", tm, got, want)
		}
		var back time.Time
		if err := json.Unmarshal(got, &back); err != nil || !back.Equal(tm.Truncate(time.Millisecond)) {
			t.Errorf("Time(%v) = %s reads back as %v (%v)", tm, got, back, err)
		}
		if i > 0 && string(prev) > string(got) != tm.Truncate(time.Millisecond).Before(times[i-1].Truncate(time.Millisecond)) {
			t.Errorf("%s and %s do not sort as %v and %v", prev, got, times[i-1], tm)
		}
		prev = got
	}
}

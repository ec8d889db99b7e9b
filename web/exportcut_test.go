package web_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"sessiond/session"
	"sessiond/web"
)

// An export that fails after its first lines (here: the session deleted
// while the client reads) breaks the connection rather than end the body
// as a complete one: the client sees an error, not a shorter export that
// would import as a shorter session.
func TestExportCutShortIsAnError(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	// ~48 MiB of turns: far more than the socket buffers hold, so the
	// export is under way, blocked on the client, when the delete lands.
	const turns, size = 1500, 32 << 10
	var in strings.Builder
	fmt.Fprintf(&in, `{"type":"session","session":{"title":"big","last_turn_id":%d}}`+"\n", turns)
	text := strings.Repeat("x", size)
	for i := 1; i <= turns; i++ {
		fmt.Fprintf(&in, `{"type":"turn","turn":{"id":%d,"role":"user","content":%q}}`+"\n", i, text)
	}
	var sess session.Session
	if st, raw := s.do(t, "POST", "/v1/sessions/import", in.String(), &sess); st != http.StatusCreated {
		t.Fatalf("import: %d %s", st, raw)
	}

	resp, err := http.Get(s.URL + "/v1/sessions/" + sess.ID + "/export")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %d", resp.StatusCode)
	}
	br := bufio.NewReaderSize(resp.Body, 1<<20)
	if _, err := br.ReadString('\n'); err != nil { // the session line
		t.Fatal(err)
	}
	if st, raw := s.do(t, "DELETE", "/v1/sessions/"+sess.ID, nil, nil); st != http.StatusNoContent {
		t.Fatalf("delete: %d %s", st, raw)
	}
	lines := 0
	for {
		_, err = br.ReadString('\n')
		if err != nil {
			break
		}
		lines++
	}
	if lines == turns {
		// 48 MiB cannot fit in the socket buffers and the reader's 1 MiB:
		// the export must have been blocked when the delete landed.
		t.Fatalf("the whole export (%d turns) went out before the delete", lines)
	}
	if errors.Is(err, io.EOF) {
		t.Fatalf("export ended cleanly after %d of %d turns: a client takes it for a whole export", lines, turns)
	}
	t.Logf("export broke off after %d of %d turns: %v", lines, turns, err)
}

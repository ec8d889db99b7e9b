package session

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// The branch walks must read turns by id, never scan the table or sort the
// rows they read: a join of the chain with turns made SQLite scan every
// turn of the session (a branched session's pages then cost O(turns)), and
// a sort holds every row read, content and all, before the first is
// returned.
func TestBranchQueriesNeverScan(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, m := range sessionSchema {
		if _, err := db.Exec(m); err != nil {
			t.Fatal(err)
		}
	}
	for name, q := range map[string]string{"branchStartSQL": branchStartSQL, "branchSQL": branchSQL, "branchAfterSQL": branchAfterSQL} {
		rows, err := db.Query("EXPLAIN QUERY PLAN "+q, 5, 2, 2, 10)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, d := range plan {
			if strings.HasPrefix(d, "SCAN t") || strings.HasPrefix(d, "SCAN turns") || strings.Contains(d, "TEMP B-TREE") {
				t.Errorf("%s: plan step %q reads the table whole or sorts rows:\n%s", name, d, strings.Join(plan, "\n"))
			}
		}
	}
}

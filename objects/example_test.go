package objects_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"sessiond/objects"
)

// A page counter: one object per page, its count in its own database, calls
// to one page run one at a time.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "objects-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	type page struct{ views int64 }
	rt := objects.NewRuntime(dir)
	ns, err := rt.Register("page", objects.Class{
		Migrations: []string{
			`CREATE TABLE views (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
			 INSERT INTO views (id, n) VALUES (1, 0)`,
		},
		// New builds the instance from storage when the object is created or woken.
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			p := &page{}
			return p, tx.QueryRow(ctx, `SELECT n FROM views WHERE id = 1`).Scan(&p.views)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := rt.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	view := func(name string) int64 {
		stub, err := ns.Get(name)
		if err != nil {
			log.Fatal(err)
		}
		n, err := objects.Do(ctx, stub, func(ctx context.Context, p *page, tx *objects.Tx) (int64, error) {
			if _, err := tx.Exec(ctx, `UPDATE views SET n = n + 1 WHERE id = 1`); err != nil {
				return 0, err
			}
			// Memory changes last, in the call itself: the next call of
			// the same batch reads p.views before this one's commit. (A
			// failed commit discards the instance and rebuilds it from
			// storage.) OnCommit is for effects outside the object.
			p.views++
			return p.views, nil
		})
		if err != nil {
			log.Fatal(err)
		}
		return n
	}
	fmt.Println("/home", view("/home"))
	fmt.Println("/home", view("/home"))
	fmt.Println("/about", view("/about"))
	fmt.Println("/home", view("/home"))
	// Output:
	// /home 1
	// /home 2
	// /about 1
	// /home 3
}

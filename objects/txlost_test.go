package objects_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"sessiond/objects"
)

// TestStatementEndingTheTransaction: some statement errors end SQLite's
// whole transaction (here a trigger's RAISE(ROLLBACK)), after which each
// statement commits on its own. A call that went on writing after such an
// error (it swallowed it), and then failed or even returned nil, left its
// later writes committed; in a batch, the calls after it committed theirs
// unflushed. The call must fail and leave nothing, and every other call's
// answer must match what is stored.
func TestStatementEndingTheTransaction(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "raise")
	if _, err := objects.Do(ctx, s, func(ctx context.Context, _ *counter, tx *objects.Tx) (struct{}, error) {
		_, err := tx.Exec(ctx, `CREATE TRIGGER guard BEFORE INSERT ON log WHEN NEW.body = 'guard'
			BEGIN SELECT RAISE(ROLLBACK, 'the guard says no'); END`)
		return struct{}{}, err
	}); err != nil {
		t.Fatal(err)
	}
	// swallow trips the guard, ignores its error, writes row seq, and
	// returns ret.
	swallow := func(seq int, ret error) objects.Func {
		return func(ctx context.Context, _ any, tx *objects.Tx) (any, error) {
			if _, err := tx.Exec(ctx, `INSERT INTO log (seq, body) VALUES (?, 'guard')`, seq+1000); err == nil {
				return nil, errors.New("the guard did not fire")
			}
			tx.Exec(ctx, `INSERT INTO log (seq, body) VALUES (?, 'after')`, seq)
			return nil, ret
		}
	}
	seq := 0
	for _, batched := range []bool{false, true} {
		for _, ret := range []error{errors.New("fails after"), nil} {
			t.Run(fmt.Sprintf("batched=%v/returns=%v", batched, ret), func(t *testing.T) {
				seq += 10
				var errs []error
				if batched {
					errs = queueBatch(t, s, nil, []objects.Func{insertSeq(seq + 1), swallow(seq, ret), insertSeq(seq + 2)})
				} else {
					_, err := s.Call(ctx, swallow(seq, ret))
					errs = []error{nil, err, nil}
				}
				if errs[1] == nil {
					t.Errorf("the call whose transaction ended: no error")
				}
				if n := countRows(t, s, fmt.Sprintf("seq = %d", seq)); n != 0 {
					t.Errorf("the call whose transaction ended left its later write")
				}
				if !batched {
					return
				}
				for _, i := range []int{0, 2} {
					present := countRows(t, s, fmt.Sprintf("seq = %d", seq+1+i/2)) == 1
					if (errs[i] == nil) != present {
						t.Errorf("call %d of the batch: err=%v, its row present=%v", i, errs[i], present)
					}
				}
			})
		}
	}
}

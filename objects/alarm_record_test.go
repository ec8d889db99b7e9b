package objects_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sessiond/objects"
)

// indexAlarm reads an object's alarm_at from dir's index.db, with no
// runtime open on it: 0 if none.
func indexAlarm(t *testing.T, dir, ns, name string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "index.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var at sql.NullInt64
	if err := db.QueryRow(`SELECT alarm_at FROM objects WHERE namespace = ? AND name = ?`, ns, name).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at.Int64
}

// TestAlarmMovedLaterSurvivesFailedIndexWrite: a call moves the object's
// alarm from t1 to a later t2 while another connection holds the node
// index's write lock, so the index write that must follow the commit fails
// and the index keeps t1. The alarm must not be delivered at t1 (early) and
// must not be lost: it is delivered once, at t2.
func TestAlarmMovedLaterSurvivesFailedIndexWrite(t *testing.T) {
	defer objects.SetIndexBusyTimeout(20 * time.Millisecond)()
	// Both calls must be done before t1 comes; on a slow machine try again
	// with more room.
	for lead := 300 * time.Millisecond; ; lead *= 2 {
		if lead > 10*time.Second {
			t.Fatal("could not move the alarm before its first time came")
		}
		if alarmMovedLaterWhileIndexLocked(t, lead) {
			return
		}
		t.Logf("t1 came before the alarm was moved (lead %v); again", lead)
	}
}

func alarmMovedLaterWhileIndexLocked(t *testing.T, lead time.Duration) bool {
	rec := &alarmRecorder{}
	var ns *objects.Namespace
	rt, _ := newRuntime(t, "", func(rt *objects.Runtime) { ns = registerAlarmClass(t, rt, rec) })
	if err := rt.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	s := stub(t, ns, "moved")
	t1 := time.Now().Add(lead).Truncate(time.Millisecond)
	t2 := t1.Add(lead)
	setAlarm(t, s, t1)
	release := lockIndex(t, rt.Dir)
	setAlarm(t, s, t2) // acknowledged: the object committed t2
	release()
	if !time.Now().Before(t1) {
		return false
	}
	if got := infoAlarm(t, ns, "moved"); !got.Equal(t1) {
		t.Fatalf("index alarm %v after the locked move, want t1 %v: the index write did not fail", got, t1)
	}
	checkFor(t, 30*time.Second, "the alarm delivered", func() bool { return len(rec.list()) > 0 })
	d := rec.list()[0]
	if !d.info.Scheduled.Equal(t2) || d.at.Before(t2) {
		t.Fatalf("first delivery Scheduled=%v at %v, want the moved time t2=%v and not before it (t1=%v)",
			d.info.Scheduled, d.at, t2, t1)
	}
	return true
}

// TestAlarmClearedNotDeliveredAfterFailedIndexWrite: a call deletes the
// object's alarm while the node index is locked, so the index keeps it.
// When it comes due it is cleared from the index, not delivered.
func TestAlarmClearedNotDeliveredAfterFailedIndexWrite(t *testing.T) {
	defer objects.SetIndexBusyTimeout(20 * time.Millisecond)()
	rec := &alarmRecorder{}
	var ns *objects.Namespace
	rt, _ := newOpenRuntime(t, func(rt *objects.Runtime) { ns = registerAlarmClass(t, rt, rec) })
	s := stub(t, ns, "cleared")
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	setAlarm(t, s, at)
	release := lockIndex(t, rt.Dir)
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		tx.DeleteAlarm()
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	release()
	if got := infoAlarm(t, ns, "cleared"); !got.Equal(at) {
		t.Fatalf("index alarm %v after the locked delete, want %v: the index write did not fail", got, at)
	}
	// The index's alarm comes due (as the scheduler would find it at its time).
	if err := objects.SetAlarmInIndex(rt, "alarmer", "cleared", time.Now()); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the index's alarm cleared", func() bool { return infoAlarm(t, ns, "cleared").IsZero() })
	if n := len(rec.list()); n != 0 {
		t.Fatalf("the deleted alarm was delivered %d times", n)
	}
	if got, ok := alarmOf(t, s); ok {
		t.Fatalf("Alarm=%v after delete, want none", got)
	}
}

// TestAlarmWithoutRecordFollowsIndex: an object whose alarm was set before
// objects kept it in their own database (no record there) goes by the node
// index, as before.
func TestAlarmWithoutRecordFollowsIndex(t *testing.T) {
	rec := &alarmRecorder{}
	var ns *objects.Namespace
	rt, _ := newOpenRuntime(t, func(rt *objects.Runtime) { ns = registerAlarmClass(t, rt, rec) })
	s := stub(t, ns, "old")
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Truncate(time.Millisecond)
	if err := objects.SetAlarmInIndex(rt, "alarmer", "old", at); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the alarm delivered", func() bool { return len(rec.list()) > 0 })
	if got := rec.list()[0].info.Scheduled; !got.Equal(at) {
		t.Fatalf("Scheduled=%v, want the index's %v", got, at)
	}
	checkFor(t, 10*time.Second, "the alarm cleared", func() bool { return infoAlarm(t, ns, "old").IsZero() })
}

// Environment of TestAlarmMovedLaterSurvivesSIGKILL's child process.
const (
	alarmChildEnv = "OBJECTS_ALARM_CHILD" // data folder; set: run as the child
	alarmLeadEnv  = "OBJECTS_ALARM_LEAD"  // how far ahead t1 is, and t2 after it
)

// alarmChild sets an alarm for t1, then moves it to t2 and is killed by the
// parent between that call's commit and the node index's update: it prints
// "committed <t1> <t2>" (Unix ms) there and waits. A delivery prints
// "fired".
func alarmChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "alarm child:", err)
		os.Exit(2)
	}
	lead, err := time.ParseDuration(os.Getenv(alarmLeadEnv))
	if err != nil {
		fail(err)
	}
	rt := objects.NewRuntime(dir)
	rt.Durability = objects.DurabilityFull
	rt.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	rec := &alarmRecorder{onAlarm: func(context.Context, *objects.Tx, objects.AlarmInfo, int) error {
		fmt.Println("fired")
		return nil
	}}
	ns, err := rt.Register("alarmer", objects.Class{
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			return &alarmObject{rec: rec}, nil
		},
	})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	if err := rt.Open(ctx); err != nil {
		fail(err)
	}
	s, _ := ns.Get("moved")
	t1 := time.Now().Add(lead).Truncate(time.Millisecond)
	t2 := t1.Add(lead)
	set := func(at time.Time) error {
		_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			tx.SetAlarm(at)
			return nil, nil
		})
		return err
	}
	if err := set(t1); err != nil {
		fail(err)
	}
	objects.SetCommittedHook(func() {
		fmt.Printf("committed %d %d\n", t1.UnixMilli(), t2.UnixMilli())
		select {} // until SIGKILL
	})
	if err := set(t2); err != nil {
		fail(err)
	}
	fail(fmt.Errorf("the move to t2 returned"))
}

// TestAlarmMovedLaterSurvivesSIGKILL: a child process moves an object's
// alarm from t1 to a later t2 and is killed with SIGKILL after the commit,
// before the node index has t2. The runtime started again on the folder
// delivers the alarm once, at t2: not at t1, and not never.
func TestAlarmMovedLaterSurvivesSIGKILL(t *testing.T) {
	for lead := 500 * time.Millisecond; ; lead *= 2 {
		if lead > 20*time.Second {
			t.Fatal("the child could not move the alarm before its first time came")
		}
		dir := t.TempDir()
		t1, t2, ok := runAlarmChild(t, dir, lead)
		if !ok {
			t.Logf("the child's alarm fired before it was moved (lead %v); again", lead)
			continue
		}
		if got := indexAlarm(t, dir, "alarmer", "moved"); got != t1.UnixMilli() {
			t.Fatalf("index alarm %d after the kill, want t1 %d: the kill missed the window", got, t1.UnixMilli())
		}
		rec := &alarmRecorder{}
		rt, _ := newRuntime(t, dir, func(rt *objects.Runtime) { registerAlarmClass(t, rt, rec) })
		if err := rt.Open(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		checkFor(t, 60*time.Second, "the alarm delivered", func() bool { return len(rec.list()) > 0 })
		d := rec.list()[0]
		if !d.info.Scheduled.Equal(t2) || d.at.Before(t2) {
			t.Fatalf("first delivery Scheduled=%v at %v, want the moved time t2=%v and not before it (t1=%v)",
				d.info.Scheduled, d.at, t2, t1)
		}
		return
	}
}

// runAlarmChild runs alarmChild on dir and kills it at its "committed"
// line. ok is false if the child's alarm fired before that.
func runAlarmChild(t *testing.T, dir string, lead time.Duration) (t1, t2 time.Time, ok bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), alarmChildEnv+"="+dir, alarmLeadEnv+"="+lead.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	fired := false
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, open := <-lines:
			if !open {
				cmd.Wait()
				t.Fatalf("the child ended without committing; stderr:\n%s", stderr.String())
			}
			f := strings.Fields(l)
			switch {
			case len(f) == 1 && f[0] == "fired":
				fired = true
			case len(f) == 3 && f[0] == "committed":
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				cmd.Wait()
				for range lines {
				}
				a, err1 := strconv.ParseInt(f[1], 10, 64)
				b, err2 := strconv.ParseInt(f[2], 10, 64)
				if err1 != nil || err2 != nil {
					t.Fatalf("bad line %q", l)
				}
				return time.UnixMilli(a), time.UnixMilli(b), !fired
			}
		case <-timeout:
			t.Fatalf("no commit from the child; stderr:\n%s", stderr.String())
		}
	}
}

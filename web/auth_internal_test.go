package web

import (
	"testing"
	"time"
)

// Tickets are spent once, and the nonces of expired tickets are forgotten,
// so that what redeem keeps is bounded by the tickets of one TTL.
func TestTicketSpentOnceAndSwept(t *testing.T) {
	a := newAuthenticator(&Config{TicketTTL: time.Minute})
	now := time.Unix(1_800_000_000, 0)
	var first string
	for i := range 100 {
		tk, _ := a.ticket("s1", Principal{Owner: "alice"}, now)
		if i == 0 {
			first = tk
		}
		tp, err := a.check(tk, "s1", now)
		if err != nil || tp.p.Owner != "alice" {
			t.Fatalf("check %d: %+v, %v", i, tp, err)
		}
		if _, err := a.check(tk, "s1", now); err != nil {
			t.Fatalf("check %d again, before it is spent: %v", i, err)
		}
		if err := a.redeem(tp, now); err != nil {
			t.Fatalf("redeem %d: %v", i, err)
		}
		if err := a.redeem(tp, now); err == nil {
			t.Fatalf("ticket %d redeemed twice", i)
		}
		if _, err := a.check(tk, "s1", now); err == nil {
			t.Fatalf("ticket %d passed check once spent", i)
		}
	}
	if len(a.spent) != 100 {
		t.Fatalf("spent = %d nonces, want 100", len(a.spent))
	}
	later := now.Add(2 * time.Minute)
	if _, err := a.check(first, "s1", later); err == nil {
		t.Fatal("an expired ticket passed")
	}
	tk, _ := a.ticket("s1", Principal{Owner: "alice"}, later)
	tp, err := a.check(tk, "s1", later)
	if err != nil {
		t.Fatalf("a new ticket: %v", err)
	}
	if err := a.redeem(tp, later); err != nil {
		t.Fatalf("a new ticket: %v", err)
	}
	if len(a.spent) != 1 {
		t.Fatalf("spent = %d nonces after the others expired, want 1", len(a.spent))
	}

	// A copy that passed check in the ticket's last second is refused
	// when redeemed after it, though the sweep forgot the first use.
	tk, exp := a.ticket("s1", Principal{Owner: "alice"}, later)
	tp1, _ := a.check(tk, "s1", later)
	tp2, err := a.check(tk, "s1", exp.Add(-time.Millisecond))
	if err != nil {
		t.Fatalf("a ticket in its last millisecond: %v", err)
	}
	if err := a.redeem(tp1, later); err != nil {
		t.Fatal(err)
	}
	after := exp.Add(2 * time.Second)
	a.spend("another", after.Unix()+60, after.Unix()) // a sweep
	if err := a.redeem(tp2, after); err == nil {
		t.Fatal("a copy redeemed after its ticket expired")
	}
}

// A ticket's expires_at is the instant it stops being good, to the
// nanosecond: whole seconds, good just before, refused at it.
func TestTicketExpiresWhenItSays(t *testing.T) {
	a := newAuthenticator(&Config{TicketTTL: time.Minute})
	now := time.Unix(1_800_000_000, 123_456_789)
	tk, exp := a.ticket("s1", Principal{Owner: "alice"}, now)
	if exp.Nanosecond() != 0 || exp.After(now.Add(time.Minute)) || exp.Before(now.Add(time.Minute-time.Second)) {
		t.Fatalf("expires_at %v for a ticket of a minute from %v", exp, now)
	}
	if _, err := a.check(tk, "s1", exp.Add(-time.Nanosecond)); err != nil {
		t.Fatalf("just before expires_at: %v", err)
	}
	if _, err := a.check(tk, "s1", exp); err == nil {
		t.Fatal("a ticket passed check at its expires_at")
	}
}

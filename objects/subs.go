package objects

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// subscriptions is the node index's subscriptions table in memory, for
// matching every event the bus delivers. Literal patterns are found by one
// map lookup of the subject; patterns with wildcards, usually few, are
// matched one by one. Looking subscribers up in SQLite took 80 candidate
// patterns bound into a query per event (a 4-token subject), 13 % of the
// server's CPU at one POST /turns connection. Loaded at start-up
// (O(subscriptions); no object database is opened) and changed where the
// table is.
type subscriptions struct {
	mu      sync.RWMutex
	literal map[string]map[entryKey]struct{}
	wild    map[string]map[entryKey]struct{}
}

func (s *subscriptions) load(ctx context.Context, x *nodeIndex) error {
	rows, err := x.db.QueryContext(ctx, `SELECT namespace, name, pattern FROM subscriptions`)
	if err != nil {
		return fmt.Errorf("read subscriptions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k entryKey
		var pattern string
		if err := rows.Scan(&k.ns, &k.name, &pattern); err != nil {
			return fmt.Errorf("read subscriptions: %w", err)
		}
		s.add(k, pattern)
	}
	return rows.Err()
}

func (s *subscriptions) table(pattern string) *map[string]map[entryKey]struct{} {
	if strings.ContainsAny(pattern, "*>") {
		return &s.wild
	}
	return &s.literal
}

func (s *subscriptions) add(k entryKey, pattern string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.table(pattern)
	if *t == nil {
		*t = make(map[string]map[entryKey]struct{})
	}
	m := (*t)[pattern]
	if m == nil {
		m = make(map[entryKey]struct{})
		(*t)[pattern] = m
	}
	m[k] = struct{}{}
}

func (s *subscriptions) remove(k entryKey, pattern string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := *s.table(pattern)
	if m := t[pattern]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(t, pattern)
		}
	}
}

// removeAll drops every subscription of one object (it was deleted).
func (s *subscriptions) removeAll(k entryKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range []map[string]map[entryKey]struct{}{s.literal, s.wild} {
		for p, m := range t {
			delete(m, k)
			if len(m) == 0 {
				delete(t, p)
			}
		}
	}
}

// match returns the objects subscribed to a pattern that matches subject,
// each once.
// patterns returns every pattern some object subscribes to, sorted.
func (s *subscriptions) patterns() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.literal)+len(s.wild))
	for p := range s.literal {
		out = append(out, p)
	}
	for p := range s.wild {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (s *subscriptions) match(subject string) []entryKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []entryKey
	var seen map[entryKey]struct{}
	addAll := func(m map[entryKey]struct{}) {
		for k := range m {
			if seen == nil {
				seen = make(map[entryKey]struct{})
			}
			if _, ok := seen[k]; !ok {
				seen[k] = struct{}{}
				out = append(out, k)
			}
		}
	}
	addAll(s.literal[subject])
	for p, m := range s.wild {
		if patternMatches(p, subject) {
			addAll(m)
		}
	}
	return out
}

// patternMatches reports whether a NATS-style pattern matches subject:
// "*" stands for one token, a final ">" for one or more.
func patternMatches(pattern, subject string) bool {
	for {
		pt, prest, pmore := strings.Cut(pattern, ".")
		if pt == ">" {
			return subject != ""
		}
		st, srest, smore := strings.Cut(subject, ".")
		if subject == "" || (pt != "*" && pt != st) {
			return false
		}
		if !pmore || !smore {
			return pmore == smore
		}
		pattern, subject = prest, srest
	}
}

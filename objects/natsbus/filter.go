package natsbus

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Filtering. A node's consumer would otherwise receive, and acknowledge,
// every event of the stream, including the lifecycle events its own
// sessions publish by the thousand when nothing subscribes to them: a
// quarter of the server's CPU per posted turn. JetStream can filter a
// consumer by several subjects, provided they do not overlap; filters
// computes such a set from the patterns the node's objects subscribe to.

// noneToken ends the subject used as the filter of a consumer that wants
// nothing: no publisher uses it, and it lies inside the stream's subjects
// (a filter outside them is refused).
const noneToken = "natsbus-nothing-subscribed"

// filters returns the consumer filter subjects for patterns on a stream
// that stores streamSubjects: nil for every event (a pattern set JetStream
// cannot express without overlaps, or a pattern that covers everything),
// and a subject nobody publishes on when no pattern can match an event of
// the stream. Patterns use NATS wildcards (* one token, > the rest).
func filters(patterns, streamSubjects []string) []string {
	var keep []string
	for _, p := range patterns {
		if p == ">" {
			return nil
		}
		if !slices.ContainsFunc(streamSubjects, func(s string) bool { return overlaps(p, s) }) {
			continue // matches nothing the stream stores
		}
		keep = append(keep, p)
	}
	slices.Sort(keep)
	keep = slices.Compact(keep)
	// Drop the patterns another one covers; what remains must not overlap.
	var out []string
	for i, p := range keep {
		covered := false
		for j, q := range keep {
			if i != j && subsumes(q, p) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if overlaps(out[i], out[j]) {
				return nil
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, s := range streamSubjects {
		if prefix, ok := strings.CutSuffix(s, ">"); ok {
			return []string{prefix + noneToken}
		}
	}
	return nil // no room for an empty filter: take everything
}

// subsumes reports whether every subject matching b also matches a.
func subsumes(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, t := range at {
		if t == ">" {
			return i < len(bt)
		}
		if i >= len(bt) || bt[i] == ">" {
			return false
		}
		if t != "*" && t != bt[i] {
			return false
		}
	}
	return len(at) == len(bt)
}

// overlaps reports whether some subject matches both a and b.
func overlaps(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] == "*" || bt[i] == "*":
		case at[i] != bt[i]:
			return false
		}
	}
	return len(at) == len(bt)
}

// SetFilter changes the subjects the consumer receives: events on other
// subjects are skipped by the server from the consumer's current position
// on. nil or empty means no filter at all.
//
// A pull request waiting on the server keeps working across a change
// between filters; but a change to no filter at all went unnoticed by the
// waiting request (nats-server v2.15: messages came only with the next
// pull request, up to fetchWait later). Objects therefore never asks for
// no filter once it filters: everything is the stream's own subjects.
func (c *Consumer) SetFilter(ctx context.Context, subjects []string) error {
	js, _, err := c.bus.live()
	if err != nil {
		return fmt.Errorf("filter %s: %w", c.durable, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg := c.cfg
	cfg.FilterSubject, cfg.FilterSubjects = "", nil
	switch len(subjects) {
	case 0:
	case 1:
		cfg.FilterSubject = subjects[0]
	default:
		cfg.FilterSubjects = slices.Clone(subjects)
	}
	if _, err := js.UpdateConsumer(ctx, c.bus.opts.Stream, cfg); err != nil {
		return fmt.Errorf("filter %s by %q: %w", c.durable, subjects, err)
	}
	c.cfg = cfg
	return nil
}

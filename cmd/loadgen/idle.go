package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/coder/websocket"
)

func setupIdle(fs *flag.FlagSet, c *common) runFunc {
	viewers := fs.Int("viewers", 10000, "idle WebSocket viewers")
	sessions := fs.Int("sessions", 1000, "sessions the viewers spread over")
	dialConc := fs.Int("dial-concurrency", 64, "viewers connecting at once")
	hibernate := fs.Duration("hibernate", 5*time.Second, "wait for the sessions to hibernate, before each RSS reading (longer than the server's --idle-timeout)")
	return func(ctx context.Context, e *env) ([]row, error) {
		t, err := e.server(ctx, serverOptions{idleTimeout: "1s"})
		if err != nil {
			return nil, err
		}
		ids, err := t.createSessions(ctx, *sessions, 16)
		if err != nil {
			return nil, err
		}
		before, err := settledRSS(ctx, t.pid, *hibernate)
		if err != nil {
			return nil, err
		}
		fdsBefore := openFDs(t.pid)
		e.logf("idle: %d sessions hibernated, server RSS %d KiB, %d fds; connecting %d viewers", len(ids), before, fdsBefore, *viewers)
		start := time.Now()
		conns, err := dialMany(ctx, t, ids, *viewers, *dialConc)
		defer closeAll(conns)
		if err != nil {
			return nil, err
		}
		holdOpen(ctx, conns)
		e.logf("idle: %d viewers connected in %s; waiting %s for hibernation", len(conns), time.Since(start).Round(time.Millisecond), *hibernate)
		after, err := settledRSS(ctx, t.pid, *hibernate)
		if err != nil {
			return nil, err
		}
		fds := openFDs(t.pid)
		if after <= before {
			e.logf("idle: WARNING: the server's RSS did not grow with %d viewers (%d → %d KiB): it was freeing memory meanwhile, so there is no per-viewer figure here; measure a fresh server whose --idle-timeout is shorter than -hibernate (-spawn runs one with 1s)", len(conns), before, after)
		}
		r := row{Case: fmt.Sprintf("viewers=%d sessions=%d", len(conns), len(ids))}
		r.add("rss before", float64(before)/1024, "MiB")
		r.add("rss after", float64(after)/1024, "MiB")
		r.add("per viewer", float64(after-before)/float64(len(conns)), "KiB")
		// Hibernated sessions hold no database files: fds grow by the
		// sockets only (an active session would add about 3).
		r.add("server fds before", float64(fdsBefore), "")
		r.add("server fds after", float64(fds), "")
		r.add("hello retries", float64(helloRetries.Load()), "")
		return []row{r}, nil
	}
}

// holdOpen keeps reading every socket in the background (so the server's
// pings are answered) without keeping anything of what it reads.
func holdOpen(ctx context.Context, conns []*websocket.Conn) {
	for _, c := range conns {
		c.CloseRead(ctx)
	}
}

// settledRSS waits d, then reads the RSS of pid a few times a second apart
// and returns the last reading.
func settledRSS(ctx context.Context, pid int, d time.Duration) (int64, error) {
	if _, err := rssKiB(pid); err != nil {
		return 0, err
	}
	if err := sleepCtx(ctx, d); err != nil {
		return 0, err
	}
	var kb int64
	for range 3 {
		var err error
		if kb, err = rssKiB(pid); err != nil {
			return 0, err
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return 0, err
		}
	}
	return kb, nil
}

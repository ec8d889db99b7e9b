package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one measured case: a name, the durability it ran with and its
// figures in a fixed order.
type row struct {
	Case       string   `json:"case"`
	Durability string   `json:"durability,omitempty"`
	Metrics    []metric `json:"metrics"`
}

// metric is one figure of a row.
type metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit,omitempty"`
}

func (r *row) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, metric{name, v, unit})
}

// addLatency adds p50, p99 and max of s in milliseconds.
func (r *row) addLatency(prefix string, s *samples) {
	r.add(prefix+"p50", ms(s.quantile(0.50)), "ms")
	r.add(prefix+"p99", ms(s.quantile(0.99)), "ms")
	r.add(prefix+"max", ms(s.quantile(1)), "ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report is everything one loadgen invocation prints.
type report struct {
	Command string    `json:"command"`
	Args    string    `json:"args"`
	Date    time.Time `json:"date"`
	Machine string    `json:"machine"`
	Server  string    `json:"server"`
	Rows    []row     `json:"rows"`
}

func newReport(cmd string, c *common) *report {
	server := "-url " + c.url
	if c.spawn {
		server = "spawned child process"
	}
	if c.pin {
		server += ", pinned to CPU 0, loadgen to the others"
	}
	return &report{
		Command: cmd,
		Args:    strings.Join(os.Args[1:], " "),
		Date:    time.Now().UTC().Truncate(time.Second),
		Machine: machine(),
		Server:  server,
	}
}

// machine describes where loadgen runs: CPUs, memory, kernel, Go.
func machine() string {
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%d CPUs, %s, linux %s, %s, loadavg at start %s", runtime.NumCPU(), mem, kernel, runtime.Version(), load)
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeTable prints one table per distinct set of metric names.
func (r *report) writeTable(w io.Writer) {
	fmt.Fprintf(w, "# loadgen %s\n# %s\n# %s, server: %s\n", r.Args, r.Date.Format(time.RFC3339), r.Machine, r.Server)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var header []string
	for _, rw := range r.Rows {
		names := []string{"case", "durability"}
		for _, m := range rw.Metrics {
			names = append(names, m.Name+unitSuffix(m.Unit))
		}
		if !slices.Equal(names, header) {
			if header != nil {
				fmt.Fprintln(tw)
			}
			header = names
			fmt.Fprintln(tw, strings.Join(names, "\t")+"\t")
		}
		cells := []string{rw.Case, orDash(rw.Durability)}
		for _, m := range rw.Metrics {
			cells = append(cells, format(m.Value))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
}

func unitSuffix(u string) string {
	if u == "" {
		return ""
	}
	return "(" + u + ")"
}

func format(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// samples collects durations; quantile sorts them once.
type samples struct {
	d      []time.Duration
	sorted bool
}

func (s *samples) add(d time.Duration) { s.d = append(s.d, d); s.sorted = false }

func (s *samples) merge(o *samples) { s.d = append(s.d, o.d...); s.sorted = false }

func (s *samples) len() int { return len(s.d) }

// quantile returns the q-quantile (nearest rank); 0 when empty.
func (s *samples) quantile(q float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	if !s.sorted {
		slices.Sort(s.d)
		s.sorted = true
	}
	i := int(q*float64(len(s.d))+0.5) - 1
	return s.d[min(max(i, 0), len(s.d)-1)]
}

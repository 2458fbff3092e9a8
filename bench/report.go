package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Row is one scenario's outcome in a report.
type Row struct {
	Scenario     string    `json:"scenario"`
	Description  string    `json:"description"`
	Mode         string    `json:"mode"` // "closed-loop" or "rate N/s"
	Connections  int       `json:"connections"`
	DurationSec  float64   `json:"duration_s"`
	Requests     int64     `json:"requests"`
	Errors       int64     `json:"errors"`
	FirstError   string    `json:"first_error,omitempty"`
	RequestsPerS float64   `json:"requests_per_s"`
	MessagesPerS float64   `json:"messages_per_s"`
	LatencyMs    Quantiles `json:"latency_ms"`
	// ServerLatencyMs is what the server reported per answer (timing=1
	// server_us: request start to answer written), for produce rows.
	ServerLatencyMs *Quantiles `json:"server_latency_ms,omitempty"`
	NoopPerS        float64    `json:"noop_requests_per_s,omitempty"`
	Ratio           float64    `json:"ratio_to_noop,omitempty"`
}

// Quantiles of latency in milliseconds.
type Quantiles struct {
	P50    float64 `json:"p50"`
	P99    float64 `json:"p99"`
	P999   float64 `json:"p99_9"`
	P9999  float64 `json:"p99_99"`
	P99999 float64 `json:"p99_999"`
	Max    float64 `json:"max"`
}

// rowOf turns a result into a report row.
func rowOf(s Scenario, l Load, r Result) Row {
	mode := "closed-loop"
	if l.Rate > 0 {
		mode = fmt.Sprintf("rate %.0f/s", l.Rate)
	}
	row := Row{
		Scenario: s.Name, Description: s.Description, Mode: mode, Connections: l.Connections,
		DurationSec: r.Elapsed.Seconds(), Requests: r.Requests, Errors: r.Errors, FirstError: r.FirstError,
		RequestsPerS: r.RequestsPerSec(), MessagesPerS: r.MessagesPerSec(),
		LatencyMs: quantilesMs(r.Latency),
	}
	if r.ServerLatency != nil && r.ServerLatency.TotalCount() > 0 {
		q := quantilesMs(r.ServerLatency)
		row.ServerLatencyMs = &q
	}
	return row
}

// quantilesMs reads a histogram of microseconds in milliseconds.
func quantilesMs(h *hdrhistogram.Histogram) Quantiles {
	ms := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1000 }
	return Quantiles{P50: ms(50), P99: ms(99), P999: ms(99.9), P9999: ms(99.99), P99999: ms(99.999),
		Max: float64(h.Max()) / 1000}
}

// Report is a whole run.
type Report struct {
	Started        time.Time       `json:"started"`
	Target         string          `json:"target"`
	Machine        string          `json:"machine"`
	Command        string          `json:"command"`
	Rows           []Row           `json:"rows"`
	Restart        []Restart       `json:"restart,omitempty"`
	CatchUp        []CatchUp       `json:"catch_up,omitempty"`
	KVFill         []KVFill        `json:"kv_fill,omitempty"`
	Query          []QueryResult   `json:"query,omitempty"`
	QueryIsolation *QueryIsolation `json:"query_isolation,omitempty"`
	Stream         *StreamResult   `json:"stream,omitempty"`
	Disk           *DiskRun        `json:"disk,omitempty"`
}

// CatchUp is the time a cluster follower took to catch up after missing
// Messages writes: killed with SIGKILL and restarted on its data, or
// restarted with its data directory wiped (it rejoins by snapshot).
type CatchUp struct {
	Case     string  `json:"case"`
	Nodes    int     `json:"nodes"`
	Messages int64   `json:"messages"`
	LoadSec  float64 `json:"load_s"`
	CatchSec float64 `json:"catch_up_s"` // restart to applied up to the leader's commit index
}

// WriteMarkdown writes the report as markdown tables.
func (rep Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "Run %s on %s, target %s.\n\n`%s`\n\n", rep.Started.UTC().Format(time.RFC3339), rep.Machine, rep.Target, rep.Command)
	if len(rep.Rows) > 0 {
		fmt.Fprintln(w, "| scenario | mode | conns | req/s | msg/s | p50 ms | p99 ms | p99.9 ms | p99.99 ms | p99.999 ms | errors | no-op req/s | ratio |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, r := range rep.Rows {
			noop, ratio := "", ""
			if r.NoopPerS > 0 {
				noop, ratio = fmt.Sprintf("%.0f", r.NoopPerS), fmt.Sprintf("%.2f", r.Ratio)
			}
			fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %s | %s |\n",
				r.Scenario, r.Mode, r.Connections, r.RequestsPerS, r.MessagesPerS, r.LatencyMs.P50, r.LatencyMs.P99,
				r.LatencyMs.P999, r.LatencyMs.P9999, r.LatencyMs.P99999, r.Errors, noop, ratio)
		}
	}
	var timed []Row
	for _, r := range rep.Rows {
		if r.ServerLatencyMs != nil {
			timed = append(timed, r)
		}
	}
	if len(timed) > 0 {
		fmt.Fprintln(w, "\nServer side of the same runs: `server_us` from each answer (`timing=1`), request start to answer written.")
		fmt.Fprintln(w, "\n| scenario | mode | server p50 ms | p99 ms | p99.9 ms | p99.99 ms | p99.999 ms | max ms |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
		for _, r := range timed {
			q := r.ServerLatencyMs
			fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", r.Scenario, r.Mode, q.P50, q.P99, q.P999, q.P9999, q.P99999, q.Max)
		}
	}
	if d := rep.Disk; d != nil {
		fmt.Fprintf(w, "\nThe disk alone: %d appends of %d B, each followed by fdatasync, one at a time, in %s.\n", d.Syncs, d.RecordBytes, d.Dir)
		fmt.Fprintln(w, "\n| fdatasync | p50 ms | p99 ms | p99.9 ms | p99.99 ms | p99.999 ms | max ms |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
		q := d.LatencyMs
		fmt.Fprintf(w, "| write + fdatasync | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", q.P50, q.P99, q.P999, q.P9999, q.P99999, q.Max)
	}
	if len(rep.Restart) > 0 {
		fmt.Fprintln(w, "\n| restart after kill -9 | stored messages | load s | to /ready s | last offset readable s | peak RSS MB (load) | peak RSS MB (restart) |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
		for _, r := range rep.Restart {
			fmt.Fprintf(w, "| %s | %d | %.1f | %.3f | %.3f | %.0f | %.0f |\n", r.Name, r.Messages, r.LoadSec, r.ReadySec, r.ReadableSec, r.PeakRSSLoadMB, r.PeakRSSRestartMB)
		}
	}
	if len(rep.KVFill) > 0 {
		fmt.Fprintln(w, "\n| KV keys | value B | load s | puts/s | RSS MB (loaded, idle) | peak RSS MB (load) | data MB | to /ready after kill -9 s | RSS MB (restarted) |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
		for _, r := range rep.KVFill {
			fmt.Fprintf(w, "| %d | %d | %.1f | %.0f | %.0f | %.0f | %.0f | %.3f | %.0f |\n", r.Keys, r.ValueBytes, r.LoadSec, r.PutsPerS, r.RSSLoadedMB, r.PeakRSSLoadMB, r.DataMB, r.ReadySec, r.RSSRestartMB)
		}
	}
	if len(rep.Query) > 0 {
		fmt.Fprintln(w, "\n| stream query (one at a time, one core) | messages read | runs | median s | min s | msg/s (median) |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
		for _, r := range rep.Query {
			fmt.Fprintf(w, "| %s | %d | %d | %.3f | %.3f | %.0f |\n", r.Name, r.Messages, r.Runs, r.MedianSec, r.MinSec, r.MsgsPerSec)
		}
	}
	if q := rep.QueryIsolation; q != nil {
		fmt.Fprintf(w, "\nDurable 64 B produce at %.0f/s for 5 s, alone and while one client runs the JSON query back to back (%d queries meanwhile):\n", q.Rate, q.Queries)
		fmt.Fprintln(w, "\n| produce | p50 ms | p99 ms | server p99 ms |")
		fmt.Fprintln(w, "|---|---|---|---|")
		fmt.Fprintf(w, "| alone | %.2f | %.2f | %.2f |\n| with queries | %.2f | %.2f | %.2f |\n", q.AloneP50Ms, q.AloneP99Ms, q.AloneServerP99Ms, q.QueriedP50Ms, q.QueriedP99Ms, q.QueriedServerP99Ms)
	}
	if r := rep.Stream; r != nil {
		fmt.Fprintf(w, "\nServer-Sent Events: %d streams on one partition while durable 64 B produce runs at %.0f/s (%.0f/s reached):\n", r.Streams, r.ProduceRate, r.ProducedPerSec)
		fmt.Fprintln(w, "\n| events delivered | delivery p50 ms | p99 ms | max ms | produce p50 ms | produce p99 ms | rebalance s (session timeout s) |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
		fmt.Fprintf(w, "| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f (%.1f) |\n", r.Delivered, r.DeliveryP50Ms, r.DeliveryP99Ms, r.DeliveryMaxMs, r.ProduceP50Ms, r.ProduceP99Ms, r.RebalanceSec, float64(r.SessionTimeoutMs)/1000)
	}
	if len(rep.CatchUp) > 0 {
		fmt.Fprintln(w, "\n| cluster follower catch-up | nodes | messages written meanwhile | load s | restart to caught up s |")
		fmt.Fprintln(w, "|---|---|---|---|---|")
		for _, r := range rep.CatchUp {
			fmt.Fprintf(w, "| %s | %d | %d | %.1f | %.3f |\n", r.Case, r.Nodes, r.Messages, r.LoadSec, r.CatchSec)
		}
	}
	for _, r := range rep.Rows {
		if r.FirstError != "" {
			fmt.Fprintf(w, "\n%s: first error: %s\n", r.Scenario, strings.TrimSpace(r.FirstError))
		}
	}
}

// WriteFiles writes path.md and path.json.
func (rep Report) WriteFiles(path string) error {
	f, err := os.Create(path + ".md")
	if err != nil {
		return err
	}
	rep.WriteMarkdown(f)
	if err := f.Close(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path+".json", append(b, '\n'), 0o644)
}

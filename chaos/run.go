package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one chaos run.
type Config struct {
	Bin        string        // the keel binary
	Dir        string        // the run directory (history, timelines, nemesis log, node data and logs)
	Nodes      int           // cluster size
	Duration   time.Duration // how long the workload and the nemesis run
	Producers  int           // concurrent appenders
	Readers    int           // concurrent readers
	Committers int           // concurrent committers of consumer offsets (sharing two groups)
	KVWriters  int           // concurrent KV compare-and-set writers (sharing a few keys)
	Rate       int           // operations per second, all clients together (0: as fast as they go); bounds the history the checker searches
	Partitions int           // of the one topic written
	Hold       time.Duration // a fault lasts 0.5 to 1.5 times this
	Rest       time.Duration // between two faults: 0.5 to 1.5 times this
	DiskFull   bool          // one node's data on a small tmpfs, and the disk-full nemesis (needs root; skipped with a note otherwise)
	Corrupt    bool          // the corruption nemesis: torn partition tails and flipped bits in a stopped follower's files
	Seed       uint64
	Timeout    time.Duration // porcupine's budget per partition
}

// Summary is what a run found; it is also summary.json.
type Summary struct {
	Nodes     int     `json:"nodes"`
	Seed      uint64  `json:"seed"`
	Faults    int     `json:"faults"`
	DiskFull  int64   `json:"disk_full_answers"` // writes answered 507 disk_full
	DurationS float64 `json:"duration_s"`
	Result
}

// Green reports whether the run found no violation.
func (s Summary) Green() bool { return len(s.Violations) == 0 }

// Line is the summary's last line: CHAOS: ALL GREEN (…) or the violations.
func (s Summary) Line() string {
	if s.Green() {
		return fmt.Sprintf("CHAOS: ALL GREEN (%d operations, %d faults)", s.Operations, s.Faults)
	}
	return fmt.Sprintf("CHAOS: %d VIOLATIONS (%d operations, %d faults)", len(s.Violations), s.Operations, s.Faults)
}

// Run starts the cluster, runs the workload under the nemesis for
// cfg.Duration, heals everything, waits for every node to catch up, reads
// every node's logs and checks the history. progress gets a line per
// phase. The run directory keeps history.jsonl, nemesis.log,
// timeline-p<k>.html, summary.json and summary.txt, and the nodes' data
// and logs.
func Run(ctx context.Context, cfg Config, progress func(string)) (Summary, error) {
	sum := Summary{Nodes: cfg.Nodes, Seed: cfg.Seed}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return sum, err
	}
	start := time.Now()
	c, err := startCluster(cfg.Bin, cfg.Dir, cfg.Nodes, cfg.DiskFull, progress)
	if err != nil {
		return sum, err
	}
	defer c.stop()
	if err := c.settle(ctx, time.Minute); err != nil {
		return sum, err
	}
	w := &workload{c: c, topic: "chaos", partitions: cfg.Partitions, start: time.Now(), opBudget: 8 * time.Second, pace: pace(cfg),
		known: make([]atomic.Int64, cfg.Partitions)}
	c.topic, c.partitions = w.topic, cfg.Partitions
	if err := createTopic(ctx, c, w.topic, cfg.Partitions); err != nil {
		return sum, err
	}
	progress(fmt.Sprintf("%d nodes up; workload of %d producers, %d readers, %d committers and %d KV writers on %d partitions for %s, faults every ~%s",
		cfg.Nodes, cfg.Producers, cfg.Readers, cfg.Committers, cfg.KVWriters, cfg.Partitions, cfg.Duration, cfg.Rest+cfg.Hold))

	nlog, err := os.Create(filepath.Join(cfg.Dir, "nemesis.log"))
	if err != nil {
		return sum, err
	}
	defer nlog.Close()
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := range cfg.Producers {
		wg.Add(1)
		go func() { defer wg.Done(); w.producer(runCtx, i, cfg.Seed) }()
	}
	for i := range cfg.Readers {
		wg.Add(1)
		go func() { defer wg.Done(); w.reader(runCtx, cfg.Producers+i, cfg.Seed) }()
	}
	for i := range cfg.Committers {
		wg.Add(1)
		go func() { defer wg.Done(); w.committer(runCtx, cfg.Producers+cfg.Readers+i, cfg.Seed) }()
	}
	for i := range cfg.KVWriters {
		wg.Add(1)
		go func() { defer wg.Done(); w.kvWriter(runCtx, cfg.Producers+cfg.Readers+cfg.Committers+i, cfg.Seed) }()
	}
	faults, nerr := nemesis(runCtx, c, rand.New(rand.NewPCG(cfg.Seed, 7)), cfg.Hold, cfg.Rest, w.start, nlog, cfg.Corrupt)
	wg.Wait()
	sum.Faults, sum.DiskFull = faults, w.diskFull.Load()
	if nerr != nil {
		return sum, nerr
	}
	if err := ctx.Err(); err != nil {
		return sum, fmt.Errorf("chaos: interrupted: %w", err)
	}
	ops := w.history()
	progress(fmt.Sprintf("workload done: %d operations, %d faults; healing", len(ops), faults))

	if err := c.healAll(); err != nil {
		return sum, err
	}
	fmt.Fprintf(nlog, "%8.3fs healed: every link, every node running\n", time.Since(w.start).Seconds())
	if err := c.settle(ctx, 2*time.Minute); err != nil {
		return sum, err
	}
	finals := FinalLogs{}
	var gaps []Violation
	for i, nd := range c.nodes {
		finals[nd.name] = map[int][]string{}
		for p := range cfg.Partitions {
			keys, err := c.readAll(i, w.topic, p)
			if err != nil {
				gaps = append(gaps, Violation{Kind: "gap", Partition: p, Detail: err.Error()})
			}
			finals[nd.name][p] = keys
		}
	}
	commits := FinalCommits{}
	for i, nd := range c.nodes {
		commits[nd.name] = map[GroupPartition]int64{}
		for _, g := range commitGroups {
			for p := range cfg.Partitions {
				v, status, err := w.committed(i, g, p, true)
				if err != nil || status != 200 {
					gaps = append(gaps, Violation{Kind: "unreadable", Partition: p, Detail: fmt.Sprintf("group %s on %s: status %d %v", g, nd.name, status, err)})
					continue
				}
				commits[nd.name][GroupPartition{g, p}] = v
			}
		}
	}
	if cfg.KVWriters > 0 {
		gaps = append(gaps, w.finalKV(ctx)...)
		ops = w.history() // with the final reads of the KV keys
	}
	progress("final logs, committed offsets and KV keys read from every node; checking")
	if f, err := os.Create(filepath.Join(cfg.Dir, "history.jsonl")); err == nil {
		WriteHistory(f, ops)
		f.Close()
	}
	sum.Result = Check(ops, finals, commits, cfg.Timeout)
	sum.Violations = append(gaps, sum.Violations...)
	for _, p := range sum.Partitions() {
		if f, err := os.Create(filepath.Join(cfg.Dir, fmt.Sprintf("timeline-p%d.html", p))); err == nil {
			sum.Visualize(p, f)
			f.Close()
		}
	}
	sum.DurationS = time.Since(start).Seconds()
	if b, err := json.MarshalIndent(sum, "", "  "); err == nil {
		os.WriteFile(filepath.Join(cfg.Dir, "summary.json"), b, 0o644)
	}
	var txt strings.Builder
	fmt.Fprintf(&txt, "nodes %d, seed %d, %.0f s\n", sum.Nodes, sum.Seed, sum.DurationS)
	fmt.Fprintf(&txt, "appends: %d acknowledged, %d unknown, %d refused; reads: %d; commits: %d acknowledged, %d reads of them; kv: %d puts applied, %d cas mismatches, %d unknown, %d reads; 507 disk_full answers: %d\n",
		sum.AppendsOK, sum.AppendsUnknown, sum.AppendsFailed, sum.Reads, sum.CommitsOK, sum.CommitReads, sum.KVPutsOK, sum.KVMismatches, sum.KVPutsUnknown, sum.KVReads, sum.DiskFull)
	for _, v := range sum.Violations {
		fmt.Fprintf(&txt, "VIOLATION %s\n", v)
	}
	fmt.Fprintln(&txt, sum.Line())
	os.WriteFile(filepath.Join(cfg.Dir, "summary.txt"), []byte(txt.String()), 0o644)
	return sum, nil
}

// pace is the time between two operations of one client for cfg.Rate.
func pace(cfg Config) time.Duration {
	if cfg.Rate <= 0 {
		return 0
	}
	return time.Duration(cfg.Producers+cfg.Readers+cfg.Committers+cfg.KVWriters) * time.Second / time.Duration(cfg.Rate)
}

// createTopic creates the workload's topic on the leader.
func createTopic(ctx context.Context, c *cluster, topic string, partitions int) error {
	body, _ := json.Marshal(map[string]any{"name": topic, "partitions": partitions})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		l := c.leader(ctx)
		if l < 0 {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", c.nodes[l].url()+"/broker/topics", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := httpc.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			return nil
		}
	}
	return fmt.Errorf("chaos: could not create topic %s", topic)
}

// Command nats is a small, self-contained competitor load generator: it
// starts a local NATS JetStream cluster (N nats-server processes on
// 127.0.0.1, fsync on every write), creates one replicated file-backed
// stream and measures synchronous publish latency/throughput with the same
// shape of load Keel's own bench uses for produce-64: C separate
// connections, one message in flight per connection (closed loop) or a
// fixed total rate spread over the connections (open loop, latency from the
// intended send time).
//
// It lives in its own Go module (keel/bench/competitors/nats) so that Keel's
// binary and go.mod never depend on NATS. See README.md.
//
// Durability config (verified against the nats-server v2.14.9 source in the
// module cache, server/opts.go, parseJetStream): inside the `jetstream {}`
// block the key is `sync_interval` (alias `sync`); the string value
// "always" sets Options.SyncAlways = true (any other value is parsed as a
// duration for the background fsync timer). SyncAlways is passed to the
// stream's file store (server/stream.go: fsCfg.SyncAlways, which also turns
// off AsyncFlush for replicated streams) and to the Raft WAL of every
// clustered stream (server/jetstream_cluster.go: FileStoreConfig{...
// SyncAlways: opts.SyncAlways}); the message block then calls
// mb.mfd.Sync() after every write (server/filestore.go, "Check if we are in
// sync always mode"). A stream with PersistMode "async" would switch this
// off again, so the stream is created with the default PersistMode and the
// program checks it. At startup the program also reads /varz from every
// node and refuses to run unless jetstream.config.sync_always is true.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	streamName    = "BENCH"
	subject       = "bench"
	clusterName   = "keelbench"
	readyTimeout  = 60 * time.Second // cluster up + stream created + replicas current
	stopGrace     = 5 * time.Second  // SIGTERM, then SIGKILL after this
	histMaxMicros = 120_000_000      // same histogram range as Keel's bench (1 µs .. 120 s, 3 digits)
	maxNodes      = 5                // JetStream streams support at most 5 replicas
)

// progStart is when the program started; progress lines on stderr carry
// the time since then so slow phases are visible.
var progStart = time.Now()

// logf writes one progress line to stderr (stdout is kept for the result).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nats-bench: %6.2fs "+format+"\n", append([]any{time.Since(progStart).Seconds()}, args...)...)
}

// config holds the command-line flags.
type config struct {
	natsServer  string
	nodes       int
	connections int
	duration    time.Duration
	warmup      time.Duration
	size        int
	rate        float64
	basePort    int
	pubTimeout  time.Duration
	jsonOut     bool
	keepDir     bool
	syncSetting string // debug only: value of jetstream.sync_interval
}

func main() {
	os.Exit(run())
}

// run does the whole job and returns the exit code. It is separate from main
// so that its deferred cleanup (stopping servers, removing the temp dir)
// always runs before the process exits.
func run() int {
	var cfg config
	flag.StringVar(&cfg.natsServer, "nats-server", "nats-server", "path to the nats-server binary")
	flag.IntVar(&cfg.nodes, "nodes", 3, "number of nats-server nodes; the stream has this many replicas (1..5)")
	flag.IntVar(&cfg.connections, "connections", 100, "number of NATS connections, one publisher each")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured duration (after warm-up)")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "warm-up before measuring (load is sent, not counted)")
	flag.IntVar(&cfg.size, "size", 64, "payload size in bytes")
	flag.Float64Var(&cfg.rate, "rate", 0, "target total msg/s over all connections; 0 = closed loop")
	flag.IntVar(&cfg.basePort, "base-port", 14222, "client port of node 0; node i uses base+i (client), base+100+i (cluster), base+200+i (monitoring)")
	flag.DurationVar(&cfg.pubTimeout, "pub-timeout", 5*time.Second, "timeout for one publish to be acked")
	flag.BoolVar(&cfg.jsonOut, "json", false, "print one JSON object instead of the Markdown table")
	flag.BoolVar(&cfg.keepDir, "keep-dir", false, "keep the temp dir (configs, server logs, store dirs) for debugging")
	flag.StringVar(&cfg.syncSetting, "sync-interval", "always", "debug only: jetstream sync_interval (\"always\" = fsync before every ack; a duration such as 2m = NATS default background fsync, NOT durable, for comparison)")
	flag.Parse()
	if err := validate(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "nats-bench:", err)
		return 2
	}

	// Ctrl-C / SIGTERM cancel ctx; every phase watches it and the deferred
	// cleanup below then stops the servers. The handler stays installed
	// until run returns, so a second Ctrl-C cannot interrupt cleanup.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "keel-nats-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats-bench:", err)
		return 1
	}
	defer func() {
		if cfg.keepDir {
			fmt.Fprintln(os.Stderr, "nats-bench: kept", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "nats-bench: removing temp dir:", err)
		}
	}()

	c := &cluster{cfg: cfg, dir: dir}
	defer func() { // runs before the temp dir is removed (defers are LIFO)
		if len(c.nodes) > 0 {
			c.stop()
			logf("servers stopped")
		}
	}()
	if err := c.start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "nats-bench:", err)
		c.printLogTails()
		return 1
	}

	res, err := benchmark(ctx, cfg, c.clientURLs())
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats-bench:", err)
		if ctx.Err() == nil {
			c.printLogTails()
		}
		return 1
	}
	if cfg.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		res.writeMarkdown(os.Stdout)
	}
	if !res.Check.OK {
		return 1
	}
	return 0
}

// validate bounds every flag so nothing downstream can loop or allocate
// without limit.
func validate(cfg config) error {
	switch {
	case cfg.nodes < 1 || cfg.nodes > maxNodes:
		return fmt.Errorf("--nodes %d outside 1..%d", cfg.nodes, maxNodes)
	case cfg.connections < 1 || cfg.connections > 10_000:
		return fmt.Errorf("--connections %d outside 1..10000", cfg.connections)
	case cfg.duration <= 0 || cfg.duration > 10*time.Minute:
		return fmt.Errorf("--duration %v outside (0, 10m]", cfg.duration)
	case cfg.warmup < 0 || cfg.warmup > time.Minute:
		return fmt.Errorf("--warmup %v outside [0, 1m]", cfg.warmup)
	case cfg.size < 1 || cfg.size > 1<<20:
		return fmt.Errorf("--size %d outside 1..1048576 (nats max_payload)", cfg.size)
	case cfg.rate < 0 || cfg.rate > 10_000_000:
		return fmt.Errorf("--rate %v outside [0, 1e7]", cfg.rate)
	case cfg.basePort < 1024 || cfg.basePort+200+cfg.nodes > 65535:
		return fmt.Errorf("--base-port %d: ports base..base+200+nodes must lie in 1024..65535", cfg.basePort)
	case cfg.pubTimeout <= 0 || cfg.pubTimeout > time.Minute:
		return fmt.Errorf("--pub-timeout %v outside (0, 1m]", cfg.pubTimeout)
	}
	if cfg.syncSetting != "always" {
		if d, err := time.ParseDuration(cfg.syncSetting); err != nil || d <= 0 {
			return fmt.Errorf("--sync-interval %q: want \"always\" or a positive duration", cfg.syncSetting)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Cluster: N nats-server processes on 127.0.0.1.
// ---------------------------------------------------------------------------

// cluster owns the nats-server processes this program started.
type cluster struct {
	cfg   config
	dir   string
	nodes []*node
}

// node is one nats-server process.
type node struct {
	name       string
	clientPort int
	routePort  int
	httpPort   int
	logPath    string
	cmd        *exec.Cmd
	exited     chan struct{} // closed when the process has been reaped
	exitErr    error         // valid after exited is closed
}

func (c *cluster) clientURLs() []string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort)
	}
	return urls
}

// configText is the nats-server config of node i. JetStream file storage in
// the node's own store_dir with fsync on every write (sync_interval: always,
// see the package comment for where that key was verified); a cluster block
// (routes to every node, including itself, which the server ignores) when
// there is more than one node; a monitoring port used to check the settings.
func (c *cluster) configText(i int, storeDir string) string {
	n := c.nodes[i]
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\n", n.name)
	fmt.Fprintf(&b, "listen: \"127.0.0.1:%d\"\n", n.clientPort)
	fmt.Fprintf(&b, "http: \"127.0.0.1:%d\"\n", n.httpPort)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  sync_interval: %q\n}\n", storeDir, c.cfg.syncSetting)
	if len(c.nodes) > 1 {
		routes := make([]string, len(c.nodes))
		for j, m := range c.nodes {
			routes[j] = fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", m.routePort))
		}
		fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n",
			clusterName, n.routePort, strings.Join(routes, ", "))
	}
	return b.String()
}

// start launches every node, then waits (bounded by readyTimeout) until each
// accepts TCP connections and reports sync_always in /varz. Stream creation
// (which also waits for the meta leader) happens in benchmark.
func (c *cluster) start(ctx context.Context) error {
	bin, err := exec.LookPath(c.cfg.natsServer)
	if err != nil {
		return fmt.Errorf("nats-server binary: %w", err)
	}
	for i := range c.cfg.nodes {
		c.nodes = append(c.nodes, &node{
			name:       fmt.Sprintf("n%d", i),
			clientPort: c.cfg.basePort + i,
			routePort:  c.cfg.basePort + 100 + i,
			httpPort:   c.cfg.basePort + 200 + i,
		})
	}
	// Fail early and clearly if a port is taken (e.g. a leftover server or
	// something of the other engineer's) rather than joining a stranger.
	for _, n := range c.nodes {
		for _, p := range []int{n.clientPort, n.routePort, n.httpPort} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return fmt.Errorf("port %d is not free (pick another --base-port): %w", p, err)
			}
			_ = l.Close()
		}
	}
	for i, n := range c.nodes {
		nodeDir := filepath.Join(c.dir, n.name)
		if err := os.MkdirAll(nodeDir, 0o755); err != nil {
			return err
		}
		confPath := filepath.Join(nodeDir, "nats.conf")
		if err := os.WriteFile(confPath, []byte(c.configText(i, filepath.Join(nodeDir, "store"))), 0o644); err != nil {
			return err
		}
		n.logPath = filepath.Join(nodeDir, "server.log")
		logFile, err := os.Create(n.logPath)
		if err != nil {
			return err
		}
		n.cmd = exec.Command(bin, "-c", confPath)
		n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
		n.cmd.SysProcAttr = &syscall.SysProcAttr{
			// Own process group: a terminal Ctrl-C reaches only us, and we
			// stop the servers in order (SIGTERM, then SIGKILL).
			Setpgid: true,
			// If this program is SIGKILLed the kernel kills the servers.
			// (Pdeathsig fires when the forking OS thread exits; the Go
			// runtime does not retire threads unless a goroutine exits
			// while locked to its thread, which nothing here does.)
			Pdeathsig: syscall.SIGKILL,
		}
		if err := n.cmd.Start(); err != nil {
			_ = logFile.Close()
			return fmt.Errorf("starting %s: %w", n.name, err)
		}
		n.exited = make(chan struct{})
		go func(n *node, f *os.File) {
			n.exitErr = n.cmd.Wait()
			_ = f.Close()
			close(n.exited)
		}(n, logFile)
	}

	logf("started %d nats-server processes in %s", len(c.nodes), c.dir)
	deadline := time.Now().Add(readyTimeout)
	for _, n := range c.nodes {
		if err := c.waitNodeReady(ctx, n, deadline); err != nil {
			return err
		}
	}
	logf("all nodes up, meta leader known, /varz jetstream.config.sync_always=%t on each", c.cfg.syncSetting == "always")
	return nil
}

// waitNodeReady polls a node's monitoring endpoint until /varz answers and
// shows JetStream enabled with sync_always and (clustered) a meta leader
// known to this node, or the deadline passes.
func (c *cluster) waitNodeReady(ctx context.Context, n *node, deadline time.Time) error {
	client := &http.Client{Timeout: 2 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/varz", n.httpPort)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.exited:
			return fmt.Errorf("%s exited during startup: %v (log %s)", n.name, n.exitErr, n.logPath)
		default:
		}
		var v struct {
			JetStream struct {
				Config *struct {
					SyncAlways bool   `json:"sync_always"`
					StoreDir   string `json:"store_dir"`
				} `json:"config"`
				Meta *struct {
					Leader string `json:"leader"`
				} `json:"meta"`
			} `json:"jetstream"`
		}
		resp, err := client.Get(url)
		if err == nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v)
			_ = resp.Body.Close()
		}
		if err == nil {
			if v.JetStream.Config == nil {
				err = errors.New("jetstream not enabled yet")
			} else if want := c.cfg.syncSetting == "always"; v.JetStream.Config.SyncAlways != want {
				// The server parsed the config but did not turn fsync-always
				// on (or off): stop, the comparison would be meaningless.
				return fmt.Errorf("%s: /varz jetstream.config.sync_always is %t, want %t; config key not honoured",
					n.name, v.JetStream.Config.SyncAlways, want)
			} else if c.cfg.nodes > 1 && (v.JetStream.Meta == nil || v.JetStream.Meta.Leader == "") {
				// Stream creation before the meta leader exists just times out.
				err = errors.New("no JetStream meta leader yet")
			} else {
				return nil
			}
		}
		lastErr = err
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v: %v", n.name, readyTimeout, lastErr)
}

// stop sends SIGTERM to every node that is still running, waits up to
// stopGrace for all of them together, then SIGKILLs the rest and reaps them.
// Only processes this program started (by their own PID) are signalled.
func (c *cluster) stop() {
	for _, n := range c.nodes {
		if n.cmd != nil && n.cmd.Process != nil && n.exited != nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	grace := time.After(stopGrace)
	for _, n := range c.nodes {
		if n.exited == nil {
			continue
		}
		select {
		case <-n.exited:
		case <-grace:
			_ = n.cmd.Process.Signal(syscall.SIGKILL)
			select {
			case <-n.exited:
			case <-time.After(stopGrace): // cannot happen for SIGKILL, but stay bounded
				fmt.Fprintf(os.Stderr, "nats-bench: %s (pid %d) did not exit after SIGKILL\n", n.name, n.cmd.Process.Pid)
			}
		}
	}
}

// printLogTails shows the end of each server log to explain a failure.
func (c *cluster) printLogTails() {
	for _, n := range c.nodes {
		if n.logPath == "" {
			continue
		}
		b, err := os.ReadFile(n.logPath)
		if err != nil {
			continue
		}
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		fmt.Fprintf(os.Stderr, "--- %s log tail (%s) ---\n%s\n", n.name, n.logPath, b)
	}
}

// ---------------------------------------------------------------------------
// Load.
// ---------------------------------------------------------------------------

// Quantiles of latency in milliseconds (same JSON shape as Keel's report).
type Quantiles struct {
	P50    float64 `json:"p50"`
	P99    float64 `json:"p99"`
	P999   float64 `json:"p99_9"`
	P9999  float64 `json:"p99_99"`
	P99999 float64 `json:"p99_999"`
	Max    float64 `json:"max"`
}

// Check compares what was acknowledged with what the stream holds.
type Check struct {
	AckedTotal     int64  `json:"acked_total"`     // every PubAck received, warm-up included
	StreamMessages uint64 `json:"stream_messages"` // State.Msgs from stream info at the end
	StreamLastSeq  uint64 `json:"stream_last_seq"`
	DistinctSeqs   bool   `json:"distinct_ack_seqs"` // no two acks carried the same sequence
	Duplicates     int64  `json:"duplicate_acks"`    // PubAck.Duplicate set (never expected: no Msg-Id)
	ReplicasOK     bool   `json:"replicas_current"`  // every replica current, 0 lag, at the end
	OK             bool   `json:"ok"`
	Verdict        string `json:"verdict"`
}

// Result is one run, in the field names of Keel's report rows where they
// overlap (scenario, mode, connections, duration_s, requests, errors,
// first_error, messages_per_s, latency_ms).
type Result struct {
	Scenario     string    `json:"scenario"`
	Description  string    `json:"description"`
	Mode         string    `json:"mode"` // "closed-loop" or "rate N/s"
	Connections  int       `json:"connections"`
	Nodes        int       `json:"nodes"`
	SizeBytes    int       `json:"size_bytes"`
	DurationSec  float64   `json:"duration_s"` // measured window start to last worker done
	Requests     int64     `json:"requests"`   // publishes started in the measured window
	Errors       int64     `json:"errors"`
	Unsent       int64     `json:"unsent,omitempty"` // open loop: sends due in the window never issued (hard stop)
	FirstError   string    `json:"first_error,omitempty"`
	MessagesPerS float64   `json:"messages_per_s"` // acked publishes per second
	LatencyMs    Quantiles `json:"latency_ms"`
	Check        Check     `json:"check"`
	NATSServer   string    `json:"nats_server"`
	Config       string    `json:"server_config"`
}

// benchmark creates the stream, runs the load and checks the stream.
func benchmark(ctx context.Context, cfg config, urls []string) (*Result, error) {
	// An admin connection that knows every server, for stream management.
	admin, err := nats.Connect(strings.Join(urls, ","), nats.Name("keel-bench-admin"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("admin connect: %w", err)
	}
	defer admin.Close()
	ajs, err := jetstream.New(admin)
	if err != nil {
		return nil, err
	}
	stream, err := createStream(ctx, ajs, cfg)
	if err != nil {
		return nil, err
	}
	logf("stream %s created (R%d, file), leader elected, replicas current", streamName, cfg.nodes)

	// One connection per publisher, spread round-robin over the servers the
	// way a client population would spread.
	conns := make([]*nats.Conn, cfg.connections)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	workers := make([]*worker, cfg.connections)
	for i := range conns {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		nc, err := nats.Connect(urls[i%len(urls)], nats.Name(fmt.Sprintf("keel-bench-%d", i)),
			nats.Timeout(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = nc
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		payload := make([]byte, cfg.size)
		for j := range payload {
			payload[j] = byte(rand.IntN(256))
		}
		workers[i] = &worker{js: js, payload: payload, timeout: cfg.pubTimeout,
			hist: hdrhistogram.New(1, histMaxMicros, 3)}
	}

	logf("%d connections open; warm-up %v, then measuring %v", cfg.connections, cfg.warmup, cfg.duration)

	// Time line: [start, measureStart) warm-up, [measureStart, deadline)
	// measured. A publish counts if its (intended) send time falls in the
	// measured window; the last ones are allowed to finish.
	start := time.Now()
	measureStart := start.Add(cfg.warmup)
	deadline := measureStart.Add(cfg.duration)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i, w := range workers {
		if cfg.rate > 0 {
			// Each connection sends every connections/rate seconds; the
			// connections are staggered evenly over one interval.
			w.interval = time.Duration(float64(cfg.connections) / cfg.rate * float64(time.Second))
			w.next = start.Add(time.Duration(i) * w.interval / time.Duration(cfg.connections))
		}
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx, measureStart, deadline, &stop) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Hard bound: a stuck cluster cannot hold the run forever. Past the
	// deadline plus one publish timeout, workers stop starting publishes;
	// in-flight ones end by their own timeout.
	hard := time.NewTimer(time.Until(deadline.Add(cfg.pubTimeout)))
	defer hard.Stop()
	select {
	case <-done:
	case <-hard.C:
		stop.Store(true)
		<-done // every publish has its own timeout, so this is bounded
	case <-ctx.Done():
		stop.Store(true)
		<-done
		return nil, ctx.Err()
	}
	elapsed := time.Since(measureStart)
	logf("load done")

	res := &Result{
		Scenario:    fmt.Sprintf("nats-jetstream R%d produce-%d", cfg.nodes, cfg.size),
		Description: fmt.Sprintf("JetStream sync publish, %d B payload, stream %s R%d file storage, sync_interval %s", cfg.size, streamName, cfg.nodes, cfg.syncSetting),
		Mode:        "closed-loop",
		Connections: cfg.connections,
		Nodes:       cfg.nodes,
		SizeBytes:   cfg.size,
		DurationSec: elapsed.Seconds(),
		Config:      fmt.Sprintf("jetstream { sync_interval: %s }, stream file storage, replicas %d", cfg.syncSetting, cfg.nodes),
	}
	if cfg.syncSetting != "always" {
		// Make a non-durable debug run impossible to mistake for the real one.
		res.Scenario += " (sync_interval " + cfg.syncSetting + ", NOT fsync-always)"
	}
	if cfg.rate > 0 {
		res.Mode = fmt.Sprintf("rate %.0f/s", cfg.rate)
	}
	if out, err := exec.Command(cfg.natsServer, "--version").Output(); err == nil {
		res.NATSServer = strings.TrimSpace(string(out))
	}
	hist := hdrhistogram.New(1, histMaxMicros, 3)
	var acked int64
	var seqs []uint64
	for _, w := range workers {
		hist.Merge(w.hist)
		res.Requests += w.requests
		res.Errors += w.errors
		res.Unsent += w.unsent
		acked += w.acked
		res.Check.AckedTotal += w.ackedTotal
		res.Check.Duplicates += w.duplicates
		seqs = append(seqs, w.seqs...)
		if res.FirstError == "" {
			res.FirstError = w.firstError
		}
	}
	res.MessagesPerS = float64(acked) / elapsed.Seconds()
	ms := func(q float64) float64 { return float64(hist.ValueAtQuantile(q)) / 1000 }
	res.LatencyMs = Quantiles{P50: ms(50), P99: ms(99), P999: ms(99.9), P9999: ms(99.99),
		P99999: ms(99.999), Max: float64(hist.Max()) / 1000}

	slices.Sort(seqs)
	res.Check.DistinctSeqs = len(slices.Compact(seqs)) == len(seqs)
	if err := checkStream(ctx, stream, &res.Check); err != nil {
		return nil, err
	}
	return res, nil
}

// createStream retries stream creation (which fails until the JetStream
// meta leader is elected and enough peers are known) and then waits until
// the stream has a leader and every replica is current, all within
// readyTimeout.
func createStream(ctx context.Context, js jetstream.JetStream, cfg config) (jetstream.Stream, error) {
	deadline := time.Now().Add(readyTimeout)
	sc := jetstream.StreamConfig{
		Name:      streamName,
		Subjects:  []string{subject},
		Replicas:  cfg.nodes,
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
		// Default persist mode: writes go through the (sync-always) file
		// store before the ack. AsyncPersistMode would disable sync-always.
		PersistMode: jetstream.DefaultPersistMode,
	}
	var stream jetstream.Stream
	var lastErr error
	for stream == nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("stream %s not created within %v: %v", streamName, readyTimeout, lastErr)
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		// CreateOrUpdate so a retry after a timed-out-but-applied create
		// still succeeds.
		s, err := js.CreateOrUpdateStream(actx, sc)
		cancel()
		if err == nil {
			stream = s
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		lastErr = err
		sleepCtx(ctx, 250*time.Millisecond)
	}
	for {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("stream %s replicas not current within %v: %v", streamName, readyTimeout, lastErr)
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := stream.Info(actx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil {
			if info.Config.PersistMode != jetstream.DefaultPersistMode {
				return nil, fmt.Errorf("stream persist mode is %v, want default", info.Config.PersistMode)
			}
			if info.Config.Replicas != cfg.nodes || info.Config.Storage != jetstream.FileStorage {
				return nil, fmt.Errorf("stream has replicas %d storage %v", info.Config.Replicas, info.Config.Storage)
			}
			if replicasCurrent(info, cfg.nodes) {
				return stream, nil
			}
			err = errors.New("waiting for stream leader and current replicas")
		}
		lastErr = err
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// replicasCurrent reports whether the stream has a leader and nodes-1
// followers that are all current, online and without lag.
func replicasCurrent(info *jetstream.StreamInfo, nodes int) bool {
	if nodes == 1 {
		return true
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != nodes-1 {
		return false
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline || p.Lag != 0 {
			return false
		}
	}
	return true
}

// checkStream reads the stream state at the end and compares it with the
// acks. Every acked message must be stored: with no deletes and distinct
// ack sequences, stored == acked means exactly the acked messages are
// there. Publishes that failed (timeout) may still have been stored, so
// acked <= stored <= acked+errors is also accepted when there were errors.
func checkStream(ctx context.Context, stream jetstream.Stream, ch *Check) error {
	var info *jetstream.StreamInfo
	var err error
	// Give followers a moment to report current (bounded, 10 s).
	for i := 0; i < 100; i++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err = stream.Info(actx)
		cancel()
		if err == nil && replicasCurrent(info, info.Config.Replicas) {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("final stream info: %w", err)
	}
	ch.StreamMessages = info.State.Msgs
	ch.StreamLastSeq = info.State.LastSeq
	ch.ReplicasOK = replicasCurrent(info, info.Config.Replicas)
	stored, acked := int64(info.State.Msgs), ch.AckedTotal
	switch {
	case stored < acked:
		ch.Verdict = fmt.Sprintf("LOST: %d acked messages are not in the stream", acked-stored)
	case !ch.DistinctSeqs || ch.Duplicates > 0:
		ch.Verdict = "BAD: repeated ack sequences or duplicate acks"
	case stored == acked:
		ch.OK = true
		ch.Verdict = "ok: stored == acked"
	default:
		ch.OK = true
		ch.Verdict = fmt.Sprintf("ok: %d more stored than acked (publishes that failed/timed out may still be stored)", stored-acked)
	}
	return nil
}

// worker is one connection's publisher. hdrhistogram is not goroutine-safe,
// so each worker has its own and they are merged at the end.
type worker struct {
	js       jetstream.JetStream
	payload  []byte
	timeout  time.Duration
	interval time.Duration // open loop: time between intended sends (0 = closed loop)
	next     time.Time     // open loop: this worker's next intended send

	hist       *hdrhistogram.Histogram // µs, measured window only
	requests   int64                   // publishes started in the measured window
	acked      int64                   // of which acked
	errors     int64                   // of which failed
	ackedTotal int64                   // every ack, warm-up included (for the stream check)
	duplicates int64
	seqs       []uint64 // sequence of every ack, warm-up included
	unsent     int64    // open loop: sends due in the window never issued
	firstError string
}

// run publishes until the measured window ends. Closed loop: the next
// publish starts when the previous ack arrives (one in flight). Open loop:
// publishes are due at a fixed schedule; if one is late because the
// previous ack was slow, it is sent immediately and its latency is measured
// from when it was due, so waiting caused by the system under test is
// counted (no coordinated omission), exactly like Keel's own bench.
func (w *worker) run(ctx context.Context, measureStart, deadline time.Time, stop *atomic.Bool) {
	defer func() {
		// Open loop, cut off by the hard stop while behind schedule: count
		// the sends that were due in the measured window but never went
		// out, so an overloaded run cannot look better than it was.
		if w.interval > 0 && w.next.Before(deadline) {
			from := w.next
			if from.Before(measureStart) {
				from = measureStart
			}
			w.unsent = int64((deadline.Sub(from) + w.interval - 1) / w.interval)
		}
	}()
	for !stop.Load() && ctx.Err() == nil {
		intended := time.Now()
		if w.interval > 0 {
			intended = w.next
			w.next = w.next.Add(w.interval)
			if wait := time.Until(intended); wait > 0 && !intended.After(deadline) {
				sleepCtx(ctx, wait)
			}
		}
		if !intended.Before(deadline) {
			return
		}
		measured := !intended.Before(measureStart)
		pctx, cancel := context.WithTimeout(ctx, w.timeout)
		ack, err := w.js.Publish(pctx, subject, w.payload)
		cancel()
		lat := max(time.Since(intended).Microseconds(), 1)
		if err == nil {
			w.ackedTotal++
			w.seqs = append(w.seqs, ack.Sequence)
			if ack.Duplicate {
				w.duplicates++
			}
		}
		if !measured {
			continue
		}
		if ctx.Err() != nil {
			return // interrupted: do not count the cancelled publish
		}
		// Like Keel's bench, every attempt's latency is recorded (a failed
		// one counts with the time it took to fail).
		_ = w.hist.RecordValue(min(lat, histMaxMicros))
		w.requests++
		if err != nil {
			w.errors++
			if w.firstError == "" {
				w.firstError = err.Error()
			}
			continue
		}
		w.acked++
	}
}

// writeMarkdown prints the table row (header included) and the stream check.
func (r *Result) writeMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| scenario | mode | conns | msg/s | p50 ms | p99 ms | p99.9 ms | p99.99 ms | p99.999 ms | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	q := r.LatencyMs
	fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %d |\n",
		r.Scenario, r.Mode, r.Connections, r.MessagesPerS, q.P50, q.P99, q.P999, q.P9999, q.P99999, r.Errors)
	fmt.Fprintf(w, "\nstream %s: %d messages stored, %d acks received (warm-up included) -> %s\n",
		streamName, r.Check.StreamMessages, r.Check.AckedTotal, r.Check.Verdict)
	fmt.Fprintf(w, "measured: %d publishes in %.2f s, max %.2f ms, replicas current at end: %t, %s\n",
		r.Requests, r.DurationSec, q.Max, r.Check.ReplicasOK, r.NATSServer)
	if r.Unsent > 0 {
		fmt.Fprintf(w, "OVERLOADED: %d sends due in the measured window were never issued (hard stop one --pub-timeout after the window; target rate not reached)\n",
			r.Unsent)
	}
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

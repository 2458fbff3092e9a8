package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"keel/bench"
)

// benchCmd is `keel bench`: the load generator of package bench, run
// against a Keel server (one it starts itself unless --target is given) and
// a no-op server beside it, with markdown and JSON output.
func benchCmd(args []string) int {
	fs := flag.NewFlagSet("keel bench", flag.ContinueOnError)
	target := fs.String("target", "", "Keel server URL; empty: start bin/keel-like server from this binary on a free port")
	token := fs.String("token", "dev", "bearer token")
	conns := fs.Int("connections", 100, "concurrent connections")
	duration := fs.Duration("duration", 10*time.Second, "length of each run")
	rate := fs.Float64("rate", 0, "constant request rate over all connections (0 = closed loop, as fast as answered)")
	rateFraction := fs.Float64("rate-fraction", 0, "also run each scenario at this fraction of its closed-loop rate (e.g. 0.5), latency measured from intended send times")
	noop := fs.Bool("noop", true, "run every scenario against a no-op HTTP server too and report the ratio")
	out := fs.String("out", "", "write the report to OUT.md and OUT.json")
	restart := fs.String("restart-messages", "", "comma-separated message counts for restart-after-kill-9 runs (e.g. 1000000,8000000)")
	diskProbe := fs.Duration("disk-probe", 5*time.Second, "after the scenarios, time single appends + fdatasync on the data directory's disk for this long (0 = skip; at most 1m)")
	kvFill := fs.Int64("kv-fill-keys", 0, "put this many KV keys (--kv-fill-value-bytes each, 100 connections) into a fresh node, report its resident memory, kill -9 it and time the restart")
	kvFillValue := fs.Int("kv-fill-value-bytes", 1024, "value size for --kv-fill-keys")
	queryMessages := fs.Int("query-messages", 0, "time stream queries (filter + group_by over this many stored orders of ~100 B, as JSON, Avro binary and Protobuf binary) and a join (--query-join-messages per side, 60 s window) on a fresh node")
	queryJoin := fs.Int("query-join-messages", 100_000, "messages on each side of the join for --query-messages")
	queryRuns := fs.Int("query-runs", 5, "runs of each query for --query-messages (the median is reported)")
	streams := fs.Int("stream-streams", 0, "measure Server-Sent Events delivery: open this many streams on a fresh node while durable produce runs at --stream-rate, then time a consumer group rebalance (0 = skip)")
	streamRate := fs.Float64("stream-rate", 10_000, "produce rate for --stream-streams")
	list := fs.Bool("list", false, "list the scenarios and exit")
	cluster := fs.Int("cluster", 0, "also start a cluster of this many local nodes (2..7) and run the scenarios against its leader, after the single node, in the same run")
	catchup := fs.Int64("catchup-messages", 0, "with --cluster: time a follower catching up after this many 64 B messages were written while it was down (killed, then wiped)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: keel bench [flags] [scenario ...]   (default: every scenario; \"none\": only the runs the flags ask for)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *list {
		for _, s := range bench.Scenarios() {
			fmt.Printf("%-14s %s\n", s.Name, s.Description)
		}
		fmt.Println("run only when named:")
		for _, s := range bench.ExtraScenarios() {
			fmt.Printf("%-14s %s\n", s.Name, s.Description)
		}
		return 0
	}
	scenarios, err := pickScenarios(fs.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "keel bench:", err)
		return 2
	}
	if *cluster != 0 && (*cluster < 2 || *cluster > 7 || *target != "") {
		fmt.Fprintln(os.Stderr, "keel bench: --cluster takes 2 to 7 nodes, and starts them itself (not with --target)")
		return 2
	}
	if *catchup != 0 && (*cluster == 0 || *catchup < 1000) {
		fmt.Fprintln(os.Stderr, "keel bench: --catchup-messages needs --cluster and at least 1000 messages")
		return 2
	}
	if err := runBench(benchOptions{*target, *token, *conns, *duration, *rate, *rateFraction, *noop, *out, *restart, *diskProbe, scenarios, *cluster, *catchup, *kvFill, *kvFillValue, *queryMessages, *queryJoin, *queryRuns, *streams, *streamRate}); err != nil {
		fmt.Fprintln(os.Stderr, "keel bench:", err)
		return 1
	}
	return 0
}

type benchOptions struct {
	target, token      string
	conns              int
	duration           time.Duration
	rate, rateFraction float64
	noop               bool
	out, restart       string
	diskProbe          time.Duration
	scenarios          []bench.Scenario
	cluster            int
	catchup            int64
	kvFillKeys         int64
	kvFillValueBytes   int
	queryMessages      int
	queryJoinMessages  int
	queryRuns          int
	streams            int
	streamRate         float64
}

func pickScenarios(names []string) ([]bench.Scenario, error) {
	if len(names) == 0 {
		return bench.Scenarios(), nil
	}
	if len(names) == 1 && names[0] == "none" {
		return nil, nil // only the runs flags ask for (restart, kv fill, catch-up)
	}
	var out []bench.Scenario
	for _, n := range names {
		s, ok := bench.ScenarioByName(n)
		if !ok {
			return nil, fmt.Errorf("unknown scenario %q (keel bench --list)", n)
		}
		out = append(out, s)
	}
	return out, nil
}

func runBench(o benchOptions) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	progress := bench.NewProgress()
	rep := bench.Report{Started: time.Now(), Machine: machine(), Command: "keel bench " + strings.Join(os.Args[2:], " ")}
	suite := bench.Suite{Target: o.target, Token: o.token, Connections: o.conns, Duration: o.duration,
		Rate: o.rate, RateFraction: o.rateFraction, Progress: progress}
	probeDir := os.TempDir() // with --target the server's data directory is unknown
	if suite.Target == "" && len(o.scenarios) > 0 {
		data, err := os.MkdirTemp("", "keel-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(data)
		probeDir = data
		srv, url, err := startChild(self, "serve", "--data", data, "--log-level", "warn")
		if err != nil {
			return err
		}
		defer stopChild(srv)
		suite.Target = url
		if _, err := bench.NewClient(url, o.token).WaitReady(time.Minute); err != nil {
			return err
		}
	}
	rep.Target = suite.Target
	if o.noop && len(o.scenarios) > 0 {
		noop, url, err := startChild(self, "bench-noop")
		if err != nil {
			return err
		}
		defer stopChild(noop)
		suite.NoopTarget = url
	}
	if len(o.scenarios) > 0 {
		if rep.Rows, err = suite.Run(o.scenarios); err != nil {
			return err
		}
	}
	if o.cluster > 0 && (len(o.scenarios) > 0 || o.catchup > 0) {
		rows, catchUps, err := benchCluster(self, o, suite, progress)
		if err != nil {
			return err
		}
		rep.Rows = append(rep.Rows, rows...)
		rep.CatchUp = catchUps
	}
	if o.diskProbe > 0 {
		progress.Done("disk probe", fmt.Sprintf("timing append + fdatasync for %v in %s", o.diskProbe, probeDir))
		d, err := bench.DiskRun{Dir: probeDir, Duration: o.diskProbe}.Run()
		if err != nil {
			return err
		}
		progress.Done("disk probe", fmt.Sprintf("%d syncs, p99 %.2f ms, p99.999 %.2f ms, max %.2f ms", d.Syncs, d.LatencyMs.P99, d.LatencyMs.P99999, d.LatencyMs.Max))
		rep.Disk = &d
	}
	for _, f := range strings.Split(o.restart, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 1000 {
			return fmt.Errorf("--restart-messages: %q is not a count of at least 1000", f)
		}
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		r, err := bench.RestartRun{Binary: self, Port: port, Messages: n, Connections: 4, Progress: progress}.Run()
		if err != nil {
			return err
		}
		progress.Done("restart "+r.Name, fmt.Sprintf("ready in %.3f s, last offset readable in %.3f s, peak RSS %.0f MB", r.ReadySec, r.ReadableSec, r.PeakRSSRestartMB))
		rep.Restart = append(rep.Restart, r)
	}
	if o.kvFillKeys > 0 {
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		r, err := bench.KVFillRun{Binary: self, Port: port, Keys: o.kvFillKeys, ValueBytes: o.kvFillValueBytes, Connections: 100, Progress: progress}.Run()
		if err != nil {
			return err
		}
		progress.Done("kv fill", fmt.Sprintf("%d keys: RSS %.0f MB loaded, ready in %.3f s after kill -9", r.Keys, r.RSSLoadedMB, r.ReadySec))
		rep.KVFill = append(rep.KVFill, r)
	}
	if o.queryMessages > 0 {
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		rs, iso, err := bench.QueryRun{Binary: self, Port: port, Messages: o.queryMessages, JoinMessages: o.queryJoinMessages, Runs: o.queryRuns, Progress: progress}.Run()
		rep.Query, rep.QueryIsolation = rs, iso
		if err != nil {
			return err
		}
		for _, r := range rs {
			progress.Done("query", fmt.Sprintf("%s: %.0f msg/s (median %.3f s)", r.Name, r.MsgsPerSec, r.MedianSec))
		}
	}
	if o.streams > 0 {
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		r, err := bench.StreamRun{Binary: self, Port: port, Streams: o.streams, Rate: o.streamRate, Duration: o.duration, Progress: progress}.Run()
		rep.Stream = r
		if err != nil {
			return err
		}
		progress.Done("stream", fmt.Sprintf("%d events: delivery p50 %.2f ms, p99 %.2f ms; rebalance %.2f s", r.Delivered, r.DeliveryP50Ms, r.DeliveryP99Ms, r.RebalanceSec))
	}
	rep.WriteMarkdown(os.Stdout)
	if o.out != "" {
		return rep.WriteFiles(o.out)
	}
	return nil
}

// startChild runs this binary with args plus --port on a free loopback
// port and returns it with its URL once it accepts connections.
func startChild(self string, args ...string) (*exec.Cmd, string, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, "", err
	}
	flagName := "--port"
	if args[0] == "bench-noop" {
		flagName = "--addr"
		args = append(args, flagName, "127.0.0.1:"+strconv.Itoa(port))
	} else {
		args = append(args, flagName, strconv.Itoa(port))
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return cmd, "http://" + addr, nil
		}
	}
	stopChild(cmd)
	return nil, "", fmt.Errorf("%s %s did not start listening", self, args[0])
}

func stopChild(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// benchNoopCmd is the hidden `keel bench-noop --addr A`: the no-op server.
func benchNoopCmd(args []string) int {
	fs := flag.NewFlagSet("keel bench-noop", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:18200", "listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "keel bench-noop:", err)
		return 1
	}
	if err := bench.ServeNoop(ln); err != nil {
		fmt.Fprintln(os.Stderr, "keel bench-noop:", err)
		return 1
	}
	return 0
}

// machine describes the host for the report.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if _, v, ok := strings.Cut(line, ":"); ok {
					model = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s/%s, %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// benchCluster starts n local nodes as a cluster (RF_HA_* as Ayder's
// scripts set it, each on a raft port and the HTTP port after it), waits
// for a leader and runs the scenarios against it; rows are named
// "scenario (N nodes)". Writes are acknowledged once a majority has them on
// disk.
func benchCluster(self string, o benchOptions, suite bench.Suite, progress *bench.Progress) ([]bench.Row, []bench.CatchUp, error) {
	var ports []int
	var spec []string
	for i := range o.cluster {
		p, err := freePortPair()
		if err != nil {
			return nil, nil, err
		}
		ports = append(ports, p)
		spec = append(spec, fmt.Sprintf("node%d:127.0.0.1:%d:%d", i+1, p, 100-i))
	}
	root, err := os.MkdirTemp("", "keel-bench-cluster")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(root)
	cmds := make([]*exec.Cmd, o.cluster)
	start := func(i int) error {
		cmd := exec.Command(self, "serve", "--data", fmt.Sprintf("%s/node%d", root, i+1), "--log-level", "warn")
		cmd.Env = append(os.Environ(), "RF_HA_ENABLED=1", fmt.Sprintf("RF_HA_NODE_ID=node%d", i+1), "RF_HA_NODES="+strings.Join(spec, ","))
		if i == 0 {
			cmd.Env = append(cmd.Env, "RF_HA_BOOTSTRAP_LEADER=1")
		}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmds[i] = cmd
		return cmd.Start()
	}
	for i := range o.cluster {
		if err := start(i); err != nil {
			return nil, nil, err
		}
	}
	defer func() {
		for _, cmd := range cmds {
			if cmd != nil && cmd.ProcessState == nil {
				stopChild(cmd)
			}
		}
	}()
	url := func(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", ports[i]+1) }
	// leaderOf waits for the leader the cluster settles on: the running
	// node of highest priority (node1, then node2, ...), which takes
	// leadership over from any other once it has caught up (priority
	// transfer). Measured before that, a run would see the hand-over in
	// the middle, its writes answered 307 by the old leader.
	leaderOf := func() (int, error) {
		for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(20 * time.Millisecond) {
			for i := range ports {
				if cmds[i].ProcessState != nil {
					continue
				}
				if role, err := haRole(url(i)); err == nil && role == 0 {
					return i, nil
				}
				break // the first running node is the one to wait for
			}
		}
		return -1, fmt.Errorf("the %d-node cluster: its running node of highest priority did not lead within a minute", o.cluster)
	}
	lead, err := leaderOf()
	if err != nil {
		return nil, nil, err
	}
	var rows []bench.Row
	if len(o.scenarios) > 0 {
		suite.Target, suite.NoopTarget = url(lead), ""
		rows, err = suite.Run(o.scenarios)
		for i := range rows {
			rows[i].Scenario = fmt.Sprintf("%s (%d nodes)", rows[i].Scenario, o.cluster)
		}
		if err != nil {
			return rows, nil, err
		}
	}
	if o.catchup == 0 {
		return rows, nil, nil
	}
	var catchUps []bench.CatchUp
	for _, wipe := range []bool{false, true} {
		if lead, err = leaderOf(); err != nil {
			return rows, catchUps, err
		}
		f := (lead + 1) % o.cluster
		cmds[f].Process.Signal(syscall.SIGKILL)
		cmds[f].Wait()
		if wipe {
			if err := os.RemoveAll(fmt.Sprintf("%s/node%d", root, f+1)); err != nil {
				return rows, catchUps, err
			}
		}
		name := "killed, restarted on its data"
		if wipe {
			name = "killed, data directory wiped"
		}
		progress.Done("catch-up", fmt.Sprintf("%s: writing %d messages while node%d is down", name, o.catchup, f+1))
		loadTook, err := bench.LoadNDJSON(url(lead), "bench-catchup", o.catchup, 4)
		if err != nil {
			return rows, catchUps, err
		}
		target, err := haNumber(url(lead), "ramforge_ha_commit_index")
		if err != nil {
			return rows, catchUps, err
		}
		t0 := time.Now()
		if err := start(f); err != nil {
			return rows, catchUps, err
		}
		for {
			applied, err := haNumber(url(f), "ramforge_ha_applied_index")
			if err == nil && applied >= target {
				break
			}
			if time.Since(t0) > 10*time.Minute {
				return rows, catchUps, fmt.Errorf("node%d did not catch up in 10 minutes (%s)", f+1, name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(t0)
		progress.Done("catch-up", fmt.Sprintf("%s: caught up %d messages in %.3f s", name, o.catchup, took.Seconds()))
		catchUps = append(catchUps, bench.CatchUp{Case: name, Nodes: o.cluster, Messages: o.catchup, LoadSec: loadTook.Seconds(), CatchSec: took.Seconds()})
	}
	return rows, catchUps, nil
}

// haNumber reads one unlabeled line of a node's /metrics_ha.
func haNumber(url, name string) (uint64, error) {
	resp, err := httpGet(url + "/metrics_ha")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(resp, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

// haRole reads ramforge_ha_role from a node's /metrics_ha.
func haRole(url string) (int, error) {
	resp, err := httpGet(url + "/metrics_ha")
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(resp, "\n") {
		if v, ok := strings.CutPrefix(line, "ramforge_ha_role "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return -1, errors.New("no ramforge_ha_role")
}

// freePortPair returns a loopback port p with p+1 free too (a node's raft
// and HTTP ports).
func freePortPair() (int, error) {
	for range 100 {
		p, err := freeLoopbackPort()
		if err != nil {
			return 0, err
		}
		if p >= 65535 {
			continue
		}
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1)); err == nil {
			ln.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free pair of ports")
}

// httpGet returns the body of a GET (2 s timeout).
func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"keel/ring"
)

// The crash test runs the real binary, loads it with 16 producers (half
// with idempotency keys, retrying on errors) and a committer, kills it
// with SIGKILL at random moments, restarts it, and checks after every
// restart that:
//   - every write answered "durable":true reads back at its partition and
//     offset with the same bytes;
//   - offsets are dense in every partition;
//   - no idempotency key was written twice;
//   - committed offsets never went back.

const (
	crashProducers  = 16
	crashCycles     = 5
	crashPartitions = 4
	crashTestMax    = 3 * time.Minute
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

// buildBinary builds keel once per test run (the same flags as make
// build) into a directory removed by TestMain.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "keel-test-bin")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "keel")
		cmd := exec.Command("go", "build", "-ldflags=-checklinkname=0", "-o", builtBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	if os.Getenv(memberEnv) != "" {
		runGroupMember() // this process is a group member of TestGroupMembersRebalanceCluster
		os.Exit(0)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

type keelProcess struct {
	cmd  *exec.Cmd
	url  string
	logs *strings.Builder
	mu   sync.Mutex
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startKeel(t *testing.T, bin, data string, port int) *keelProcess {
	return startKeelWith(t, bin, data, port, "")
}

// startKeelWith starts the server with KEEL_IO_BACKEND=backend (the
// default backend when empty).
func startKeelWith(t *testing.T, bin, data string, port int, backend ring.Kind) *keelProcess {
	t.Helper()
	return startKeelOpts(t, bin, data, port, keelOpts{backend: backend})
}

// keelOpts are how a test starts a server beyond its data and port.
type keelOpts struct {
	backend ring.Kind // KEEL_IO_BACKEND; "" = the default
	nofile  int       // ulimit -n for the process; 0 = inherited
	args    []string  // more flags
}

func startKeelOpts(t *testing.T, bin, data string, port int, o keelOpts) *keelProcess {
	t.Helper()
	p := &keelProcess{url: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &strings.Builder{}}
	args := append([]string{"serve", "--port", fmt.Sprint(port), "--data", data, "--checkpoint-bytes", "1048576"}, o.args...)
	if o.nofile > 0 {
		p.cmd = exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, o.nofile), bin}, args...)...)
	} else {
		p.cmd = exec.Command(bin, args...)
	}
	p.cmd.Env = append(os.Environ(), ring.EnvBackend+"="+string(o.backend))
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, &lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(p.url + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			t.Fatalf("keel not ready after 30s; log:\n%s", p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedWriter struct{ p *keelProcess }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.logs.Write(b)
}

func (p *keelProcess) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func (p *keelProcess) kill9(t *testing.T) {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
}

var client = &http.Client{Timeout: 10 * time.Second}

func call(method, url, body string) (map[string]any, int, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer dev")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, resp.StatusCode, err
	}
	return m, resp.StatusCode, nil
}

// ack is one write answered durable.
type ack struct {
	partition, offset int
	value             string
}

type crashState struct {
	mu        sync.Mutex
	acks      []ack
	pending   map[string]string // idempotency key -> value, sent but not acknowledged
	commits   [crashPartitions]int
	duplicate int
}

func TestCrashKill9HTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	deadline := time.Now().Add(crashTestMax)
	bin := buildBinary(t)
	data := t.TempDir()
	port := freePort(t)
	st := &crashState{pending: map[string]string{}}
	for i := range st.commits {
		st.commits[i] = -1
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	// Restarts alternate between the I/O backends this machine has, so each
	// is killed mid-write and each recovers what the other wrote.
	backends := []ring.Kind{ring.KindSyscall}
	if ring.UringAvailable() == nil {
		backends = append(backends, ring.KindUring)
	}
	p := startKeelWith(t, bin, data, port, backends[0])
	if _, code, err := call("POST", p.url+"/broker/topics", fmt.Sprintf(`{"name":"crash","partitions":%d}`, crashPartitions)); err != nil || code != 200 {
		t.Fatalf("create topic: %d %v", code, err)
	}
	seq := 0
	for cycle := 0; cycle < crashCycles && time.Now().Before(deadline); cycle++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := 0; g < crashProducers; g++ {
			wg.Add(1)
			go func(g int) { defer wg.Done(); produceLoop(p.url, g, cycle, st, stop) }(g)
		}
		wg.Add(1)
		go func() { defer wg.Done(); commitLoop(p.url, st, stop) }()
		time.Sleep(time.Duration(150+rng.Intn(600)) * time.Millisecond)
		p.kill9(t)
		close(stop)
		wg.Wait()
		p = startKeelWith(t, bin, data, port, backends[(cycle+1)%len(backends)])
		retryPending(t, p.url, st)
		verify(t, p.url, st, cycle)
		seq++
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("clean shutdown after SIGTERM: %v\n%s", err, p.log())
	}
	if seq < crashCycles {
		t.Fatalf("only %d kill cycles ran within %v", seq, crashTestMax)
	}
}

// produceLoop writes until stop. Even producers use idempotency keys and
// keep a write pending until it is acknowledged; odd ones do not.
func produceLoop(url string, g, cycle int, st *crashState, stop chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		value := fmt.Sprintf("c%d-p%d-%d-%s", cycle, g, i, strings.Repeat("x", i%50))
		path := fmt.Sprintf("%s/broker/topics/crash/produce?partition=%d", url, (g+i)%crashPartitions)
		key := ""
		if g%2 == 0 {
			key = fmt.Sprintf("idem-%d-%d-%d", cycle, g, i)
			path = fmt.Sprintf("%s/broker/topics/crash/produce?idempotency_key=%s", url, key)
			st.mu.Lock()
			st.pending[key] = value
			st.mu.Unlock()
		} else if i%3 == 0 {
			path = fmt.Sprintf("%s/broker/topics/crash/produce?key=k%d", url, i%7)
		}
		m, code, err := call("POST", path, value)
		if err != nil || code != 200 {
			if key != "" {
				return // the pending write is retried after the restart
			}
			continue
		}
		recordAck(st, m, value, key)
	}
}

func recordAck(st *crashState, m map[string]any, value, key string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if key != "" {
		delete(st.pending, key)
	}
	if m["durable"] != true {
		return
	}
	if m["duplicate"] == true {
		st.duplicate++
	}
	st.acks = append(st.acks, ack{partition: int(m["partition"].(float64)), offset: int(m["offset"].(float64)), value: value})
}

// commitLoop commits, per partition, an offset that was acknowledged.
func commitLoop(url string, st *crashState, stop chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		st.mu.Lock()
		if len(st.acks) == 0 {
			st.mu.Unlock()
			continue
		}
		a := st.acks[len(st.acks)-1-i%min(len(st.acks), 50)]
		st.mu.Unlock()
		body := fmt.Sprintf(`{"topic":"crash","group":"g","partition":%d,"offset":%d}`, a.partition, a.offset)
		m, code, err := call("POST", url+"/broker/commit", body)
		if err == nil && code == 200 && m["ok"] == true && m["ignored"] != true {
			st.mu.Lock()
			st.commits[a.partition] = max(st.commits[a.partition], a.offset)
			st.mu.Unlock()
		}
	}
}

// retryPending resends every idempotent write whose answer was lost.
func retryPending(t *testing.T, url string, st *crashState) {
	st.mu.Lock()
	pending := st.pending
	st.pending = map[string]string{}
	st.mu.Unlock()
	for key, value := range pending {
		m, code, err := call("POST", url+"/broker/topics/crash/produce?idempotency_key="+key, value)
		if err != nil || code != 200 {
			t.Fatalf("retry of %s after restart: %d %v", key, code, err)
		}
		recordAck(st, m, value, key)
	}
}

func verify(t *testing.T, url string, st *crashState, cycle int) {
	t.Helper()
	parts := make([][]string, crashPartitions)
	for p := 0; p < crashPartitions; p++ {
		parts[p] = readPartition(t, url, p)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, a := range st.acks {
		if a.offset >= len(parts[a.partition]) || parts[a.partition][a.offset] != a.value {
			t.Fatalf("cycle %d: acknowledged write %q at %d/%d is lost or changed", cycle, a.value, a.partition, a.offset)
		}
	}
	seen := map[string]int{}
	total := 0
	for _, vals := range parts {
		total += len(vals)
		for _, v := range vals {
			if strings.Contains(v, "-p") && isIdempotentValue(v) {
				seen[v]++
				if seen[v] > 1 {
					t.Fatalf("cycle %d: idempotent write %q stored twice", cycle, v)
				}
			}
		}
	}
	for p, c := range st.commits {
		if c < 0 {
			continue
		}
		m, _, err := call("GET", fmt.Sprintf("%s/broker/consume/crash/g/%d?limit=1", url, p), "")
		if err != nil || m["committed_offset"] == nil || int(m["committed_offset"].(float64)) < c {
			t.Fatalf("cycle %d: partition %d committed offset %v went back below acknowledged %d (%v)", cycle, p, m["committed_offset"], c, err)
		}
	}
	t.Logf("cycle %d: %d acknowledged writes intact, %d stored, %d idempotent retries answered duplicate",
		cycle, len(st.acks), total, st.duplicate)
}

// isIdempotentValue: even producers write with idempotency keys.
func isIdempotentValue(v string) bool {
	var c, g, i int
	if _, err := fmt.Sscanf(v, "c%d-p%d-%d", &c, &g, &i); err != nil {
		return false
	}
	return g%2 == 0
}

// readPartition reads a whole partition by following next_offset and
// checks that offsets are dense.
func readPartition(t *testing.T, url string, p int) []string {
	var vals []string
	for next := 0; ; {
		m, code, err := call("GET", fmt.Sprintf("%s/broker/consume/crash/verify/%d?offset=%d&limit=1000", url, p, next), "")
		if err != nil || code != 200 {
			t.Fatalf("consume partition %d at %d: %d %v", p, next, code, err)
		}
		msgs := m["messages"].([]any)
		if len(msgs) == 0 {
			return vals
		}
		for _, raw := range msgs {
			msg := raw.(map[string]any)
			if int(msg["offset"].(float64)) != len(vals) {
				t.Fatalf("partition %d: offset %v where %d was expected (offsets not dense)", p, msg["offset"], len(vals))
			}
			vals = append(vals, msg["value"].(string))
		}
		next = int(m["next_offset"].(float64))
	}
}

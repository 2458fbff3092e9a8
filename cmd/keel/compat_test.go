package main

import (
	"fmt"
	"io"
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
)

// ayderTokens is the token list Ayder's launch scripts and container
// entrypoint export: limits too large for int64, which mean "no limit".
const ayderTokens = "dev@55555555555555:11111111111111111:111111111111111111111"

// ayderEnv is the environment with every KEEL_* and RF_* variable removed
// and the given RF_* ones set, so the process is configured the way
// Ayder's scripts configure theirs.
func ayderEnv(rf ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEEL_") && !strings.HasPrefix(kv, "RF_") {
			env = append(env, kv)
		}
	}
	return append(env, rf...)
}

// startAyderStyle starts bin as Ayder's scripts do: `ayder --port P
// --workers 2` in workdir, configured by RF_* variables only, and waits
// for /health only (not /ready: scripts poll /health).
func startAyderStyle(t *testing.T, bin, workdir string, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--workers", "2")
	cmd.Dir = workdir
	cmd.Env = ayderEnv("RF_BEARER_TOKENS=" + ayderTokens)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("no /health after 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAyderScriptStyle launches the binary the way Ayder's scripts do,
// writes the moment /health answers, kills it with -9, starts it again
// the same way and repeats an idempotent produce: it must answer at once
// with the original offset.
func TestAyderScriptStyle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := filepath.Join(t.TempDir(), "ayder")
	src, err := os.ReadFile(buildBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startAyderStyle(t, bin, work, port)
	defer func() { p.Process.Kill(); p.Wait() }()
	// The first write right after /health, no retry: it must be taken.
	if m, code, err := call("POST", base+"/broker/topics", `{"name":"orders","partitions":4}`); err != nil || code != 200 || m["ok"] != true {
		t.Fatalf("create right after /health: %d %v %v", code, m, err)
	}
	produce := func() map[string]any {
		m, code, err := call("POST", base+"/broker/topics/orders/produce?partition=2&idempotency_key=order-42", "paid")
		if err != nil || code != 200 || m["ok"] != true || m["durable"] != true {
			t.Fatalf("produce: %d %v %v", code, m, err)
		}
		return m
	}
	first := produce()
	if first["duplicate"] != false {
		t.Fatalf("first produce: %v", first)
	}
	if _, err := os.Stat(filepath.Join(work, "data", "wal")); err != nil {
		t.Fatalf("data is not in ./data of the working directory: %v", err)
	}
	p.Process.Signal(syscall.SIGKILL)
	p.Wait()
	p = startAyderStyle(t, bin, work, port)
	again := produce() // right after /health again
	if again["duplicate"] != true || again["offset"] != first["offset"] || again["partition"] != first["partition"] {
		t.Fatalf("retry after kill -9: %v; first: %v", again, first)
	}
	// The script then reads it back and commits the next_offset it got.
	m, code, err := call("GET", base+"/broker/consume/orders/g/2", "")
	if err != nil || code != 200 || m["count"] != 1.0 {
		t.Fatalf("consume: %d %v %v", code, m, err)
	}
	body := fmt.Sprintf(`{"topic":"orders","group":"g","partition":2,"offset":%v}`, m["next_offset"])
	if m, code, err := call("POST", base+"/broker/commit", body); err != nil || code != 200 || m["ok"] != true {
		t.Fatalf("commit at the log end: %d %v %v", code, m, err)
	}
}

// TestSIGTERMWithClients: with clients connected in every state (an idle
// keep-alive connection, a long poll, a client stalled in its headers,
// one stalled in its body, producers), SIGTERM ends the process with exit
// status 0 within a few seconds, and every acknowledged write is there
// after a restart.
func TestSIGTERMWithClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := buildBinary(t)
	data := t.TempDir()
	port := freePort(t)
	p := startKeel(t, bin, data, port)
	defer func() { p.cmd.Process.Kill(); p.cmd.Wait() }()
	if _, code, err := call("POST", p.url+"/broker/topics", `{"name":"term","partitions":1}`); code != 200 {
		t.Fatalf("create: %d %v", code, err)
	}
	addr := strings.TrimPrefix(p.url, "http://")
	// An idle keep-alive connection.
	idle := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	if resp, err := idle.Get(p.url + "/health"); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Clients stalled in their headers and in their body.
	for _, partial := range []string{
		"POST /broker/topics/term/produce HTTP/1.1\r\nHost: x\r\nAuthor",
		"POST /broker/topics/term/produce HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev\r\nContent-Length: 500000\r\n\r\nabc",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, partial)
	}
	// A long poll.
	longPoll := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", p.url+"/broker/consume/term/g/0?offset=100&wait_ms=30000", nil)
		req.Header.Set("Authorization", "Bearer dev")
		resp, err := (&http.Client{Timeout: 40 * time.Second}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		longPoll <- err
	}()
	// Producers, recording what was acknowledged.
	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v := fmt.Sprintf("g%d-%d", g, i)
				m, code, err := call("POST", p.url+"/broker/topics/term/produce?partition=0", v)
				if err == nil && code == 200 && m["durable"] == true {
					mu.Lock()
					acked = append(acked, v)
					mu.Unlock()
				}
				if err != nil {
					return // the server has gone
				}
			}
		}(g)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.log())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM\n%s", p.log())
	}
	took := time.Since(start)
	select {
	case <-longPoll: // answered (or cut) by the shutdown, not after 30 s
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll was still open after the process exited")
	}
	close(stop)
	wg.Wait()
	t.Logf("SIGTERM to exit: %v, %d writes acknowledged", took, len(acked))
	if took > 6*time.Second {
		t.Fatalf("shutdown took %v; want a few seconds at most", took)
	}
	// Every acknowledged write survived.
	p = startKeel(t, bin, data, port)
	got := map[string]bool{}
	for _, v := range readPartitionOf(t, p.url, "term", 0) {
		got[v] = true
	}
	for _, v := range acked {
		if !got[v] {
			t.Fatalf("acknowledged write %s lost over SIGTERM", v)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
}

// readPartitionOf returns every value of topic's partition p, in order.
func readPartitionOf(t *testing.T, url, topic string, p int) []string {
	t.Helper()
	var out []string
	for next := 0.0; ; {
		m, code, err := call("GET", fmt.Sprintf("%s/broker/consume/%s/r/%d?offset=%v&limit=1000", url, topic, p, next), "")
		if err != nil || code != 200 {
			t.Fatalf("consume: %d %v", code, err)
		}
		msgs, _ := m["messages"].([]any)
		if len(msgs) == 0 {
			return out
		}
		for _, x := range msgs {
			out = append(out, x.(map[string]any)["value"].(string))
		}
		next = m["next_offset"].(float64)
	}
}

// TestRecoveryReported: what recovery cut is logged at startup and shown
// on /metrics (a torn tail appended to a partition after kill -9).
func TestRecoveryReported(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := buildBinary(t)
	data := t.TempDir()
	port := freePort(t)
	p := startKeel(t, bin, data, port)
	defer func() { p.cmd.Process.Kill(); p.cmd.Wait() }()
	for i := 0; i < 3; i++ {
		if _, code, err := call("POST", p.url+"/broker/topics/torn/produce?partition=0", "v"); code != 200 {
			t.Fatalf("produce: %d %v", code, err)
		}
	}
	// A clean stop writes a state checkpoint naming the topic, so the next
	// start opens (and recovers) its partition files instead of replaying
	// its creation.
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	p = startKeel(t, bin, data, port)
	p.kill9(t)
	seg := filepath.Join(data, "topics", "torn", "0", "00000000000000000000.log")
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0x40, 0, 0, 0, 0xAB, 0xAB, 0xAB}) // a frame cut short: a torn write
	f.Close()
	p = startKeel(t, bin, data, port)
	if !strings.Contains(p.log(), "recovery cut torn tails") || !strings.Contains(p.log(), "cut_logs=1") {
		t.Fatalf("the cut is not logged:\n%s", p.log())
	}
	resp, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `keel_recovery_cut_bytes{log="partition"} 7`) || !strings.Contains(string(b), "keel_recovery_cut_logs 1") ||
		!strings.Contains(string(b), "keel_recovery_seconds ") {
		t.Fatalf("the cut is not on /metrics:\n%s", b)
	}
	if m, _, _ := call("GET", p.url+"/broker/consume/torn/g/0", ""); m["count"] != 3.0 {
		t.Fatalf("after the cut: %v", m)
	}
}

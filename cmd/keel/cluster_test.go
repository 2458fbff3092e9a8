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
	"testing"
	"time"
)

// clusterNode is one member of a test cluster: a real keel process on
// loopback ports.
type clusterNode struct {
	name     string
	raftPort int
	data     string
	proc     *keelProcess
}

func (n *clusterNode) url() string { return fmt.Sprintf("http://127.0.0.1:%d", n.raftPort+1) }

// testClusterProcs is a cluster of real processes.
type testClusterProcs struct {
	t     *testing.T
	bin   string
	nodes []*clusterNode
	spec  string // RF_HA_NODES
}

// portPair returns a free port p with p+1 free too (raft port, HTTP port).
func portPair(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 20000 + rand.Intn(30000)
		a, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p
	}
	t.Fatal("no free port pair")
	return 0
}

func newClusterProcs(t *testing.T, n int) *testClusterProcs {
	t.Helper()
	c := &testClusterProcs{t: t, bin: buildBinary(t)}
	root := t.TempDir()
	var spec []string
	for i := 1; i <= n; i++ {
		node := &clusterNode{name: fmt.Sprintf("node%d", i), raftPort: portPair(t), data: filepath.Join(root, fmt.Sprintf("node%d", i))}
		c.nodes = append(c.nodes, node)
		spec = append(spec, fmt.Sprintf("%s:127.0.0.1:%d:%d", node.name, node.raftPort, 100-10*i))
	}
	c.spec = strings.Join(spec, ",")
	for i := range c.nodes {
		c.start(i)
	}
	t.Cleanup(func() {
		for _, node := range c.nodes {
			if node.proc != nil && node.proc.cmd.ProcessState == nil {
				node.proc.cmd.Process.Kill()
				node.proc.cmd.Wait()
			}
		}
	})
	return c
}

// start runs node i (again) on its data directory, as Ayder's scripts
// configure a member: RF_HA_* in the environment, no --port.
func (c *testClusterProcs) start(i int) {
	node := c.nodes[i]
	p := &keelProcess{url: node.url(), logs: &strings.Builder{}}
	p.cmd = exec.Command(c.bin, "serve", "--data", node.data, "--checkpoint-bytes", "1048576")
	p.cmd.Env = append(os.Environ(), "RF_HA_ENABLED=1", "RF_HA_NODE_ID="+node.name, "RF_HA_NODES="+c.spec)
	if i == 0 {
		p.cmd.Env = append(p.cmd.Env, "RF_HA_BOOTSTRAP_LEADER=1")
	}
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, &lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	node.proc = p
}

// waitReady waits until every running node answers /ready 200 (it knows
// a leader and has applied what it learned was committed).
func (c *testClusterProcs) waitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, node := range c.nodes {
		if node.proc == nil || node.proc.cmd.ProcessState != nil {
			continue
		}
		for {
			resp, err := http.Get(node.url() + "/ready")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("%s not ready after %v; log:\n%s", node.name, timeout, node.proc.log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

var noRedirects = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// leader returns the index of the node that answers a write itself (the
// others redirect to it).
func (c *testClusterProcs) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for i, node := range c.nodes {
			if node.proc == nil || node.proc.cmd.ProcessState != nil {
				continue
			}
			resp, err := http.Get(node.url() + "/metrics_ha")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "ramforge_ha_role 0\n") {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no leader in 15 s")
	return -1
}

// produceOnce sends one message with an idempotency key to url, following
// the leader's redirects; it returns the offset when the write is
// acknowledged durable.
func produceOnce(url, topic, key, value string) (int, bool) {
	req, _ := http.NewRequest("POST", url+"/broker/topics/"+topic+"/produce?partition=0&timeout_ms=3000&idempotency_key="+key, strings.NewReader(value))
	req.Header.Set("Authorization", "Bearer dev")
	resp, err := client.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var m map[string]any
	if json.NewDecoder(resp.Body).Decode(&m) != nil || resp.StatusCode != 200 || m["durable"] != true {
		return 0, false
	}
	off, ok := m["offset"].(float64)
	return int(off), ok
}

// readAllStale reads partition 0 of topic from one node's own applied
// data (stale=1: no redirect to the leader), checking offsets are dense.
func readAllStale(t *testing.T, url, topic string) []string {
	t.Helper()
	var out []string
	for {
		m, status, err := call("GET", fmt.Sprintf("%s/broker/consume/%s/verify/0?offset=%d&limit=1000&stale=1", url, topic, len(out)), "")
		if status == 404 && m["error"] == "unknown_topic" {
			return nil // not applied here yet
		}
		if err != nil || status != 200 {
			t.Fatalf("consume from %s at %d: %d %v %v", url, len(out), status, err, m)
		}
		msgs, _ := m["messages"].([]any)
		if len(msgs) == 0 {
			return out
		}
		for _, x := range msgs {
			mm := x.(map[string]any)
			if off := int(mm["offset"].(float64)); off != len(out) {
				t.Fatalf("%s: offset %d where %d was due", url, off, len(out))
			}
			out = append(out, mm["value"].(string))
		}
	}
}

// TestClusterFailover runs three real nodes configured as Ayder's scripts
// do, writes through the leader with idempotency keys (retrying every
// indeterminate write with its key, following redirects), kills the leader
// with SIGKILL mid-write, and checks that a new leader takes writes, that
// the killed node catches up after a restart, and that every acknowledged
// write is then at its offset on every node.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newClusterProcs(t, 3)
	c.waitReady(30 * time.Second)
	lead := c.leader()
	follower := (lead + 1) % 3

	// A write on a follower is redirected to the leader (api.md).
	req, _ := http.NewRequest("POST", c.nodes[follower].url()+"/broker/topics/t/produce?partition=0", strings.NewReader("via follower"))
	req.Header.Set("Authorization", "Bearer dev")
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var redir map[string]any
	json.NewDecoder(resp.Body).Decode(&redir)
	resp.Body.Close()
	wantLoc := c.nodes[lead].url() + "/broker/topics/t/produce?partition=0"
	if resp.StatusCode != 307 || resp.Header.Get("Location") != wantLoc || redir["error"] != "redirect_to_leader" ||
		redir["leader_url"] != c.nodes[lead].url() || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("write on a follower: %d Location %q %v; want 307 to %s", resp.StatusCode, resp.Header.Get("Location"), redir, wantLoc)
	}

	var mu sync.Mutex
	acked := map[int]string{} // offset → value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq int
	var seqMu sync.Mutex
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				seqMu.Lock()
				seq++
				n := seq
				seqMu.Unlock()
				key, value := fmt.Sprintf("k%d-%d", g, n), fmt.Sprintf("v%d-%d", g, n)
				// Retry the same key until acknowledged (bounded): an
				// indeterminate write is either the original offset or new.
				for attempt := 0; attempt < 100; attempt++ {
					url := c.nodes[rand.Intn(3)].url()
					if off, ok := produceOnce(url, "t", key, value); ok {
						mu.Lock()
						if prev, dup := acked[off]; dup && prev != value {
							t.Errorf("offset %d acknowledged for %s and %s", off, prev, value)
						}
						acked[off] = value
						mu.Unlock()
						break
					}
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}()
	}
	waitAcked := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			got := len(acked)
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d writes acknowledged in 20 s, want %d", got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcked(200)
	c.nodes[lead].proc.kill9(t)
	killed := time.Now()
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	// A new leader takes writes.
	for {
		mu.Lock()
		after := len(acked)
		mu.Unlock()
		if after > before+10 {
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("no write acknowledged in 20 s after the leader was killed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("writes acknowledged again %v after kill -9 of the leader", time.Since(killed).Round(time.Millisecond))
	waitAcked(before + 200)
	c.start(lead) // back after the crash: it catches up from the new leader
	waitAcked(before + 400)
	close(stop)
	wg.Wait()
	c.waitReady(30 * time.Second)

	// Every acknowledged write is at its offset on every node, once each
	// node has applied everything (poll: a follower applies shortly after
	// the leader answered).
	mu.Lock()
	defer mu.Unlock()
	maxOff := 0
	for off := range acked {
		maxOff = max(maxOff, off)
	}
	for _, node := range c.nodes {
		deadline := time.Now().Add(20 * time.Second)
		var vals []string
		for {
			vals = readAllStale(t, node.url(), "t")
			if len(vals) > maxOff || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		for off, want := range acked {
			if off >= len(vals) || vals[off] != want {
				got := "<missing>"
				if off < len(vals) {
					got = vals[off]
				}
				t.Fatalf("%s offset %d: %q, acknowledged %q (holds %d)", node.name, off, got, want, len(vals))
			}
		}
		t.Logf("%s holds %d messages, every one of the %d acknowledged at its offset", node.name, len(vals), len(acked))
	}
}

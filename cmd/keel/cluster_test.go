package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"keel/chaos"
)

// clusterNode is one member of a test cluster: a real keel process on
// loopback ports.
type clusterNode struct {
	name     string
	raftPort int
	data     string
	spec     string // its RF_HA_NODES (peers at proxy ports when the cluster has proxies)
	proc     *keelProcess
}

func (n *clusterNode) url() string { return fmt.Sprintf("http://127.0.0.1:%d", n.raftPort+1) }

// testClusterProcs is a cluster of real processes.
type testClusterProcs struct {
	t       *testing.T
	bin     string
	nodes   []*clusterNode
	proxies map[[2]int]*chaos.LinkProxy // [from, to] → the raft link from node from to node to
	args    []string                    // more flags for every node
}

// portPair returns a free port p with p+1 free too (raft port, HTTP
// port), never one this test binary handed out before.
func portPair(t *testing.T) int {
	t.Helper()
	usedPortsMu.Lock()
	defer usedPortsMu.Unlock()
	p, err := chaos.FreePortPair(usedPorts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	usedPortsMu sync.Mutex
	usedPorts   = map[int]bool{}
)

func newClusterProcs(t *testing.T, n int, extra ...string) *testClusterProcs {
	return newClusterProcsOpts(t, n, false, extra...)
}

// newClusterProcsOpts starts n nodes; withProxies puts a linkProxy on
// every directed raft link (and a plain forwarder on the HTTP port beside
// it, so redirects to a peer's raft port + 1 still reach its API): each
// node's RF_HA_NODES names its peers at their proxies.
func newClusterProcsOpts(t *testing.T, n int, withProxies bool, extra ...string) *testClusterProcs {
	t.Helper()
	c := &testClusterProcs{t: t, bin: buildBinary(t), proxies: map[[2]int]*chaos.LinkProxy{}, args: extra}
	root := t.TempDir()
	for i := 1; i <= n; i++ {
		node := &clusterNode{name: fmt.Sprintf("node%d", i), raftPort: portPair(t), data: filepath.Join(root, fmt.Sprintf("node%d", i))}
		c.nodes = append(c.nodes, node)
	}
	for i, node := range c.nodes {
		var spec []string
		for j, peer := range c.nodes {
			port := peer.raftPort
			if withProxies && i != j {
				port = portPair(t)
				c.proxies[[2]int{i, j}] = newLinkProxy(t, fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", peer.raftPort))
				newLinkProxy(t, fmt.Sprintf("127.0.0.1:%d", port+1), peer.url()[len("http://"):])
			}
			spec = append(spec, fmt.Sprintf("%s:127.0.0.1:%d:%d", peer.name, port, 90-10*j))
		}
		node.spec = strings.Join(spec, ",")
	}
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
	p.cmd = exec.Command(c.bin, append([]string{"serve", "--data", node.data, "--checkpoint-bytes", "1048576"}, c.args...)...)
	p.cmd.Env = append(os.Environ(), "RF_HA_ENABLED=1", "RF_HA_NODE_ID="+node.name, "RF_HA_NODES="+node.spec)
	if i == 0 {
		p.cmd.Env = append(p.cmd.Env, "RF_HA_BOOTSTRAP_LEADER=1")
	}
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, &lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	node.proc = p
}

// isolate cuts (or heals) every raft link to and from node k.
func (c *testClusterProcs) isolate(k int, cut bool) {
	for link, p := range c.proxies {
		if link[0] == k || link[1] == k {
			p.SetCut(cut)
		}
	}
}

// runningNodes returns the indexes of the nodes whose process runs.
func (c *testClusterProcs) runningNodes() []int {
	var out []int
	for i := range c.nodes {
		if c.running(i) {
			out = append(out, i)
		}
	}
	return out
}

// running reports whether node i's process runs.
func (c *testClusterProcs) running(i int) bool {
	return c.nodes[i].proc != nil && c.nodes[i].proc.cmd.ProcessState == nil
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

// clusterWriters produce to partition 0 of a topic from several
// goroutines, each message with its own idempotency key, retried with that
// key until acknowledged (bounded), through nodes the test chooses; acked
// maps every acknowledged offset to its value.
type clusterWriters struct {
	t     *testing.T
	c     *testClusterProcs
	topic string
	mu    sync.Mutex
	acked map[int]string
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startWriters(t *testing.T, c *testClusterProcs, topic string, n int, targets func() []int) *clusterWriters {
	return startWritersPad(t, c, topic, n, 0, targets)
}

// startWritersPad writes values padded to at least pad bytes.
func startWritersPad(t *testing.T, c *testClusterProcs, topic string, n, pad int, targets func() []int) *clusterWriters {
	w := &clusterWriters{t: t, c: c, topic: topic, acked: map[int]string{}, stop: make(chan struct{})}
	for g := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-w.stop:
					return
				default:
				}
				key, value := fmt.Sprintf("%s-k%d-%d", topic, g, seq), fmt.Sprintf("v%d-%d", g, seq)
				if len(value) < pad {
					value += strings.Repeat(".", pad-len(value))
				}
				// An indeterminate write is retried with its key: it is
				// either its original offset or written once, anew.
				for attempt := 0; attempt < 200; attempt++ {
					ts := targets()
					if len(ts) == 0 {
						time.Sleep(50 * time.Millisecond) // every node down for a moment
						continue
					}
					if off, ok := produceOnce(c.nodes[ts[rand.Intn(len(ts))]].url(), topic, key, value); ok {
						w.mu.Lock()
						if prev, dup := w.acked[off]; dup && prev != value {
							t.Errorf("offset %d acknowledged for %s and %s", off, prev, value)
						}
						w.acked[off] = value
						w.mu.Unlock()
						break
					}
					select {
					case <-w.stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}()
	}
	return w
}

func (w *clusterWriters) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitAcked waits until n writes are acknowledged, failing after within.
func (w *clusterWriters) waitAcked(n int, within time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(within)
	for w.count() < n {
		if time.Now().After(deadline) {
			w.t.Fatalf("%d writes acknowledged in %v, want %d", w.count(), within, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *clusterWriters) halt() {
	close(w.stop)
	w.wg.Wait()
}

// verifyAll checks that every running node holds every acknowledged write
// at its offset (polling while followers apply what the leader answered).
func (w *clusterWriters) verifyAll() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	maxOff := -1
	for off := range w.acked {
		maxOff = max(maxOff, off)
	}
	for i, node := range w.c.nodes {
		if !w.c.running(i) {
			continue
		}
		deadline := time.Now().Add(30 * time.Second)
		var vals []string
		for {
			vals = readAllStale(w.t, node.url(), w.topic)
			if len(vals) > maxOff || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		for off, want := range w.acked {
			if off >= len(vals) || vals[off] != want {
				got := "<missing>"
				if off < len(vals) {
					got = vals[off]
				}
				w.t.Fatalf("%s offset %d: %q, acknowledged %q (holds %d)", node.name, off, got, want, len(vals))
			}
		}
		// Each value was written with its own idempotency key, retried
		// with it: it must be in the log once, however often it was sent.
		seen := map[string]int{}
		for off, v := range vals {
			if prev, dup := seen[v]; dup {
				w.t.Fatalf("%s holds %q at offsets %d and %d: an idempotency key was applied twice", node.name, v, prev, off)
			}
			seen[v] = off
		}
		w.t.Logf("%s holds %d messages of %s, every one of the %d acknowledged at its offset", node.name, len(vals), w.topic, len(w.acked))
	}
}

// TestClusterFailover runs three real nodes configured as Ayder's scripts
// do, writes through every node with idempotency keys (retrying every
// indeterminate write with its key, following redirects), kills the leader
// with SIGKILL mid-write, and checks that a new leader takes writes, that
// the killed node catches up after a restart, and that every acknowledged
// write is then at its offset on every node. Then the same for a follower.
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

	w := startWriters(t, c, "t", 4, c.runningNodes)
	w.waitAcked(200, 20*time.Second)
	// Per-peer counters on /metrics (the leader also has their lag).
	if body, err := httpGet(c.nodes[lead].url() + "/metrics"); err != nil ||
		!strings.Contains(body, fmt.Sprintf(`keel_peer_connected{peer="%s"} 1`, c.nodes[follower].name)) ||
		!strings.Contains(body, fmt.Sprintf(`keel_peer_lag_entries{peer="%s"}`, c.nodes[follower].name)) ||
		!strings.Contains(body, "keel_peer_sent_bytes_total") {
		t.Fatalf("peer metrics missing on the leader's /metrics: %v", err)
	}
	c.nodes[lead].proc.kill9(t)
	killed := time.Now()
	before := w.count()
	w.waitAcked(before+10, 20*time.Second)
	t.Logf("writes acknowledged again %v after kill -9 of the leader", time.Since(killed).Round(time.Millisecond))
	w.waitAcked(before+200, 20*time.Second)
	c.start(lead) // back after the crash: it catches up from the new leader
	w.waitAcked(before+400, 20*time.Second)

	// Now a follower: killed mid-write, writes go on, it comes back.
	c.waitReady(30 * time.Second)
	lead = c.leader()
	follower = (lead + 1) % 3
	c.nodes[follower].proc.kill9(t)
	before = w.count()
	w.waitAcked(before+300, 20*time.Second)
	c.start(follower)
	w.waitAcked(before+400, 20*time.Second)
	w.halt()
	c.waitReady(30 * time.Second)
	w.verifyAll()
}

// TestClusterPartition cuts the leader of three nodes off from the other
// two with proxies on every raft link: it never acknowledges a write or
// serves a read while cut off; the majority elects a leader and goes on;
// after healing, the old leader catches up and every node holds exactly the
// acknowledged writes (the cut-off leader's write is not there).
func TestClusterPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newClusterProcsOpts(t, 3, true)
	c.waitReady(30 * time.Second)
	lead := c.leader()
	others := []int{(lead + 1) % 3, (lead + 2) % 3}
	w := startWriters(t, c, "p", 3, func() []int { return others })
	w.waitAcked(100, 20*time.Second)

	c.isolate(lead, true)
	cut := time.Now()
	// The isolated leader: a write is never acknowledged, a read never
	// served (503, or 307 once it learns of another leader).
	m, status, err := call("POST", c.nodes[lead].url()+"/broker/topics/p/produce?partition=0&timeout_ms=1500", "from the minority")
	if err == nil && status == 200 {
		t.Fatalf("the isolated leader acknowledged a write: %v", m)
	}
	t.Logf("write on the isolated leader: %d %v", status, m["error"])
	m, status, err = call("GET", c.nodes[lead].url()+"/broker/consume/p/g/0?offset=0&timeout_ms=1500", "")
	if err == nil && status == 200 {
		t.Fatalf("the isolated leader served a linearizable read: %v", m)
	}
	t.Logf("read on the isolated leader: %d %v", status, m["error"])
	before := w.count()
	w.waitAcked(before+100, 20*time.Second)
	t.Logf("the majority acknowledged writes again %v after the cut", time.Since(cut).Round(time.Millisecond))

	c.isolate(lead, false)
	w.waitAcked(w.count()+100, 20*time.Second)
	w.halt()
	c.waitReady(30 * time.Second)
	w.verifyAll()
	for i, node := range c.nodes {
		for _, v := range readAllStale(t, node.url(), "p") {
			if v == "from the minority" {
				t.Fatalf("%s holds the write the isolated leader never committed (node %d)", node.name, i)
			}
		}
	}
}

// TestClusterFiveLosesTwo: a cluster of five keeps taking writes with two
// nodes killed (a majority of three remains), the leader among them.
func TestClusterFiveLosesTwo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newClusterProcs(t, 5)
	c.waitReady(30 * time.Second)
	w := startWriters(t, c, "f", 3, c.runningNodes)
	w.waitAcked(100, 20*time.Second)
	lead := c.leader()
	c.nodes[lead].proc.kill9(t)
	c.nodes[(lead+2)%5].proc.kill9(t)
	before := w.count()
	w.waitAcked(before+200, 30*time.Second)
	w.halt()
	w.verifyAll()
}

// TestClusterSnapshotCatchUp: a follower killed while the leader goes on
// far past what it keeps of its log (--raft-log-retain-bytes is small, and
// checkpoints compact the log) receives a snapshot when it comes back (the
// state and the segment files, fetched in chunks) and catches up; every
// acknowledged write is then on every node.
func TestClusterSnapshotCatchUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newClusterProcs(t, 3, "--raft-log-retain-bytes", "65536")
	c.waitReady(30 * time.Second)
	w := startWritersPad(t, c, "s", 4, 1000, c.runningNodes)
	w.waitAcked(500, 30*time.Second)
	lead := c.leader()
	victim := (lead + 1) % 3
	c.nodes[victim].proc.kill9(t)
	before := w.count()
	w.waitAcked(before+3000, 60*time.Second) // several checkpoints: the log it needs is compacted
	restarted := time.Now()
	c.start(victim)
	w.waitAcked(w.count()+200, 30*time.Second)
	w.halt()
	c.waitReady(60 * time.Second)
	w.verifyAll()
	t.Logf("the follower caught up within %v of its restart", time.Since(restarted).Round(time.Millisecond))
	if !strings.Contains(c.nodes[victim].proc.log(), "snapshot installed") {
		t.Fatalf("the follower caught up without a snapshot (the test meant to exercise one); log:\n%s", c.nodes[victim].proc.log())
	}
}

// TestClusterWipedNodeRejoins: a node restarted with an empty data
// directory does not come back under its old identity (it could vote twice
// in a term): it takes a new Raft id, joins as a learner, catches up, and
// the leader replaces its old identity with the new one; the cluster is
// then three voters again, and every acknowledged write is on every node.
// A follower, and (in another cluster) the leader itself: the new leader,
// elected after the loss, knows nothing of what the old one acknowledged.
func TestClusterWipedNodeRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	for _, phases := range [][]string{{"follower"}, {"leader"}, {"follower", "leader"}} {
		t.Run(strings.Join(phases, " then "), func(t *testing.T) { testWipedNodeRejoins(t, phases) })
	}
}

// testWipedNodeRejoins wipes, in one new cluster, a follower or the leader
// in turn. Wiping the leader after a follower rejoined often wipes a node
// whose peers' tables do not name its current id, or whose leader has a
// rejoined id the wiped node's RF_HA_NODES does not know: it must learn it
// from the leader's stream.
func testWipedNodeRejoins(t *testing.T, phases []string) {
	c := newClusterProcs(t, 3)
	c.waitReady(30 * time.Second)
	w := startWriters(t, c, "wiped", 2, c.runningNodes)
	w.waitAcked(100, 20*time.Second)
	for _, which := range phases {
		victim := c.leader()
		if which == "follower" {
			victim = (victim + 1) % 3
		}
		c.nodes[victim].proc.kill9(t)
		if err := os.RemoveAll(c.nodes[victim].data); err != nil {
			t.Fatal(err)
		}
		if which == "leader" {
			w.waitAcked(w.count()+50, 20*time.Second) // a new leader, elected after the loss
		}
		c.start(victim)
		deadline := time.Now().Add(30 * time.Second)
		for {
			voters, nodes, joint, err := membershipOf(c.nodes[c.leader()].url())
			if err == nil && len(voters) == 3 && nodes == 3 && !joint && strings.Contains(c.nodes[victim].proc.log(), "rejoined the cluster") {
				break
			}
			if time.Now().After(deadline) {
				lead := c.leader()
				t.Fatalf("the wiped %s did not rejoin in 30 s: voters %v of %d nodes, joint %v, %v; its log:\n%s\nthe leader's (%s):\n%s", which, voters, nodes, joint, err,
					c.nodes[victim].proc.log(), c.nodes[lead].name, c.nodes[lead].proc.log())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(c.nodes[victim].proc.log(), "rejoins under a new Raft id") {
			t.Fatalf("the wiped %s came back without a new identity; log:\n%s", which, c.nodes[victim].proc.log())
		}
		w.waitAcked(w.count()+100, 20*time.Second)
	}
	w.halt()
	c.waitReady(30 * time.Second)
	w.verifyAll()
}

// TestClusterMembership: a fourth node started with --ha-join is added as
// a learner over HTTP, catches up, is promoted to voter, and an old member
// is removed; every node's /ha/membership then says so, writes go on
// throughout, and every acknowledged write is on every member.
func TestClusterMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newClusterProcs(t, 3)
	c.waitReady(30 * time.Second)
	members := func() []int {
		var out []int
		for i := range c.nodes {
			if c.running(i) && c.nodes[i].name != "node3" {
				out = append(out, i)
			}
		}
		return out
	}
	w := startWriters(t, c, "m", 2, members)
	w.waitAcked(100, 20*time.Second)

	// node4: its RF_HA_NODES names the others and itself; it joins.
	n4 := &clusterNode{name: "node4", raftPort: portPair(t), data: filepath.Join(t.TempDir(), "node4")}
	n4.spec = c.nodes[0].spec + fmt.Sprintf(",node4:127.0.0.1:%d:0", n4.raftPort)
	c.nodes = append(c.nodes, n4)
	c.args = append(c.args, "--ha-join")
	c.start(3)
	c.args = c.args[:len(c.args)-1]
	lead := c.nodes[c.leader()].url()
	// admin sends a membership change, again while the answer is a 409
	// that says to retry (a change not applied yet; a learner catching up).
	admin := func(op, body string) map[string]any {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; {
			m, status, err := call("POST", lead+"/ha/membership/"+op+"?timeout_ms=10000", body)
			if err == nil && status == 200 && m["ok"] == true {
				return m
			}
			if status != 409 || m["error"] != "change_in_progress" && m["error"] != "learner_not_ready" || time.Now().After(deadline) {
				t.Fatalf("%s %s: %d %v %v", op, body, status, m, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	m := admin("add", fmt.Sprintf(`{"node_id":"node4","advertise_addr":"127.0.0.1:%d"}`, n4.raftPort))
	if m["role"] != "learner" || m["node_id"] != "node4" || m["index"].(float64) <= 0 {
		t.Fatalf("add: %v", m)
	}
	if _, status, _ := call("POST", lead+"/ha/membership/add", fmt.Sprintf(`{"node_id":"node4","advertise_addr":"127.0.0.1:%d"}`, n4.raftPort)); status != 409 {
		t.Fatalf("adding node4 again: %d, want 409", status)
	}
	c.waitReady(30 * time.Second)                                           // node4 knows the leader and applied what it learned
	if m := admin("promote", `{"node_id":"node4"}`); m["role"] != "voter" { // once caught up
		t.Fatalf("promote: %v", m)
	}
	if m := admin("remove", `{"node_id":"node3"}`); m["removed"] != true {
		t.Fatalf("remove: %v", m)
	}
	c.nodes[2].proc.kill9(t) // the removed node's operator stops it
	w.waitAcked(w.count()+100, 20*time.Second)
	checkVoters := func(when string) {
		t.Helper()
		for _, i := range []int{0, 1, 3} {
			// A follower applies the last change a moment after the leader.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				voters, nodes, _, err := membershipOf(c.nodes[i].url())
				if err == nil && strings.Join(voters, ",") == "node1,node2,node4" && nodes == 3 {
					break
				}
				if time.Now().After(deadline) {
					m, _, _ := call("GET", c.nodes[i].url()+"/ha/membership", "")
					t.Fatalf("%s: %s sees voters %v, %d nodes (%v): want node1,node2,node4; %v", when, c.nodes[i].name, voters, nodes, err, m)
				}
			}
		}
	}
	checkVoters("after the changes")
	// node4, added by hand, loses its disk and is restarted as it was
	// started (--ha-join): it rejoins under a new id and replaces itself.
	// (Not while it leads: a --ha-join node that lost its disk while it led
	// is not told apart from a new one; see README.)
	for deadline := time.Now().Add(10 * time.Second); c.leader() == 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // priority moves leadership to node1
	}
	c.nodes[3].proc.kill9(t)
	if err := os.RemoveAll(n4.data); err != nil {
		t.Fatal(err)
	}
	c.args = append(c.args, "--ha-join")
	c.start(3)
	c.args = c.args[:len(c.args)-1]
	deadline := time.Now().Add(30 * time.Second)
	for {
		voters, nodes, joint, err := membershipOf(c.nodes[c.leader()].url())
		if err == nil && strings.Join(voters, ",") == "node1,node2,node4" && nodes == 3 && !joint && strings.Contains(n4.proc.log(), "rejoined the cluster") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the wiped node4 did not rejoin: %v %d %v %v; its log:\n%s", voters, nodes, joint, err, n4.proc.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkVoters("after node4 rejoined")
	// The membership survives a kill -9 of every node (node4 is not in
	// the others' RF_HA_NODES: they reach it at the address it joined with).
	for _, i := range []int{0, 1, 3} {
		c.nodes[i].proc.kill9(t)
	}
	for _, i := range []int{0, 1, 3} {
		c.start(i)
	}
	c.waitReady(30 * time.Second)
	checkVoters("after every node restarted")
	w.waitAcked(w.count()+100, 30*time.Second)
	w.halt()
	w.verifyAll()
}

// membershipOf reads a node's GET /ha/membership: the voters' names, the
// node count and whether a joint configuration is in force.
func membershipOf(url string) (voters []string, nodes int, joint bool, err error) {
	m, status, err := call("GET", url+"/ha/membership", "")
	if err != nil || status != 200 {
		return nil, 0, false, fmt.Errorf("membership: %d %v", status, err)
	}
	ms := m["membership"].(map[string]any)
	for _, x := range ms["nodes"].([]any) {
		if node := x.(map[string]any); node["is_voter"] == true {
			voters = append(voters, node["node_id"].(string))
		}
	}
	return voters, int(ms["node_count"].(float64)), ms["joint_active"] == true, nil
}

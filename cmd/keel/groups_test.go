package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Consumer groups with members, as real processes (issue 13): a cluster
// of three keel nodes and three member processes (this test binary run
// again as a member, see runGroupMember) sharing six partitions.

const (
	memberEnv        = "KEEL_TEST_GROUP_MEMBER" // member id: this process is a group member
	memberURLsEnv    = "KEEL_TEST_GROUP_URLS"   // the nodes, comma-separated
	memberSessionMs  = 3000
	memberLifetime   = 3 * time.Minute // a member left behind ends by itself
	memberHeartbeats = 300 * time.Millisecond
)

// groupState is GET /broker/groups/{g}.
type groupState struct {
	Generation *uint64 `json:"generation"`
	Lag        uint64  `json:"lag"`
	Members    []struct {
		MemberID    string `json:"member_id"`
		Assignments []struct {
			Partitions []int `json:"partitions"`
		} `json:"assignments"`
	} `json:"members"`
}

func (g groupState) owned() map[string][]int {
	out := map[string][]int{}
	for _, m := range g.Members {
		for _, a := range m.Assignments {
			out[m.MemberID] = append(out[m.MemberID], a.Partitions...)
		}
	}
	return out
}

// allOwned reports whether the members are exactly ids and own every one
// of partitions partitions once.
func (g groupState) allOwned(ids []string, partitions int) bool {
	owned := g.owned()
	if len(owned) != len(ids) {
		return false
	}
	seen := map[int]bool{}
	for _, id := range ids {
		ps, ok := owned[id]
		if !ok {
			return false
		}
		for _, p := range ps {
			seen[p] = true
		}
	}
	return len(seen) == partitions
}

func readGroup(url, group string) (groupState, error) {
	var g groupState
	req, _ := http.NewRequest("GET", url+"/broker/groups/"+group+"?stale=1", nil)
	req.Header.Set("Authorization", "Bearer dev")
	resp, err := client.Do(req)
	if err != nil {
		return g, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return g, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return g, json.NewDecoder(resp.Body).Decode(&g)
}

func startMember(t *testing.T, id string, urls []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), memberEnv+"="+id, memberURLsEnv+"="+strings.Join(urls, ","))
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// runGroupMember is a member process: it joins group "g" for topic "ev",
// sends heartbeats, reads its partitions and commits what it read (fenced
// by its generation), joining again when the group moved on, until it is
// killed or memberLifetime passes. It tries each node in turn (following
// redirects to the leader).
func runGroupMember() {
	id := os.Getenv(memberEnv)
	urls := strings.Split(os.Getenv(memberURLsEnv), ",")
	// Each loop tries the nodes in turn from its own position.
	post := func(cur *int, path, body string) (map[string]any, int) {
		for range len(urls) * 3 {
			m, code, err := call("POST", urls[*cur]+path, body)
			if err == nil && code != 503 {
				return m, code
			}
			*cur = (*cur + 1) % len(urls)
			time.Sleep(50 * time.Millisecond)
		}
		return nil, 0
	}
	var mu sync.Mutex
	gen := int64(-1)
	generation := func() int64 { mu.Lock(); defer mu.Unlock(); return gen }
	end := time.Now().Add(memberLifetime)
	// Heartbeats have a goroutine of their own, as Kafka's clients have a
	// heartbeat thread: a slow read or commit (during an election) must
	// not starve the session.
	go func() {
		cur := 0
		for ; time.Now().Before(end); time.Sleep(memberHeartbeats) {
			if g := generation(); g >= 0 {
				if _, code := post(&cur, "/broker/groups/g/heartbeat", fmt.Sprintf(`{"member_id":%q,"generation":%d}`, id, g)); code != 409 {
					continue
				}
			}
			m, code := post(&cur, "/broker/groups/g/join", fmt.Sprintf(`{"topic":"ev","member_id":%q,"session_timeout_ms":%d}`, id, memberSessionMs))
			if code == 200 {
				mu.Lock()
				gen = int64(m["generation"].(float64))
				mu.Unlock()
			}
		}
	}()
	cur := 0
	for ; time.Now().Before(end); time.Sleep(memberHeartbeats) {
		g := generation()
		if g < 0 {
			continue
		}
		m, code, err := call("GET", urls[cur]+"/broker/consume/ev/g?limit=50&member_id="+id, "")
		if err != nil || code != 200 {
			cur = (cur + 1) % len(urls)
			continue
		}
		last := map[int]int{}
		for _, msg := range m["messages"].([]any) {
			mm := msg.(map[string]any)
			last[int(mm["partition"].(float64))] = int(mm["offset"].(float64))
		}
		for p, off := range last {
			post(&cur, "/broker/commit", fmt.Sprintf(`{"topic":"ev","group":"g","partition":%d,"offset":%d,"member_id":%q,"generation":%d}`, p, off, id, g))
		}
	}
}

func TestGroupMembersRebalanceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := newClusterProcs(t, 3)
	c.waitReady(30 * time.Second)
	lead := c.nodes[c.leader()].url()
	if _, code, err := call("POST", lead+"/broker/topics", `{"name":"ev","partitions":6}`); err != nil || code != 200 {
		t.Fatalf("create: %d %v", code, err)
	}
	for i := range 60 {
		produceOnce(lead, "ev", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
	}
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.url())
	}
	ids := []string{"member-a", "member-b", "member-c"}
	procs := map[string]*exec.Cmd{}
	for _, id := range ids {
		procs[id] = startMember(t, id, urls)
	}
	waitGroup := func(what string, within time.Duration, cond func(groupState) bool) (groupState, time.Duration) {
		t.Helper()
		start := time.Now()
		var last groupState
		var lastErr error
		for time.Since(start) < within {
			for _, i := range c.runningNodes() {
				g, err := readGroup(c.nodes[i].url(), "g")
				if err == nil && cond(g) {
					return g, time.Since(start)
				}
				last, lastErr = g, err
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: not within %v; last %+v (%v)", what, within, last, lastErr)
		return last, 0
	}
	g, _ := waitGroup("three members own the six partitions", 20*time.Second, func(g groupState) bool { return g.allOwned(ids, 6) })
	for id, ps := range g.owned() {
		if len(ps) != 2 {
			t.Fatalf("%s owns %v of 6 partitions among 3 members", id, ps)
		}
	}
	deadGen := *g.Generation
	deadParts := g.owned()["member-c"]
	before := g.owned()

	// kill -9 one member: its partitions move within the session timeout
	// plus one second, and only its partitions (sticky).
	procs["member-c"].Process.Kill()
	procs["member-c"].Wait()
	g, took := waitGroup("member-c's partitions move", memberSessionMs*time.Millisecond+5*time.Second,
		func(g groupState) bool { return g.allOwned(ids[:2], 6) })
	t.Logf("rebalance after kill -9 of a member: %v (session timeout %d ms)", took, memberSessionMs)
	if took > memberSessionMs*time.Millisecond+time.Second {
		t.Fatalf("rebalance took %v, more than the session timeout + 1 s", took)
	}
	for _, id := range ids[:2] {
		for _, p := range before[id] {
			if !slices.Contains(g.owned()[id], p) {
				t.Fatalf("%s lost partition %d when member-c died (%v -> %v)", id, p, before[id], g.owned()[id])
			}
		}
	}
	// A commit from the dead member's generation is refused.
	m, code, err := call("POST", c.nodes[c.leader()].url()+"/broker/commit",
		fmt.Sprintf(`{"topic":"ev","group":"g","partition":%d,"offset":0,"member_id":"member-c","generation":%d}`, deadParts[0], deadGen))
	if err != nil || code != 409 || m["error"] != "stale_generation" {
		t.Fatalf("a commit of the dead member's generation: %d %v %v", code, m, err)
	}

	// The leader dies: the members move to the new one, and none is
	// expired for the time its heartbeats took to find it.
	genBefore := *g.Generation
	old := c.leader()
	c.nodes[old].proc.kill9(t)
	newLead := c.leader()
	if newLead == old {
		t.Fatal("the killed node still leads")
	}
	time.Sleep(2 * memberSessionMs * time.Millisecond)
	g, _ = waitGroup("the group after the failover", 5*time.Second, func(g groupState) bool { return g.Generation != nil })
	if *g.Generation != genBefore || !g.allOwned(ids[:2], 6) {
		for _, n := range c.nodes {
			for _, l := range strings.Split(n.proc.log(), "\n") {
				if strings.Contains(l, "expired") || strings.Contains(l, "leader") {
					t.Log(n.name, l)
				}
			}
		}
		t.Fatalf("a member was expired across the leader change: generation %d -> %d, %+v", genBefore, *g.Generation, g.owned())
	}
	// The new leader expires a member that dies in its term.
	procs["member-b"].Process.Kill()
	procs["member-b"].Wait()
	_, took = waitGroup("member-b expired by the new leader", memberSessionMs*time.Millisecond+5*time.Second,
		func(g groupState) bool { return g.allOwned(ids[:1], 6) })
	t.Logf("rebalance under the new leader: %v", took)
	if took > memberSessionMs*time.Millisecond+time.Second {
		t.Fatalf("rebalance took %v under the new leader", took)
	}
	// The member that stayed kept committing: its lag shrinks to zero.
	waitGroup("member-a caught up (lag 0)", 20*time.Second, func(g groupState) bool { return g.allOwned(ids[:1], 6) && g.Lag == 0 })
}

// SSE with curl -N: a stream read by curl, cut, and resumed with
// Last-Event-ID while messages keep coming, sees every offset once.
func TestStreamCurlResume(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is not installed (make test installs it)")
	}
	bin := buildBinary(t)
	p := startKeel(t, bin, t.TempDir(), freePort(t))
	defer p.kill9(t)
	if _, code, err := call("POST", p.url+"/broker/topics", `{"name":"ev","partitions":1}`); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	stop := make(chan struct{})
	produced := make(chan int, 1)
	go func() {
		n := 0
		defer func() { produced <- n }()
		for ; n < 3000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, code, err := call("POST", p.url+"/broker/topics/ev/produce?partition=0", fmt.Sprintf("v%d", n)); err != nil || code != 200 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var got []int
	lastID := ""
	for round := range 4 {
		args := []string{"-N", "-s", "--max-time", "20", "-H", "Authorization: Bearer dev"}
		if lastID != "" {
			args = append(args, "-H", "Last-Event-ID: "+lastID)
		}
		cmd := exec.Command(curl, append(args, p.url+"/broker/stream/ev/readers/0")...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		events := 0
		for sc.Scan() && events < 200 {
			line := sc.Text()
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				lastID = id
				var off int
				fmt.Sscan(id, &off)
				got = append(got, off)
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				var m map[string]any
				if err := json.Unmarshal([]byte(v), &m); err != nil || m["value"] != fmt.Sprintf("v%d", got[len(got)-1]) {
					t.Fatalf("round %d: data %q for id %s", round, v, lastID)
				}
				events++
			}
		}
		cmd.Process.Kill() // the reader goes away mid-stream
		cmd.Wait()
		if events < 200 {
			t.Fatalf("round %d: curl read %d events", round, events)
		}
		time.Sleep(50 * time.Millisecond) // messages go on meanwhile
	}
	close(stop)
	<-produced
	for i, off := range got {
		if off != i {
			t.Fatalf("event %d has offset %d: a gap or a repeat across reconnects (ids %v...)", i, off, got[max(0, i-3):min(len(got), i+3)])
		}
	}
}

// A thousand concurrent streams stay within the documented memory bound
// (README: about 40 KiB each, 64 KiB checked here), and each receives a
// message produced while they are all open.
func TestThousandStreamsMemory(t *testing.T) {
	const streams = 1000
	const perStreamMax = 64 << 10
	bin := buildBinary(t)
	p := startKeelOpts(t, bin, t.TempDir(), freePort(t), keelOpts{nofile: 4096})
	defer p.kill9(t)
	if _, code, err := call("POST", p.url+"/broker/topics", `{"name":"ev","partitions":1}`); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	call("POST", p.url+"/broker/topics/ev/produce?partition=0", "warm")
	time.Sleep(200 * time.Millisecond)
	base := rssBytes(t, p.cmd.Process.Pid)
	got := make(chan bool, streams)
	var bodies []io.Closer
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	tr := &http.Transport{MaxIdleConnsPerHost: streams, MaxConnsPerHost: 0}
	hc := &http.Client{Transport: tr}
	for range streams {
		req, _ := http.NewRequest("GET", p.url+"/broker/stream/ev/g/0?offset=1", nil)
		req.Header.Set("Authorization", "Bearer dev")
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %d: %v %v", len(bodies), err, resp)
		}
		bodies = append(bodies, resp.Body)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"value":"hello"`) {
					got <- true
					return
				}
			}
			got <- false
		}()
	}
	if m := metric(t, p.url, "keel_streams_open"); m != streams {
		t.Fatalf("keel_streams_open %v, want %d", m, streams)
	}
	call("POST", p.url+"/broker/topics/ev/produce?partition=0", "hello")
	deadline := time.After(20 * time.Second)
	for i := range streams {
		select {
		case ok := <-got:
			if !ok {
				t.Fatalf("a stream ended before the message (%d received)", i)
			}
		case <-deadline:
			t.Fatalf("%d of %d streams received the message within 20 s", i, streams)
		}
	}
	rss := rssBytes(t, p.cmd.Process.Pid)
	per := (rss - base) / streams
	t.Logf("RSS %d MB idle, %d MB with %d streams: %d KiB per stream", base>>20, rss>>20, streams, per>>10)
	if per > perStreamMax {
		t.Fatalf("%d KiB of memory per open stream, over the %d KiB bound", per>>10, perStreamMax>>10)
	}
	p.alive(t)
}

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// node is one keel process of the cluster.
type node struct {
	name     string
	raftPort int // its own raft listener; HTTP on raftPort+1
	data     string
	spec     string // its RF_HA_NODES: peers at the proxies of its links to them
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	paused   bool
}

func (n *node) url() string { return fmt.Sprintf("http://127.0.0.1:%d", n.raftPort+1) }

func (n *node) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// cluster is n keel processes on loopback with a cuttable proxy on every
// directed raft link (i dials j through links[{i,j}]). Clients talk to
// each node's own HTTP port.
type cluster struct {
	bin       string
	smallDisk int // the node whose data directory is a small tmpfs (disk-full nemesis); -1: none

	topic      string // the workload's topic and its partition count (the corruption nemesis reads it back)
	partitions int
	nodes      []*node
	links      map[[2]int]*LinkProxy
	forward    []*LinkProxy // HTTP forwarders beside each link proxy (never cut): redirects name a peer's proxy port + 1
}

// FreePortPair finds p with p and p+1 free on 127.0.0.1 and not in used
// (which it adds them to), from a random place in 10000–32000: below
// Linux's ephemeral range (32768–60999), so a client's outgoing connection
// cannot take the port of a node that restarts, and spread out, so test
// processes running at once rarely try the same ports.
func FreePortPair(used map[int]bool) (int, error) {
	const lo, hi = 10000, 32000
	start := lo + rand.IntN((hi-lo)/2)*2
	for k := 0; k < hi-lo; k += 2 {
		p := lo + (start-lo+k)%(hi-lo)
		if used[p] || used[p+1] {
			continue
		}
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
		used[p], used[p+1] = true, true
		return p, nil
	}
	return 0, errors.New("chaos: no free port pair in 10000-32000")
}

// startCluster starts n nodes (node1 bootstraps as leader; priorities
// fall from node1), data and logs under dir. With diskFull, node1's data
// directory is a small tmpfs (diskfull.go: node1 leads most of
// the time, having the highest priority, so clients see its 507s and the
// cluster fails over); when it cannot be
// mounted, note says why and the run goes on without it.
func startCluster(bin, dir string, n int, diskFull bool, note func(string)) (*cluster, error) {
	c := &cluster{bin: bin, links: map[[2]int]*LinkProxy{}, smallDisk: -1}
	used := map[int]bool{}
	for i := range n {
		p, err := FreePortPair(used)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("node%d", i+1)
		c.nodes = append(c.nodes, &node{name: name, raftPort: p, data: filepath.Join(dir, name), logPath: filepath.Join(dir, name+".log")})
	}
	for i, nd := range c.nodes {
		var spec []string
		for j, peer := range c.nodes {
			port := peer.raftPort
			if i != j {
				var err error
				if port, err = FreePortPair(used); err != nil {
					c.stop()
					return nil, err
				}
				lp, err := NewLinkProxy(fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", peer.raftPort))
				if err != nil {
					c.stop()
					return nil, err
				}
				c.links[[2]int{i, j}] = lp
				fw, err := NewLinkProxy(fmt.Sprintf("127.0.0.1:%d", port+1), fmt.Sprintf("127.0.0.1:%d", peer.raftPort+1))
				if err != nil {
					c.stop()
					return nil, err
				}
				c.forward = append(c.forward, fw)
			}
			spec = append(spec, fmt.Sprintf("%s:127.0.0.1:%d:%d", peer.name, port, 100-10*j))
		}
		nd.spec = strings.Join(spec, ",")
	}
	if diskFull {
		if err := mountSmallDisk(c.nodes[0].data); err != nil {
			note("disk-full nemesis skipped: " + err.Error())
		} else {
			c.smallDisk = 0
		}
	}
	for i := range c.nodes {
		if err := c.start(i); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

// start runs node i (again) on its data directory, configured as Ayder's
// scripts configure a member; its log is appended to.
func (c *cluster) start(i int) error {
	nd := c.nodes[i]
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "serve", "--data", nd.data, "--log-level", "info", "--checkpoint-bytes", "1048576")
	cmd.Env = append(os.Environ(), "RF_HA_ENABLED=1", "RF_HA_NODE_ID="+nd.name, "RF_HA_NODES="+nd.spec)
	if i == 0 {
		cmd.Env = append(cmd.Env, "RF_HA_BOOTSTRAP_LEADER=1")
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the suite
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("chaos: start %s: %w", nd.name, err)
	}
	nd.cmd, nd.exited, nd.paused = cmd, make(chan struct{}), false
	go func(exited chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(exited)
	}(nd.exited)
	return nil
}

// kill sends SIGKILL to node i and waits for it to exit.
func (c *cluster) kill(i int) {
	nd := c.nodes[i]
	if !nd.running() {
		return
	}
	nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.exited
	nd.paused = false
}

// pause stops (SIGSTOP) or resumes (SIGCONT) node i.
func (c *cluster) pause(i int, stop bool) {
	nd := c.nodes[i]
	if !nd.running() {
		return
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	nd.cmd.Process.Signal(sig)
	nd.paused = stop
}

// cut cuts (or heals) the links between every node of a and every node of b,
// both directions.
func (c *cluster) cut(a, b []int, cut bool) {
	for _, x := range a {
		for _, y := range b {
			if lp := c.links[[2]int{x, y}]; lp != nil {
				lp.SetCut(cut)
			}
			if lp := c.links[[2]int{y, x}]; lp != nil {
				lp.SetCut(cut)
			}
		}
	}
}

// healAll heals every link, resumes paused nodes and starts stopped ones.
func (c *cluster) healAll() error {
	for _, lp := range c.links {
		lp.SetCut(false)
	}
	for i, nd := range c.nodes {
		if nd.paused {
			c.pause(i, false)
		}
		if !nd.running() {
			if err := c.start(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// stop kills every node and closes the proxies.
func (c *cluster) stop() {
	for i := range c.nodes {
		if c.nodes[i].paused {
			c.pause(i, false)
		}
		c.kill(i)
	}
	for _, lp := range c.links {
		lp.Close()
	}
	for _, fw := range c.forward {
		fw.Close()
	}
	if c.smallDisk >= 0 {
		keepSmallDisk(c.nodes[c.smallDisk].data)
		c.smallDisk = -1
	}
}

var httpc = &http.Client{
	Timeout:       5 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second},
}

// token is the bearer token a node with no tokens configured accepts.
const token = "dev"

// do sends one request with the token.
func do(method, u string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return httpc.Do(req)
}

// haNumber reads one unlabeled line of node i's /metrics_ha.
func (c *cluster) haNumber(ctx context.Context, i int, name string) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", c.nodes[i].url()+"/metrics_ha", nil)
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("chaos: %s has no %s", c.nodes[i].name, name)
}

// leader returns the running, unpaused node that reports itself leader
// (-1 when none does).
func (c *cluster) leader(ctx context.Context) int {
	for i, nd := range c.nodes {
		if !nd.running() || nd.paused {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		role, err := c.haNumber(cctx, i, "ramforge_ha_role")
		cancel()
		if err == nil && role == 0 {
			return i
		}
	}
	return -1
}

// settle waits until every node is ready and has applied the leader's
// commit index, bounded by within.
func (c *cluster) settle(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("chaos: interrupted: %w", err)
		}
		if l := c.leader(ctx); l >= 0 {
			commit, err := c.haNumber(ctx, l, "ramforge_ha_commit_index")
			if err == nil {
				all := true
				for i := range c.nodes {
					applied, err := c.haNumber(ctx, i, "ramforge_ha_applied_index")
					if err != nil || applied < commit {
						all = false
						break
					}
				}
				if all {
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("chaos: the cluster did not settle within %s (every node applying the leader's commit index)", within)
}

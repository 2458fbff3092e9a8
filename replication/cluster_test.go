package replication

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// testCluster runs several members on the deterministic harness, joined by
// an in-memory network that the test controls: messages wait in a queue
// until a delivery round hands them over; links can be cut (partition) and
// healed; with faults set, the network drops, delays and reorders messages
// (from a seeded rand). Nothing runs on its own: no goroutine, no tick, no
// sleep. Time passes when the test ticks.
type testCluster struct {
	t        *testing.T
	members  map[uint64]*harness
	ids      []uint64
	inbox    []inFlight         // sent, not yet delivered
	cut      map[[2]uint64]bool // directed links that drop what they carry
	down     map[uint64]bool    // members stopped (their messages are dropped)
	dirs     map[uint64]string
	faults   netFaults
	config   []Member // names and priorities given to every member (none: ids only)
	concern  int      // Config.WriteConcern of every member
	bootLead uint64   // the member started with Config.BootstrapLeader (0: none)
	rng      *rand.Rand
	round    int // delivery rounds so far
	stats    netStats
}

// inFlight is a message on the network, due at a delivery round.
type inFlight struct {
	m   raftpb.Message
	due int
}

// netFaults is what the network does to every message.
type netFaults struct {
	drop      float64 // probability a message is lost
	delayMax  int     // a message waits 0..delayMax extra delivery rounds
	reorder   bool    // the messages of a round are delivered in random order
	duplicate float64 // probability a message is delivered twice
}

// netStats counts what the network did.
type netStats struct{ delivered, dropped, delayed, duplicated int }

// newTestCluster bootstraps a group of n members.
func newTestCluster(t *testing.T, n int) *testCluster { return newTestClusterPrio(t, n, nil) }

// newTestClusterPrio bootstraps a group of n members; member i+1 has
// priority prio[i] when prio is given.
func newTestClusterPrio(t *testing.T, n int, prio []int) *testCluster {
	return newTestClusterPrioConcern(t, n, prio, 0)
}

// newTestClusterPrioConcern also sets every member's write concern.
func newTestClusterPrioConcern(t *testing.T, n int, prio []int, concern int) *testCluster {
	return newTestClusterWith(t, n, prio, concern, 0)
}

// newTestClusterWith also names the member that bootstraps as leader.
func newTestClusterWith(t *testing.T, n int, prio []int, concern int, bootLead uint64) *testCluster {
	t.Helper()
	c := &testCluster{t: t, members: map[uint64]*harness{}, cut: map[[2]uint64]bool{}, down: map[uint64]bool{}, dirs: map[uint64]string{},
		rng: rand.New(rand.NewPCG(1, uint64(n))), concern: concern, bootLead: bootLead}
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, uint64(i))
		m := Member{ID: uint64(i), Name: fmt.Sprintf("n%d", i)}
		if prio != nil {
			m.Priority = prio[i-1]
		}
		c.config = append(c.config, m)
	}
	root := t.TempDir()
	for _, id := range c.ids {
		c.dirs[id] = filepath.Join(root, fmt.Sprint(id))
		c.start(id)
	}
	return c
}

// start opens member id on its directory (fresh, or as it was left).
func (c *testCluster) start(id uint64) {
	c.members[id] = newHarness(c.t, c.dirs[id], Config{ID: id, Peers: c.ids, Members: c.config, Send: c.send, WriteConcern: c.concern,
		BootstrapLeader: id == c.bootLead}, nil)
	c.down[id] = false
}

// join starts member id with an empty directory as a new member of the
// running group (Config.Join): it waits for the leader to add it.
func (c *testCluster) join(id uint64) {
	c.ids = append(c.ids, id)
	c.dirs[id] = filepath.Join(c.t.TempDir(), fmt.Sprint(id))
	members := append(slices.Clone(c.config), Member{ID: id, Name: fmt.Sprintf("n%d", id)})
	c.members[id] = newHarness(c.t, c.dirs[id], Config{ID: id, Peers: c.ids, Members: members, Send: c.send, Join: true}, nil)
	c.down[id] = false
}

// crash stops member id as kill -9 would (no final checkpoint).
func (c *testCluster) crash(id uint64) {
	h := c.members[id]
	h.n.skipFinalCheckpoint = true
	h.stop()
	c.down[id] = true
}

// send queues what a member's Ready sends. The messages are copied: their
// entries point into raft's memory, which the member reuses (Config.Send).
func (c *testCluster) send(msgs []raftpb.Message) {
	for _, m := range msgs {
		m.Entries = slices.Clone(m.Entries)
		for i := range m.Entries {
			m.Entries[i].Data = slices.Clone(m.Entries[i].Data)
		}
		due := c.round + 1
		if c.faults.delayMax > 0 {
			if d := c.rng.IntN(c.faults.delayMax + 1); d > 0 {
				due += d
				c.stats.delayed++
			}
		}
		c.inbox = append(c.inbox, inFlight{m: m, due: due})
	}
}

// partition cuts every link between the two sides (both directions).
func (c *testCluster) partition(a, b []uint64) {
	for _, x := range a {
		for _, y := range b {
			c.cut[[2]uint64{x, y}], c.cut[[2]uint64{y, x}] = true, true
		}
	}
}

func (c *testCluster) heal() { clear(c.cut) }

// stabilize delivers messages and runs every member's queued proposals
// until nothing is left in flight (bounded: a test that never settles
// fails). Lost messages are not resent until time passes (tick).
func (c *testCluster) stabilize() {
	c.t.Helper()
	for range 1000 {
		for _, id := range c.ids {
			if !c.down[id] {
				c.members[id].run()
			}
		}
		if len(c.inbox) == 0 {
			return
		}
		c.deliverRound()
	}
	c.t.Fatal("the cluster did not settle in 1000 rounds")
}

// deliverRound hands over every message due by this round, through the
// faults, and keeps the rest.
func (c *testCluster) deliverRound() {
	c.round++
	var due, later []inFlight
	for _, f := range c.inbox {
		if f.due <= c.round {
			due = append(due, f)
		} else {
			later = append(later, f)
		}
	}
	c.inbox = later
	if c.faults.reorder {
		c.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	}
	for _, f := range due {
		m := f.m
		if c.down[m.To] || c.down[m.From] || c.cut[[2]uint64{m.From, m.To}] {
			continue
		}
		if c.faults.drop > 0 && c.rng.Float64() < c.faults.drop {
			c.stats.dropped++
			continue
		}
		c.members[m.To].n.turn(loopEvent{kind: eventStep, msg: m})
		c.stats.delivered++
		if c.faults.duplicate > 0 && c.rng.Float64() < c.faults.duplicate {
			c.members[m.To].n.turn(loopEvent{kind: eventStep, msg: m})
			c.stats.duplicated++
		}
	}
}

// tickAll moves every running member's clock by one tick interval.
func (c *testCluster) tickAll() {
	for _, id := range c.ids {
		if !c.down[id] {
			c.members[id].advance(100 * time.Millisecond)
		}
	}
}

// campaign makes member id start an election now.
func (c *testCluster) campaign(id uint64) {
	c.members[id].n.turn(loopEvent{kind: eventCampaign})
	c.stabilize()
}

// leader returns the member that leads in the highest term, failing
// unless exactly one member thinks it leads in that term.
func (c *testCluster) leader() uint64 {
	c.t.Helper()
	var lead, term uint64
	for _, id := range c.ids {
		if c.down[id] {
			continue
		}
		st := c.members[id].n.rn.BasicStatus()
		if st.RaftState.String() == "StateLeader" && st.Term >= term {
			if st.Term == term && lead != 0 {
				c.t.Fatalf("members %d and %d both lead term %d", lead, id, term)
			}
			lead, term = id, st.Term
		}
	}
	if lead == 0 {
		c.t.Fatal("no leader")
	}
	return lead
}

// values returns what member id's partition t/0 holds.
func (c *testCluster) values(id uint64) []string {
	return readValues(c.t, c.members[id].store, "t")
}

// TestClusterPartitionedLeader: a leader cut off from the majority
// commits nothing; the majority elects a new leader in a higher term and
// goes on; after healing, the old leader follows and holds exactly what the
// new one committed (its uncommitted entry is gone, never applied).
func TestClusterPartitionedLeader(t *testing.T) {
	c := newTestCluster(t, 3)
	c.campaign(1)
	w := c.members[1].propose(produceCmd("t", "", "before"))
	c.stabilize()
	if _, err := c.members[1].answer(w); err != nil {
		t.Fatal(err)
	}
	oldTerm := c.members[1].n.rn.BasicStatus().Term
	c.partition([]uint64{1}, []uint64{2, 3})
	lost := c.members[1].propose(produceCmd("t", "", "lost"))
	c.stabilize()
	select {
	case <-lost.done:
		t.Fatalf("an isolated leader answered a write: %+v %v", lost.out, lost.err)
	default:
	}
	// Time passes for everyone: the majority's election timeout runs out
	// (PreVote and CheckQuorum: they ignore elections while they hear from
	// a leader), and the isolated leader, hearing from no quorum, steps down.
	newLead := uint64(0)
	// Election timeouts are randomized (10 to 19 ticks): allow for a few
	// split votes.
	for tick := 0; tick < 300 && newLead == 0; tick++ {
		for _, id := range c.ids {
			c.members[id].n.turn(loopEvent{kind: eventTick})
		}
		c.stabilize()
		for _, id := range []uint64{2, 3} {
			if st := c.members[id].n.rn.BasicStatus(); st.RaftState.String() == "StateLeader" {
				newLead = id
			}
		}
	}
	if newLead == 0 || c.members[newLead].n.rn.BasicStatus().Term <= oldTerm {
		t.Fatalf("no new leader in a higher term on the majority side (leader %d)", newLead)
	}
	for tick := 0; tick < 20; tick++ { // the isolated leader's own election timeout
		c.members[1].n.turn(loopEvent{kind: eventTick})
	}
	c.stabilize()
	if st := c.members[1].n.rn.BasicStatus(); st.RaftState.String() == "StateLeader" {
		t.Fatal("the isolated leader still leads after an election timeout without a quorum")
	}
	w = c.members[newLead].propose(produceCmd("t", "", "after"))
	c.stabilize()
	if out, err := c.members[newLead].answer(w); err != nil || out.Err != nil {
		t.Fatalf("produce on the new leader: %+v %v", out, err)
	}
	c.heal()
	// A heartbeat (one tick) reaches the old leader, which follows and
	// replaces its uncommitted tail with the new leader's log.
	c.members[newLead].n.turn(loopEvent{kind: eventTick})
	c.stabilize()
	w = c.members[newLead].propose(produceCmd("t", "", "healed"))
	c.stabilize()
	if _, err := c.members[newLead].answer(w); err != nil {
		t.Fatal(err)
	}
	want := []string{"before", "after", "healed"}
	for _, id := range c.ids {
		if got := c.values(id); !slices.Equal(got, want) {
			t.Fatalf("member %d holds %v, want %v", id, got, want)
		}
	}
	if st := c.members[1].n.rn.BasicStatus(); st.Lead != newLead {
		t.Fatalf("the old leader follows %d, want %d", st.Lead, newLead)
	}
	// The isolated leader's proposal was never answered ok: it was not
	// committed (its entry was replaced). Its waiter is answered by its
	// deadline, or not yet: either way, never a success.
	select {
	case <-lost.done:
		if lost.err == nil && lost.out.Err == nil {
			t.Fatalf("the write proposed to the isolated leader was answered ok: %+v", lost.out)
		}
	default:
	}
}

// TestGroupConfigRefused: what a group of several members cannot do
// safely is refused at Open.
func TestGroupConfigRefused(t *testing.T) {
	send := func([]raftpb.Message) {}
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"single", Config{}, true},
		{"group", Config{ID: 1, Peers: []uint64{1, 2, 3}, Send: send}, true},
		{"group from members", Config{ID: 7, Members: []Member{{ID: 7}, {ID: 8}}, Send: send}, true},
		{"not a member (it may join)", Config{ID: 4, Peers: []uint64{1, 2, 3}, Send: send}, true},
		{"rocket group", Config{ID: 1, Peers: []uint64{1, 2}, Send: send, Rocket: true}, false},
		{"no transport", Config{ID: 1, Peers: []uint64{1, 2}}, false},
	}
	for _, c := range cases {
		if err := c.cfg.withDefaults().validateGroup(); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestBootstrapLeaderCampaignsAgain: the member asked to lead a new group
// campaigns at its first start; when that campaign is lost (its peers were
// not listening yet), it campaigns again two ticks later, and leads before
// any other member's election timeout (10 ticks) makes that one leader
// (whom priority would make hand leadership back, seconds later).
func TestBootstrapLeaderCampaignsAgain(t *testing.T) {
	c := newTestClusterWith(t, 3, nil, 0, 1)
	if len(c.inbox) == 0 {
		t.Fatal("the bootstrap leader sent no pre-vote at start")
	}
	c.inbox = nil // lost
	for tick := 1; tick <= 4; tick++ {
		c.tickAll()
		c.stabilize()
		for _, id := range c.ids {
			if c.members[id].n.Status().Role != "leader" {
				continue
			}
			if id != 1 {
				t.Fatalf("member %d leads after %d ticks, want the bootstrap leader 1", id, tick)
			}
			return
		}
	}
	t.Fatal("no leader 4 ticks after the bootstrap leader's campaign was lost")
}

// TestFollowerReadyWithAppendInFlight: a follower whose append is still
// being written learns that the entry is committed (the leader had it
// acknowledged by the other follower) before it can apply it; it is not
// behind, and stays ready. Once its write is back it applies the entry.
// Its acknowledgement goes out only after the write.
func TestFollowerReadyWithAppendInFlight(t *testing.T) {
	c := newTestCluster(t, 3)
	c.campaign(1)
	c.members[3].holdAppends()
	w := c.members[1].propose(produceCmd("t", "", "v"))
	c.stabilize()
	if out, err := c.members[1].answer(w); err != nil || out.Err != nil {
		t.Fatalf("produce: %+v %v", out, err)
	}
	st := c.members[3].n.Status()
	if st.Commit <= st.Applied {
		t.Fatalf("member 3: commit %d, applied %d: want the commit index ahead while its write is held", st.Commit, st.Applied)
	}
	if !st.Ready {
		t.Fatalf("member 3 not ready with its own write in flight: %+v", st)
	}
	if match := c.members[1].n.rn.Status().Progress[3].Match; match >= st.Commit {
		t.Fatalf("member 3 acknowledged index %d before its write was done", match)
	}
	c.members[3].deliver(c.members[3].writeHeld())
	c.stabilize()
	if st := c.members[3].n.Status(); st.Applied < st.Commit || !st.Ready {
		t.Fatalf("member 3 after its write: %+v", st)
	}
}

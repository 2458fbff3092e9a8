package replication

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"keel/engine"
	"keel/engine/logstore"
	"keel/engine/vfs"
	"keel/netio"
	"keel/ring"
)

// Config holds a node's settings and limits. Zero fields take defaults.
type Config struct {
	WALDir    string
	IO        ring.Backend
	FS        vfs.FS       // the WAL's metadata I/O (vfs.Default when nil)
	Store     StateMachine // what the group replicates into (an *engine.Store)
	StoreBlob []byte       // the blob of its last checkpoint (what engine.OpenStore returned); nil when fresh

	// Rocket acknowledges writes once they are written to the WAL, before
	// any fdatasync; a background sync runs every RocketSyncInterval.
	Rocket             bool
	RocketSyncInterval time.Duration

	CheckpointBytes    int64         // WAL bytes between state checkpoints (64 MiB)
	WALSegmentBytes    int64         // WAL segment size, the granularity of WAL truncation (64 MiB; at least 2 × EntryBytesMax)
	CheckpointInterval time.Duration // and at least this often when writes happen (60 s)
	EntryBytesMax      int           // one Raft entry carries at most this many command bytes (8 MiB)
	ReadyBytesMax      int           // entries proposed per loop turn (32 MiB)
	QueueMax           int           // proposals waiting to be taken (16384)
	QueueBytesMax      int64         // and their command bytes (256 MiB)
	TickInterval       time.Duration // raft tick (100 ms)
	Logger             *slog.Logger

	// ID is this member's Raft id (1 when 0); Peers are the voters a new
	// group is bootstrapped with (this node alone when empty; the ids of
	// Members when they are given). Send carries Raft messages to peers,
	// after the state they depend on is durable; nil for a single node,
	// which sends none. Peers deliver messages with Step (PeerTransport
	// does both over netio).
	//
	// Send runs on the loop goroutine: it must not block (queue, do not
	// dial), and must not keep or change the messages past its return (their
	// Entries point into raft's memory): copy what it queues.
	ID      uint64
	Peers   []uint64
	Send    func(msgs []raftpb.Message)
	Members []Member // names and addresses of the group's nodes (cluster mode), for redirects and membership answers

	// WriteConcern is how many voters must have a write on disk before it
	// is answered (0: a majority, raft's commit). Larger than the majority,
	// answers wait for the followers' progress (writeconcern.go); smaller
	// is served as the majority.
	WriteConcern int

	// OnMembers is told the membership table whenever a configuration
	// change alters it (PeerTransport.SetMembers dials new members). It
	// runs on the loop: it must not block.
	OnMembers func([]Member)
	// Join starts a node with an empty data directory as a new member of
	// an existing group: it does not bootstrap a configuration of its own
	// and waits for the leader, which added it as a learner, to send it the
	// log or a snapshot.
	Join bool

	// BootstrapLeader campaigns at once when this node bootstraps a new
	// group (its first start), instead of waiting for an election timeout.
	BootstrapLeader bool
	// ElectionTicks is raft's election timeout in ticks (10; raft waits a
	// random 1 to 2 times it). The heartbeat is every tick.
	ElectionTicks int
	// RaftLogRetainBytes: in a group, entries already applied stay in
	// raft's log (in memory) up to this many bytes, so that a follower
	// that fell behind catches up from the log (64 MiB: it is held in
	// memory, under the process's soft memory limit). One further behind
	// needs a snapshot.
	RaftLogRetainBytes int64

	// Clock is the loop's time: the leader timestamp written into each
	// entry, and when the checkpoint interval has passed (time.Now; tests
	// give a fake one).
	Clock func() time.Time
}

// validateGroup refuses what a group of several members cannot do safely
// yet, and configurations that could never work.
func (c Config) validateGroup() error {
	if len(c.Peers) == 1 && c.Peers[0] == c.ID {
		return nil
	}
	switch {
	case c.Rocket:
		// A member would acknowledge entries and votes before they are on
		// disk: after a crash it could vote twice in one term.
		return errors.New("replication: rocket mode is for a single member only")
	case c.Send == nil:
		return errors.New("replication: a group of several members needs Send")
	case c.WriteConcern > len(c.Peers):
		return fmt.Errorf("replication: write concern %d is more than the %d members", c.WriteConcern, len(c.Peers))
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.RocketSyncInterval == 0 {
		c.RocketSyncInterval = 10 * time.Millisecond
	}
	if c.CheckpointBytes == 0 {
		c.CheckpointBytes = 64 << 20
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 60 * time.Second
	}
	if c.EntryBytesMax == 0 {
		c.EntryBytesMax = 8 << 20
	}
	if c.WALSegmentBytes == 0 {
		c.WALSegmentBytes = walSegmentBytesDefault
	}
	if c.ReadyBytesMax == 0 {
		c.ReadyBytesMax = 32 << 20
	}
	if c.QueueMax == 0 {
		c.QueueMax = 16384
	}
	if c.QueueBytesMax == 0 {
		c.QueueBytesMax = 256 << 20
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	c.FS = vfs.OrDefault(c.FS)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.ID == 0 {
		c.ID = singleNodeID
	}
	if len(c.Peers) == 0 {
		for _, m := range c.Members {
			c.Peers = append(c.Peers, m.ID)
		}
	}
	if len(c.Peers) == 0 {
		c.Peers = []uint64{c.ID}
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.RaftLogRetainBytes == 0 {
		c.RaftLogRetainBytes = 64 << 20
	}
	return c
}

// Errors a proposer can get.
var (
	ErrOverloaded = errors.New("replication: proposal queue full")
	ErrNoLeader   = errors.New("replication: no leader")
	ErrStopped    = errors.New("replication: node stopping")
	ErrTimeout    = errors.New("replication: not applied before the deadline")
	ErrTooLarge   = errors.New("replication: command larger than one entry")
	// ErrNotLeader: this node does not lead (Status().Lead names the one
	// that does, if known). The command was not proposed.
	ErrNotLeader = errors.New("replication: not the leader")
)

// singleNodeID is the Raft id of a node given none (Config.ID).
const singleNodeID = 1

// stepQueueMax bounds the Raft messages from peers waiting for the loop;
// past it they are dropped, which Raft tolerates (it resends).
const stepQueueMax = 4096

// Node runs one Raft group member: it turns proposals into Raft entries,
// persists them through the WAL (HardState and entries in one batch, one
// fdatasync), applies committed entries to the Store and answers the
// proposers. One goroutine (loop) owns the RawNode and the Store's apply
// side; another (the appender) writes the WAL, handing each write back to
// the loop.
type Node struct {
	cfg     Config
	wal     *logstore.Log
	store   StateMachine
	storage *raft.MemoryStorage
	rn      *raft.RawNode
	log     *slog.Logger

	queue       chan *waiter
	steps       chan raftpb.Message // from peers (Step), for the loop
	reads       chan *readReq       // linearizable reads waiting for the loop (read.go)
	confs       chan *confReq       // membership changes waiting for the loop (membership.go)
	membersView atomic.Pointer[[]Member]
	snapshots   chan stagedSnapshot // fetched snapshots for the loop to step (snapshot.go)
	waiterPool  sync.Pool           // of *waiter
	queuedBytes atomic.Int64        // command bytes in queue, bounded by QueueBytesMax
	waiters     *waiters
	reqBase     uint64
	reqSeq      atomic.Uint64

	loopState // the loop goroutine's alone (Open sets it up before Start)

	started             bool       // Start was called
	skipFinalCheckpoint bool       // tests: stop as a crash would, without a checkpoint
	appendAloneAsync    bool       // tests: a lone member's appends go through the appender too
	ckptDone            chan error // a background checkpoint's result, for the loop

	// The appender goroutine (appender.go); nil until Start, and then the
	// loop writes appends itself.
	appendQ        chan *appendJob
	appendDone     chan []*appendJob
	appenderExited chan struct{}

	replayed  int  // Raft entries after the state checkpoint, replayed at open
	fresh     bool // Open bootstrapped a new group
	timings   *loopTimings
	synced    atomic.Uint64 // lastSynced, published as soon as the WAL batch is durable
	servingC  chan struct{} // closed once the node has caught up after start
	faultC    chan struct{} // closed by the first storage fault
	status    atomic.Pointer[Status]
	reachable atomic.Pointer[reachableFunc] // set by PeerTransport.SetNode
	fault     atomic.Pointer[error]
	closing   atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
}

// loopState is what only the loop goroutine reads and writes once it
// runs: Raft's persisted state as last written, where entries went in the
// WAL, the proposals between propose and persist, checkpoint bookkeeping.
// Everything other goroutines read is published through Status and the
// atomics of Node.
type loopState struct {
	prevHS          raftpb.HardState // the HardState last written (or learned at open)
	submittedHS     raftpb.HardState // the HardState last handed to the appender
	walConfirmed    uint64           // the WAL's next offset after the last append taken back: later appends go after it
	appendInflight  int              // jobs handed to the appender and not taken back
	lastLogIndex    uint64           // index of the last entry handed to the appender: the end of raft's log once every Ready is handled
	lastStableIndex uint64           // index of the last entry written (taken back from the appender)
	confState       raftpb.ConfState
	marks           []walMark // where each unapplied entry went in the WAL, by index
	unpersisted     []*waiter // proposed, waiting to be handed to the appender
	walSinceCkpt    int64     // WAL bytes written since the last state checkpoint
	lastCkpt        time.Time
	startupCommit   uint64 // the commit index found at open: serving once applied
	campaignedTerm  uint64
	bootstrapTicks  int             // ticks bootstrapCampaign has seen
	results         []engine.Result // reused per entry
	marshalBuf      []byte          // the loop's reusable entry-marshalling buffer (appends written on the loop)
	logSizes        []entrySize     // index and size of the entries in raft's log (groups: what compaction keeps)
	lastSynced      uint64          // last WAL batch made durable
	checkpoints     uint64          // state checkpoints written
	ckptRunning     bool            // a checkpoint is being written in the background
	checkpointFirst bool            // write a checkpoint before taking proposals
	walUnordered    bool            // the WAL was written in rocket mode since its last checkpoint
	serving         bool            // caught up once since start
	confIndex       uint64          // index of the last configuration change applied
	freshQuorum     bool            // leader: a quorum was recently active (refreshed per tick)
	followers       []FollowerProgress
	transferTo      uint64 // the higher-priority voter caught up for transferTicks ticks
	transferTicks   int
	readSeq         uint64                  // read batches started
	readBatches     []*readBatch            // read batches waiting for confirmation or apply
	staged          *engine.SnapshotStaging // a fetched snapshot stepped into raft, installed at its Ready
	held            []heldAnswer            // applied entries waiting for their write concern
	members         map[uint64]Member       // the membership table (membership.go)
	confWaiting     *confReq                // the membership change this node proposed, until applied
	checkpointSoon  bool                    // take a state checkpoint at the end of this turn (a configuration change)
	stagedMembers   []Member                // with staged: the leader's membership table
	stagedConfIndex uint64
}

// entrySize is one entry of raft's in-memory log.
type entrySize struct {
	index uint64
	bytes int
}

// Status is a snapshot of the node for /ready and /metrics.
type Status struct {
	Term, Lead, Commit, Applied uint64
	Role                        string // leader, follower, candidate, pre-candidate
	LastSyncedBatch             uint64
	Ready                       bool // a leader is known (or this node leads), applied up to the commit index it learned, no storage fault (for /ready)
	Serving                     bool // has caught up once since start: data routes may answer
	Checkpoints                 uint64
	WALStart, WALNext           uint64
	WALWriteBehindFailures      uint64 // write-behind hints the kernel refused (rocket mode writes unsynced)

	// Membership, as this node applied it.
	Voters, Learners []uint64
	ConfIndex        uint64 // index of the last configuration change applied since start (the membership epoch)
	JointActive      bool   // a joint configuration (ConfChangeV2) is in force
	// On the leader, refreshed every tick: whether a quorum of voters was
	// heard from within the last election timeout, and each follower's
	// replication progress.
	FreshQuorum bool
	Followers   []FollowerProgress
}

// FollowerProgress is what the leader knows of one follower.
type FollowerProgress struct {
	ID    uint64
	Match uint64 // highest index known to be in its log
}

// IsVoter reports whether member id votes in the configuration.
func (st Status) IsVoter(id uint64) bool { return slices.Contains(st.Voters, id) }

// IsLearner reports whether member id is a learner (receives the log, does
// not vote).
func (st Status) IsLearner(id uint64) bool { return slices.Contains(st.Learners, id) }

// Open opens the WAL in cfg.WALDir, replays it after the store's
// checkpoint and returns a node ready to Start.
func Open(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validateGroup(); err != nil {
		return nil, err
	}
	wal, err := openWAL(cfg)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, wal: wal, store: cfg.Store, log: cfg.Logger,
		queue:     make(chan *waiter, cfg.QueueMax),
		steps:     make(chan raftpb.Message, stepQueueMax),
		reads:     make(chan *readReq, readIndexMax),
		confs:     make(chan *confReq, 16),
		snapshots: make(chan stagedSnapshot),
		waiters:   newWaiters(),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		timings:   newLoopTimings(),
		ckptDone:  make(chan error, 1),
		servingC:  make(chan struct{}),
		faultC:    make(chan struct{}),
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	// Request ids are unique across restarts, so a replayed entry can never
	// complete a new request that happens to reuse an id.
	n.reqBase = binary.LittleEndian.Uint64(seed[:]) &^ (1<<32 - 1)
	if err := n.restore(); err != nil {
		wal.Close()
		return nil, err
	}
	n.walUnordered = cfg.Rocket || walMarkedUnordered(cfg.FS, cfg.WALDir)
	go n.waiters.reap() // until the waiters are closed (stop or fault)
	n.publishStatus()
	return n, nil
}

// restore rebuilds raft's storage from the checkpoint and the WAL.
func (n *Node) restore() error {
	applied, appliedTerm := n.store.Applied()
	n.storage = raft.NewMemoryStorage()
	fresh := n.cfg.StoreBlob == nil && n.wal.NextOffset() == 0
	var st replicationState
	if n.cfg.StoreBlob != nil {
		var err error
		if st, err = decodeReplicationState(n.cfg.StoreBlob); err != nil {
			return err
		}
		snap := raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: applied, Term: appliedTerm, ConfState: st.confState}}
		if applied > 0 {
			if err := n.storage.ApplySnapshot(snap); err != nil {
				return fmt.Errorf("replication: restore snapshot at %d: %w", applied, err)
			}
		}
		n.confState = st.confState
	}
	n.members = map[uint64]Member{}
	for _, m := range n.cfg.Members {
		n.members[m.ID] = m
	}
	if st.members != nil { // the log's changes win over the configuration
		clear(n.members)
		for _, m := range st.members {
			n.members[m.ID] = m
		}
	}
	n.confIndex = st.confIndex
	if n.HA() {
		ms := n.membersList()
		n.membersView.Store(&ms)
	}
	if next := n.wal.NextOffset(); st.replayFrom > next {
		// The WAL ends before where the checkpoint says replay starts.
		if !n.cfg.Rocket && !n.walUnordered {
			return &logstore.CorruptionError{Path: n.cfg.WALDir, Reason: fmt.Sprintf(
				"the checkpoint replays the WAL from record %d but it ends at %d: fsynced records are missing", st.replayFrom, next)}
		}
		// Rocket mode lost unsynced records, as it may. New records would
		// get offsets below the checkpoint's replay position, so write a
		// checkpoint before taking any.
		n.log.Warn("rocket mode: the WAL lost records after a crash", "replay_from", st.replayFrom, "wal_end", next)
		st.replayFrom = next
		n.checkpointFirst = true
	}
	r, err := replayWAL(n.wal, max(st.replayFrom, n.wal.StartOffset()), applied, st.hardState)
	if err != nil {
		return err
	}
	hs := r.hardState
	hs.Commit = max(hs.Commit, st.hardState.Commit, applied) // commit never goes back
	if last := applied + uint64(len(r.entries)); hs.Commit > last {
		return fmt.Errorf("replication: hard state commits %d but the WAL ends at entry %d", hs.Commit, last)
	}
	if err := n.storage.Append(r.entries); err != nil {
		return fmt.Errorf("replication: restore entries: %w", err)
	}
	n.trackLogSizes(r.entries)
	if !raft.IsEmptyHardState(hs) {
		if err := n.storage.SetHardState(hs); err != nil {
			return err
		}
	}
	n.prevHS, n.submittedHS, n.marks, n.startupCommit = hs, hs, r.marks, hs.Commit
	n.walConfirmed = n.wal.NextOffset()
	n.lastLogIndex, _ = n.storage.LastIndex()
	n.lastStableIndex = n.lastLogIndex
	n.setLastSynced(n.wal.LastBatch())
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        n.cfg.ID,
		ElectionTick:              n.cfg.ElectionTicks,
		HeartbeatTick:             1,
		Storage:                   n.storage,
		Applied:                   applied,
		MaxSizePerMsg:             1 << 20,
		MaxCommittedSizePerReady:  uint64(n.cfg.ReadyBytesMax),
		MaxUncommittedEntriesSize: uint64(4 * n.cfg.ReadyBytesMax),
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		StepDownOnRemoval:         true, // a leader removed from the group hands over at once
		PreVote:                   true,
		AsyncStorageWrites:        true, // appender.go
		Logger:                    raftLogger{n.log},
	})
	if err != nil {
		return fmt.Errorf("replication: start raft: %w", err)
	}
	n.rn = rn
	// Only a new group's own members bootstrap it: a node whose id the
	// configuration does not name (a new member, or one that rejoins under
	// a new id) joins, waiting for the leader to add it.
	if fresh && (n.cfg.Join || !slices.Contains(n.cfg.Peers, n.cfg.ID)) {
		n.log.Info("joining an existing group as a new member: waiting for its leader to add this node (a rejoin asks by itself; a new node needs POST /ha/membership/add)")
	} else if fresh {
		peers := make([]raft.Peer, len(n.cfg.Peers))
		for i, id := range n.cfg.Peers {
			peers[i] = raft.Peer{ID: id}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return fmt.Errorf("replication: bootstrap: %w", err)
		}
	}
	n.fresh = fresh
	n.replayed = len(r.entries)
	n.log.Info("raft restored", "applied", applied, "replayed_entries", len(r.entries), "commit", hs.Commit, "fresh", fresh)
	return nil
}

// Start runs the loop.
func (n *Node) Start() {
	n.started = true
	n.startAppender()
	go n.loop()
}

// Propose submits c with a request id assigned here and waits until it is
// applied or the deadline passes. c is encoded before Propose returns, so
// it may alias request buffers.
func (n *Node) Propose(c Command, deadline time.Time) (Outcome, error) {
	w, err := n.enqueue(c, deadline)
	if err != nil {
		return Outcome{}, err
	}
	// From here the loop may hold w (in the queue, in an entry being
	// built): w goes back to the pool only after the loop answered it.
	if !deadline.After(w.enqueued) {
		// timeout_ms=0: accepted, not waited for. Same answer as a timeout.
		n.waiters.take(w.id)
		return Outcome{}, ErrTimeout
	}
	<-w.done // the loop, the reaper (ErrTimeout) or a stop answers
	out, err := w.out, w.err
	out.Enqueued = w.enqueued
	if err != ErrTimeout {
		n.putWaiter(w)
	} // else the reaper answered while the loop may still hold w: leave it to the GC
	return out, err
}

// enqueue encodes c into a waiter, registers it and queues it for the
// loop, without waiting.
func (n *Node) enqueue(c Command, deadline time.Time) (*waiter, error) {
	if err := n.Fault(); err != nil {
		return nil, err
	}
	if n.closing.Load() {
		return nil, ErrStopped
	}
	w := n.getWaiter()
	w.id, w.enqueued = n.reqBase|(n.reqSeq.Add(1)&(1<<32-1)), time.Now()
	w.deadline = n.waiters.since(deadline)
	// Encoded first, measured after: one pass over the messages, not two.
	// The request body limits bound what an oversized command costs.
	w.data = c.AppendTo(w.data[:0], w.id)
	if len(w.data) > n.cfg.EntryBytesMax {
		n.putWaiter(w)
		return nil, ErrTooLarge
	}
	size := int64(len(w.data))
	if n.queuedBytes.Add(size) > n.cfg.QueueBytesMax {
		n.queuedBytes.Add(-size)
		n.putWaiter(w)
		return nil, ErrOverloaded
	}
	if err := n.waiters.add(w); err != nil {
		n.queuedBytes.Add(-size)
		n.putWaiter(w)
		return nil, err // the node stopped, or a fault stopped it
	}
	select {
	case n.queue <- w:
	default:
		n.queuedBytes.Add(-size)
		if _, ok := n.waiters.take(w.id); ok {
			n.putWaiter(w) // nobody else saw it
		} // else it was answered meanwhile: its done holds a token, leave it to the GC
		return nil, ErrOverloaded
	}
	return w, nil
}

// Recovery reports what opening the node found: the WAL's own recovery
// (a torn tail cut) and how many Raft entries after the state checkpoint
// it replays.
func (n *Node) Recovery() (wal logstore.RecoveryReport, replayedEntries int) {
	return n.wal.Recovery(), n.replayed
}

// Step hands a Raft message from a peer to the loop. It never blocks: a
// message that finds the queue full is dropped (Raft resends).
func (n *Node) Step(m raftpb.Message) {
	if m.To != n.cfg.ID {
		// For another identity of this node's name (one it had before it
		// lost its data and rejoined): raft does not check, and a
		// heartbeat meant for the old identity would claim a commit index
		// this log never had.
		return
	}
	select {
	case n.steps <- m:
	default:
	}
}

// Members returns the group's membership table, sorted by name: the
// configuration's at first, then as membership changes set it (empty for a
// single node).
func (n *Node) Members() []Member {
	if p := n.membersView.Load(); p != nil {
		return *p
	}
	return nil
}

// Member returns the member with Raft id id.
func (n *Node) Member(id uint64) (Member, bool) {
	for _, m := range n.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// reachableFunc wraps what the transport tells the node about its peers
// (atomic.Pointer needs a type).
type reachableFunc struct {
	f     func(id uint64) bool
	stats func() map[string]netio.PeerStats
}

// PeerStats returns the peer streams' counters by node name (nil without
// a transport).
func (n *Node) PeerStats() map[string]netio.PeerStats {
	if r := n.reachable.Load(); r != nil && r.stats != nil {
		return r.stats()
	}
	return nil
}

// Reachable reports whether member id's stream to this node is open (true
// when there is no transport to ask): a follower does not send clients to a
// leader whose process is gone while the election that replaces it runs.
func (n *Node) Reachable(id uint64) bool {
	if r := n.reachable.Load(); r != nil {
		return r.f(id)
	}
	return true
}

// HA reports whether the node runs in cluster mode (Config.Members or
// Join): the rules of a group apply however many members it has now (one
// that started alone may have grown, or shrunk to one).
func (n *Node) HA() bool { return len(n.cfg.Members) > 0 || n.cfg.Join || len(n.cfg.Peers) > 1 }

// ID returns this node's Raft id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Fault returns the storage fault that stopped the node, if any.
func (n *Node) Fault() error {
	if p := n.fault.Load(); p != nil {
		return *p
	}
	return nil
}

// Status returns the latest snapshot of the node. LastSyncedBatch is read
// live: it moves as soon as a WAL batch is durable, before the requests it
// carried are answered, so a client that got an answer and then reads
// /admin/sealed/status sees a batch id at least as new as its own.
func (n *Node) Status() Status {
	st := *n.status.Load()
	st.LastSyncedBatch = n.synced.Load()
	return st
}

// WaitServing waits until the node has caught up after its start (the
// state in which data routes answer), the deadline passes, the node stops
// or a storage fault stops it. It reports whether the node serves. Startup, the election of a
// single voter and the end of recovery take milliseconds; a request that
// arrives meanwhile waits for them instead of failing.
func (n *Node) WaitServing(deadline time.Time) bool {
	select {
	case <-n.servingC:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-n.servingC:
		return true
	case <-t.C:
	case <-n.done:
	case <-n.faultC:
	}
	select {
	case <-n.servingC:
		return true
	default:
		return false
	}
}

// Close stops taking proposals, finishes what is in flight, writes a
// checkpoint and closes the WAL. The Store stays open for the caller.
func (n *Node) Close() error {
	n.closing.Store(true)
	n.stopOnce.Do(func() { close(n.stop) })
	if n.started {
		<-n.done
	}
	n.waiters.close(ErrStopped) // the loop did, unless it never ran
	return n.wal.Close()
}

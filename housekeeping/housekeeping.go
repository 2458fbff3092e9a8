// Package housekeeping runs the leader's periodic work: the decisions that
// depend on time (retention trims, KV keys past their TTL, consumer group
// members whose sessions lapsed) are made on the leader, from its clock,
// and written into the ordered log as ordinary commands, so every replica
// applies the same decision at the same point (the state machine stays
// deterministic: apply never reads a clock). Work that changes no state,
// such as deleting segment files below a log start, runs on every node.
package housekeeping

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"keel/engine"
	"keel/replication"
)

// Config holds the sweep's settings.
type Config struct {
	// RetentionInterval is how often the leader checks every partition
	// against its retention policy (0 = RetentionIntervalDefault).
	RetentionInterval time.Duration
	// ProposeTimeout bounds each proposal (0 = 10 s).
	ProposeTimeout time.Duration
	// CompactionInterval is how often every node compacts its topics
	// with cleanup "compact" and its KV namespaces (0 =
	// CompactionIntervalDefault).
	CompactionInterval time.Duration
	// TombstoneRetention is how long compaction keeps a key's newest
	// record when it is a tombstone (0 = TombstoneRetentionDefault).
	TombstoneRetention time.Duration
	// SessionCheckInterval is how often the leader looks for consumer
	// group members whose sessions lapsed (0 =
	// SessionCheckIntervalDefault).
	SessionCheckInterval time.Duration
	Log                  *slog.Logger
}

// RetentionIntervalDefault is the retention sweep's default period. Reads
// filter expired records in between, so the period only bounds how long
// disk space waits to be given back.
const RetentionIntervalDefault = 5 * time.Second

// Compaction defaults.
const (
	CompactionIntervalDefault = 30 * time.Second
	TombstoneRetentionDefault = 24 * time.Hour
)

// Proposer is what the sweep proposes through (*replication.Node).
type Proposer interface {
	Propose(c replication.Command, deadline time.Time) (replication.Outcome, error)
	Status() replication.Status
}

// Sweeper runs the periodic work until Close.
type Sweeper struct {
	cfg   Config
	node  Proposer
	store *engine.Store
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	compactDone  chan struct{}
	compactMu    sync.Mutex // one compaction pass at a time
	sessionsDone chan struct{}
	sess         sessions

	mu    sync.Mutex
	stats Stats
}

// Stats counts what the sweeper did.
type Stats struct {
	Sweeps          uint64 // retention checks run as leader
	Trims           uint64 // trims applied (the log start moved)
	TrimmedOffsets  uint64 // offsets that stopped being readable by those trims
	TrimmedBytes    int64  // segment bytes those trims freed
	ExpiredKeys     uint64 // KV keys past their TTL removed
	ExpiredMembers  uint64 // consumer group members whose sessions lapsed, removed
	ProposeFailures uint64 // proposals that failed (not leader any more, timeout, fault)
}

// kvExpiriesPerSweep bounds the expired KV keys one sweep removes (the
// rest wait for the next): readers already treat them as absent.
const kvExpiriesPerSweep = 10_000

// Start runs a sweeper over store, proposing through node.
func Start(cfg Config, node Proposer, store *engine.Store) *Sweeper {
	if cfg.RetentionInterval <= 0 {
		cfg.RetentionInterval = RetentionIntervalDefault
	}
	if cfg.ProposeTimeout <= 0 {
		cfg.ProposeTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.CompactionInterval <= 0 {
		cfg.CompactionInterval = CompactionIntervalDefault
	}
	if cfg.TombstoneRetention <= 0 {
		cfg.TombstoneRetention = TombstoneRetentionDefault
	}
	if cfg.SessionCheckInterval <= 0 {
		cfg.SessionCheckInterval = SessionCheckIntervalDefault
	}
	s := &Sweeper{cfg: cfg, node: node, store: store, stop: make(chan struct{}), done: make(chan struct{}),
		compactDone: make(chan struct{}), sessionsDone: make(chan struct{})}
	// Compaction has a goroutine of its own, so a long pass never delays
	// retention.
	go s.every(s.cfg.RetentionInterval, s.Sweep, s.done)
	go s.every(s.cfg.CompactionInterval, s.Compact, s.compactDone)
	go s.every(s.cfg.SessionCheckInterval, s.ExpireSessions, s.sessionsDone)
	return s
}

// every calls fn every interval until Close, then closes done.
func (s *Sweeper) every(interval time.Duration, fn func(), done chan struct{}) {
	defer close(done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		fn()
	}
}

// Compact runs one compaction pass now (on every node: compaction changes
// no state, see engine.Store.Compact). A failure is logged; the log it
// met has a sticky fault and takes no more writes.
func (s *Sweeper) Compact() {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if err := s.store.Compact(time.Now().UnixMilli(), s.cfg.TombstoneRetention.Milliseconds(), s.stop); err != nil {
		s.cfg.Log.Error("compaction failed", "err", err)
	}
}

// Sweep runs one retention check now: on the leader it proposes a trim
// for every partition beyond its policy and the removal of KV keys past
// their TTL; on every node it hands segments
// left below a log start to the store's janitor.
func (s *Sweeper) Sweep() {
	s.store.ReclaimBelowStart()
	if st := s.node.Status(); st.Role != "leader" || !st.Serving {
		return
	}
	s.mu.Lock()
	s.stats.Sweeps++
	s.mu.Unlock()
	cmds := s.store.RetentionTrims(time.Now().UnixMilli())
	cmds = append(cmds, s.store.KVExpiries(time.Now().UnixMilli(), kvExpiriesPerSweep)...)
	for _, c := range cmds {
		select {
		case <-s.stop:
			return
		default:
		}
		out, err := s.node.Propose(c, time.Now().Add(s.cfg.ProposeTimeout))
		if err == nil {
			err = out.Err
		}
		s.mu.Lock()
		if err != nil {
			s.stats.ProposeFailures++
		} else if c.Kind == engine.CmdKVExpire {
			s.stats.ExpiredKeys += uint64(out.Count)
		} else if out.Deleted > 0 {
			s.stats.Trims++
			s.stats.TrimmedOffsets += out.Deleted
			s.stats.TrimmedBytes += out.FreedBytes
		}
		s.mu.Unlock()
		if err != nil {
			if !errors.Is(err, replication.ErrNotLeader) && !errors.Is(err, replication.ErrStopped) {
				s.cfg.Log.Warn("retention trim failed", "topic", c.Topic, "partition", c.Partition, "before", c.Offset, "err", err)
			}
			return // try again at the next sweep
		}
		if c.Kind == engine.CmdDeleteBefore {
			s.cfg.Log.Debug("retention trim", "topic", c.Topic, "partition", c.Partition, "before", c.Offset,
				"deleted", out.Deleted, "freed_bytes", out.FreedBytes)
		}
	}
}

// Stats returns what the sweeper did so far.
func (s *Sweeper) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close stops the sweeper and waits for a sweep in progress.
func (s *Sweeper) Close() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	<-s.compactDone
	<-s.sessionsDone
}

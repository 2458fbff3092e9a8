package replication

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"keel/engine"
	"keel/invariant"
)

// closeDrainMax bounds how long Close waits for in-flight writes.
const closeDrainMax = 10 * time.Second

// loop is the only goroutine that touches the RawNode, the WAL's append
// side and the Store's apply side. Each turn: take every waiting proposal
// into as few entries as fit, then handle Ready until there is none: persist
// (one write + one fdatasync), apply committed entries, answer proposers,
// Advance. Proposals that arrive during the fsync wait for the next turn,
// which is what makes one fsync serve many requests.
func (n *Node) loop() {
	defer close(n.done)
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	var rocketSync <-chan time.Time
	if n.cfg.Rocket {
		t := time.NewTicker(n.cfg.RocketSyncInterval)
		defer t.Stop()
		rocketSync = t.C
	}
	n.lastCkpt = time.Now()
	// Apply what is committed first (on a fresh node, the bootstrap
	// configuration: raft refuses to campaign with it pending), then
	// campaign at once: a single voter needs no election timeout, which
	// cost 100 ms to 2 s at startup.
	n.handleReadies()
	n.campaign()
	n.handleReadies()
	n.publishStatus() // serving now, not at the first tick
	if n.checkpointFirst {
		n.startCheckpoint(true)
	}
	for {
		select {
		case p := <-n.queueIfLeader():
			// Let the handlers that are runnable now (parsed, about to
			// queue their command) run before this group is cut: they join
			// this fsync instead of waiting a whole one for the next. When
			// nothing else is runnable, Gosched returns at once. Measured
			// (keel bench produce-64, alternating runs): closed loop +6%,
			// +6%, +15% req/s with less CPU per request; at 30,000/s server
			// p99 0.84/0.56 ms against 1.78/0.89 ms without it.
			runtime.Gosched()
			n.proposeBatch(p)
		case <-ticker.C:
			n.rn.Tick()
			n.campaign()
		case err := <-n.ckptDone:
			n.finishCheckpoint(err)
		case <-rocketSync:
			if err := n.wal.Sync(); err != nil {
				n.setFault(err)
			}
			n.setLastSynced(n.wal.LastBatch())
		case <-n.stop:
			n.drainAndStop()
			return
		}
		n.handleReadies()
		// Checkpoints are captured only here, after every Ready is handled,
		// so the HardState they save is the persisted one.
		if n.walSinceCkpt >= n.cfg.CheckpointBytes ||
			n.walSinceCkpt > 0 && time.Since(n.lastCkpt) >= n.cfg.CheckpointInterval {
			n.checkpoint()
		}
		n.publishStatus()
	}
}

// queueIfLeader returns the proposal queue while this node leads and has
// no fault; otherwise nil, so proposals wait (up to their deadline) for an
// election instead of being dropped.
func (n *Node) queueIfLeader() chan *waiter {
	if n.Fault() != nil || n.rn.BasicStatus().RaftState != raft.StateLeader {
		return nil
	}
	return n.queue
}

// campaign starts an election when this single voter has no leader, so a
// restart does not wait for an election timeout.
func (n *Node) campaign() {
	st := n.rn.BasicStatus()
	if st.Lead != raft.None || st.RaftState == raft.StateLeader || n.campaignedTerm == st.Term+1 {
		return
	}
	if len(n.confState.Voters) == 1 && n.confState.Voters[0] == nodeID {
		n.campaignedTerm = st.Term + 1
		_ = n.rn.Campaign()
	}
}

// proposeBatch packs first and every other waiting proposal into entries
// of at most EntryBytesMax command bytes, up to ReadyBytesMax per turn.
func (n *Node) proposeBatch(first *waiter) {
	now := time.Now()
	nowMs := now.UnixMilli()
	var entry []byte
	var members []*waiter
	total := 0
	flush := func() {
		if len(members) == 0 {
			return
		}
		if err := n.rn.Propose(entry); err != nil {
			for _, w := range members {
				n.fail(w, fmt.Errorf("%w: %v", ErrOverloaded, err))
			}
		} else {
			n.unpersisted = append(n.unpersisted, members...)
		}
		entry, members = nil, nil
	}
	add := func(w *waiter) {
		n.queuedBytes.Add(-int64(len(w.data)))
		if len(entry) > 0 && len(entry)+len(w.data) > n.cfg.EntryBytesMax {
			flush()
		}
		if entry == nil {
			// Sized for everything queued now, so appends rarely regrow it.
			size := min(int64(n.cfg.EntryBytesMax), n.queuedBytes.Load()+int64(len(w.data))+64)
			entry = engine.AppendEntryHeader(make([]byte, 0, size), nowMs, n.cfg.Limits)
		}
		entry = append(entry, w.data...) // w.data is not used after this
		w.proposed = now
		members = append(members, w)
		total += len(w.data)
	}
	add(first)
	for total < n.cfg.ReadyBytesMax {
		select {
		case p := <-n.queue:
			add(p)
			continue
		default:
		}
		break
	}
	flush()
}

func (n *Node) fail(w *waiter, err error) {
	if w2, ok := n.waiters.take(w.id); ok {
		w2.err = err
		w2.done <- struct{}{}
	}
}

func (n *Node) handleReadies() {
	for n.Fault() == nil && n.rn.HasReady() {
		if err := n.handleReady(); err != nil {
			n.setFault(err)
			return
		}
	}
}

// handleReady follows raft's contract: persist, (send), apply, Advance.
func (n *Node) handleReady() error {
	rd := n.rn.Ready()
	if !raft.IsEmptySnap(rd.Snapshot) {
		return errors.New("replication: received a snapshot; single-voter groups never do")
	}
	// A commit-only HardState is not written: the commit index is
	// re-learned after a restart, and an unsynced write between synced
	// batches would break the WAL's "only the last batch can be torn" rule.
	if raft.MustSync(rd.HardState, n.prevHS, len(rd.Entries)) {
		if err := n.persist(rd.HardState, rd.Entries); err != nil {
			return err
		}
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		n.prevHS = rd.HardState
		if err := n.storage.SetHardState(rd.HardState); err != nil {
			return err
		}
	}
	if err := n.storage.Append(rd.Entries); err != nil {
		return err
	}
	if len(rd.Entries) > 0 {
		now := time.Now()
		for _, w := range n.unpersisted {
			w.persisted = now
		}
		clear(n.unpersisted)
		n.unpersisted = n.unpersisted[:0]
	}
	// rd.Messages: a single voter sends nothing; the transport comes with
	// the HA issue.
	if err := n.apply(rd.CommittedEntries); err != nil {
		return err
	}
	n.rn.Advance(rd)
	return nil
}

// persist writes one Ready's HardState and entries as WAL batches, each
// made durable before the next is written.
func (n *Node) persist(hs raftpb.HardState, ents []raftpb.Entry) error {
	var recs []engine.Record
	var pending []walMark
	size := 0
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		t0 := time.Now()
		first, batch, err := n.wal.AppendBatch(recs, !n.cfg.Rocket)
		if err != nil {
			return fmt.Errorf("replication: persist: %w", err)
		}
		n.timings.recordFsync(time.Since(t0).Microseconds(), len(n.unpersisted))
		for i := range pending {
			pending[i].batch = batch
			pending[i].walOffset += first
		}
		n.addMarks(pending)
		if !n.cfg.Rocket {
			n.setLastSynced(batch)
		}
		n.walSinceCkpt += int64(size)
		recs, pending, size = recs[:0], pending[:0], 0
		return nil
	}
	n.marshalBuf = n.marshalBuf[:0]
	for i := range ents {
		// Marshalled into one reused buffer: recs point into it until the
		// batch is written, and appends never move what is already there
		// (a full buffer is replaced, not grown).
		sz := ents[i].Size()
		if cap(n.marshalBuf)-len(n.marshalBuf) < sz {
			n.marshalBuf = make([]byte, 0, max(sz, min(2*cap(n.marshalBuf), marshalBufKeepBytes)))
		}
		start := len(n.marshalBuf)
		n.marshalBuf = n.marshalBuf[:start+sz]
		b := n.marshalBuf[start : start+sz : start+sz]
		if _, err := ents[i].MarshalToSizedBuffer(b); err != nil {
			return err
		}
		if size+len(b) > n.walBatchBytes() && len(recs) > 0 {
			if err := flush(); err != nil {
				return err
			}
		}
		pending = append(pending, walMark{index: ents[i].Index, walOffset: uint64(len(recs))})
		recs = append(recs, engine.Record{Type: engine.RecordRaftEntry, Payload: b})
		size += len(b)
	}
	// The HardState goes last, in the same batch as the last entries: if a
	// Ready is split over several batches and a crash cuts it short, the
	// commit index never points past the entries that reached the disk.
	if !raft.IsEmptyHardState(hs) {
		b, err := hs.Marshal()
		if err != nil {
			return err
		}
		recs = append(recs, engine.Record{Type: engine.RecordRaftState, Payload: b})
		size += len(b)
	}
	err := flush()
	if cap(n.marshalBuf) > marshalBufKeepBytes {
		n.marshalBuf = nil // an occasional huge Ready does not stay resident
	}
	return err
}

// marshalBufKeepBytes is the largest entry-marshalling buffer the loop
// keeps between Readies.
const marshalBufKeepBytes = 8 << 20

// walBatchBytes keeps one WAL batch well under the WAL's BatchBytesMax
// (the segment size; frame headers included): 48 MiB, or half a smaller
// segment.
func (n *Node) walBatchBytes() int {
	return int(min(48<<20, n.cfg.WALSegmentBytes/2))
}

// addMarks records where entries went; a rewritten index drops the old
// suffix first.
func (n *Node) addMarks(ms []walMark) {
	if len(ms) == 0 {
		return
	}
	for len(n.marks) > 0 && n.marks[len(n.marks)-1].index >= ms[0].index {
		n.marks = n.marks[:len(n.marks)-1]
	}
	n.marks = append(n.marks, ms...)
	if invariant.Enabled {
		for i := 1; i < len(n.marks); i++ {
			a, b := n.marks[i-1], n.marks[i]
			invariant.Check(b.index > a.index && b.walOffset > a.walOffset && b.batch >= a.batch,
				"WAL marks go back: entry %d at record %d (batch %d) after entry %d at record %d (batch %d)",
				b.index, b.walOffset, b.batch, a.index, a.walOffset, a.batch)
		}
	}
}

// batchOf returns the WAL batch that persisted entry index.
func (n *Node) batchOf(index uint64) uint64 {
	lo, hi := 0, len(n.marks)
	for lo < hi {
		mid := (lo + hi) / 2
		if n.marks[mid].index < index {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(n.marks) && n.marks[lo].index == index {
		return n.marks[lo].batch
	}
	return 0
}

func (n *Node) apply(ents []raftpb.Entry) error {
	for i := range ents {
		e := &ents[i]
		switch e.Type {
		case raftpb.EntryNormal:
			var err error
			n.results, err = n.store.ApplyEntry(e.Index, e.Term, e.Data, n.results[:0])
			if err != nil {
				return err
			}
			n.answer(e.Index)
		case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
			cc, err := decodeConfChange(e)
			if err != nil {
				return err
			}
			n.confState = *n.rn.ApplyConfChange(cc)
			if _, err := n.store.ApplyEntry(e.Index, e.Term, nil, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeConfChange reads a conf change entry of either version.
func decodeConfChange(e *raftpb.Entry) (raftpb.ConfChangeI, error) {
	if e.Type == raftpb.EntryConfChangeV2 {
		var cc raftpb.ConfChangeV2
		if err := cc.Unmarshal(e.Data); err != nil {
			return nil, fmt.Errorf("replication: conf change at %d: %w", e.Index, err)
		}
		return cc, nil
	}
	var cc raftpb.ConfChange
	if err := cc.Unmarshal(e.Data); err != nil {
		return nil, fmt.Errorf("replication: conf change at %d: %w", e.Index, err)
	}
	return cc, nil
}

// answer completes the proposers of the commands just applied.
func (n *Node) answer(index uint64) {
	now := time.Now()
	batch := n.batchOf(index)
	for _, r := range n.results {
		w, ok := n.waiters.take(r.ReqID)
		if !ok {
			continue // replayed after a restart, or its proposer timed out
		}
		w.out = Outcome{Result: r, Batch: batch, Durable: !n.cfg.Rocket}
		if n.cfg.Rocket {
			w.out.Batch = 0
		}
		if !w.proposed.IsZero() {
			w.out.QueueUs = w.proposed.Sub(w.enqueued).Microseconds()
			if !w.persisted.IsZero() {
				w.out.SyncWaitUs = w.persisted.Sub(w.proposed).Microseconds()
				w.out.ApplyUs = now.Sub(w.persisted).Microseconds()
			}
		}
		w.done <- struct{}{}
	}
}

// checkpoint starts a state checkpoint unless one is running: the state is
// captured now, on the loop, and a background goroutine fsyncs the
// partitions, writes the checkpoint file and then drops what it makes
// unnecessary (raft's in-memory entries up to the applied index, WAL
// segments before the first unapplied entry), while the loop goes on
// taking and applying writes.
func (n *Node) checkpoint() { n.startCheckpoint(false) }

// startCheckpoint captures and writes a checkpoint; with wait it first
// waits for a running one and then writes this one on the loop.
func (n *Node) startCheckpoint(wait bool) {
	if n.ckptRunning {
		if !wait {
			return
		}
		n.finishCheckpoint(<-n.ckptDone)
	}
	if n.Fault() != nil {
		// After a fault the state may hold half an entry (apply stopped
		// part-way): never checkpoint it.
		return
	}
	start := time.Now()
	applied, _ := n.store.Applied()
	replayFrom := n.wal.NextOffset()
	keep := len(n.marks)
	for i, m := range n.marks {
		if m.index > applied {
			replayFrom, keep = m.walOffset, i
			break
		}
	}
	st := replicationState{replayFrom: replayFrom, hardState: n.rn.BasicStatus().HardState, confState: n.confState}
	capture := n.store.Capture(st.encode())
	n.marks = append(n.marks[:0], n.marks[keep:]...)
	n.walSinceCkpt = 0
	n.lastCkpt = time.Now()
	n.ckptRunning = true
	write := func() error {
		if err := capture.Write(); err != nil {
			return fmt.Errorf("replication: checkpoint: %w", err)
		}
		if err := n.storage.Compact(applied); err != nil && !errors.Is(err, raft.ErrCompacted) {
			return fmt.Errorf("replication: compact raft log: %w", err)
		}
		// keel_checkpoint_us is capture to checkpoint durable; freeing the
		// WAL segments it made unnecessary is slow on purpose (see
		// engine's removeGently) and not counted.
		n.timings.recordCheckpoint(time.Since(start).Microseconds())
		if err := n.wal.DropSegmentsBefore(replayFrom); err != nil {
			return fmt.Errorf("replication: truncate WAL: %w", err)
		}
		n.log.Debug("checkpoint", "applied", applied, "wal_replay_from", replayFrom)
		return nil
	}
	if wait {
		n.finishCheckpoint(write())
		return
	}
	go func() { n.ckptDone <- write() }()
}

// finishCheckpoint takes the result of a checkpoint, on the loop.
func (n *Node) finishCheckpoint(err error) {
	n.ckptRunning = false
	if err != nil {
		n.setFault(err)
		return
	}
	n.checkpoints++
}

// drainAndStop proposes what is queued, runs until it is applied (bounded
// by closeDrainMax), checkpoints and returns.
func (n *Node) drainAndStop() {
	deadline := time.Now().Add(closeDrainMax)
	for time.Now().Before(deadline) && n.Fault() == nil {
		select {
		case p := <-n.queueIfLeader():
			n.proposeBatch(p)
		default:
		}
		n.handleReadies()
		if len(n.queue) == 0 && n.waiters.len() == 0 {
			break
		}
		if !n.rn.HasReady() {
			time.Sleep(time.Millisecond)
			n.rn.Tick()
		}
	}
	switch {
	case n.Fault() == nil && !n.skipFinalCheckpoint:
		n.startCheckpoint(true)
	case n.ckptRunning:
		n.finishCheckpoint(<-n.ckptDone) // the store closes after us: let it finish
	}
	n.waiters.close(ErrStopped)
	n.publishStatus()
}

func (n *Node) setFault(err error) {
	if n.fault.CompareAndSwap(nil, &err) {
		n.log.Error("storage fault: this node stops taking writes; restart it once the disk is fixed", "err", err)
		// Closed, not just failed: the loop no longer takes proposals, so
		// a Propose racing the fault must get the fault, not wait for its
		// deadline and then a "may still become durable" timeout.
		n.waiters.close(err)
	}
	n.publishStatus()
}

func (n *Node) publishStatus() {
	bs := n.rn.BasicStatus()
	applied, _ := n.store.Applied()
	st := &Status{
		Term: bs.Term, Lead: bs.Lead, Commit: bs.Commit, Applied: applied,
		Role:            roleName(bs.RaftState),
		LastSyncedBatch: n.lastSynced,
		Checkpoints:     n.checkpoints,
		WALStart:        n.wal.StartOffset(),
		WALNext:         n.wal.NextOffset(),

		WALWriteBehindFailures: n.wal.WriteBehindFailures(),
	}
	caughtUp := bs.RaftState == raft.StateLeader && applied >= n.startupCommit
	if caughtUp && !n.serving {
		n.serving = true
		close(n.servingC)
	}
	st.Ready = n.Fault() == nil && caughtUp
	st.Serving = n.serving
	n.status.Store(st)
}

// setLastSynced records the last durable WAL batch, visible at once to
// Status (before the requests of that batch are answered).
func (n *Node) setLastSynced(batch uint64) {
	invariant.Check(batch >= n.lastSynced, "the last synced WAL batch goes back from %d to %d", n.lastSynced, batch)
	n.lastSynced = batch
	n.synced.Store(batch)
}

func roleName(s raft.StateType) string {
	switch s {
	case raft.StateLeader:
		return "leader"
	case raft.StateFollower:
		return "follower"
	case raft.StateCandidate:
		return "candidate"
	case raft.StatePreCandidate:
		return "pre-candidate"
	}
	return "unknown"
}

package replication

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
)

// checkpoint starts a state checkpoint unless one is running: the state is
// captured now, on the loop, and a background goroutine fsyncs the
// partitions, writes the checkpoint file and then drops what it makes
// unnecessary (raft's in-memory entries up to the applied index, WAL
// segments before the first unapplied entry), while the loop goes on
// taking and applying writes.
func (n *Node) takeStateCheckpoint() { n.startStateCheckpoint(false) }

// startStateCheckpoint captures and writes a checkpoint; with wait it first
// waits for a running one and then writes this one on the loop.
func (n *Node) startStateCheckpoint(wait bool) {
	if n.ckptRunning {
		if !wait {
			return
		}
		n.finishStateCheckpoint(<-n.ckptDone)
	}
	if n.Fault() != nil {
		// After a fault the state may hold half an entry (apply stopped
		// part-way): never checkpoint it.
		return
	}
	start := time.Now()
	applied, _ := n.store.Applied()
	// Appends may be in flight on the appender: they go after walConfirmed,
	// and the HardState saved is the one written (raft's may be newer and
	// not on disk yet; a newer one written later is replayed after it).
	replayFrom := n.walConfirmed
	keep := len(n.marks)
	for i, m := range n.marks {
		if m.index > applied {
			replayFrom, keep = m.walOffset, i
			break
		}
	}
	compactTo := n.compactionIndex(applied)
	hs := n.prevHS
	hs.Commit = max(hs.Commit, applied)
	st := replicationState{replayFrom: replayFrom, hardState: hs, confState: n.confState,
		members: n.membersList(), confIndex: n.confIndex}
	capture := n.store.Capture(st.encode())
	n.marks = append(n.marks[:0], n.marks[keep:]...)
	n.walSinceCkpt = 0
	n.lastCkpt = n.now()
	n.ckptRunning = true
	write := func() error {
		if err := capture.Write(); err != nil {
			return fmt.Errorf("replication: checkpoint: %w", err)
		}
		// The checkpoint is now the snapshot raft offers a follower that
		// needs entries before the compacted log (its data is fetched from
		// the files: snapshot.go).
		cs := st.confState
		if _, err := n.storage.CreateSnapshot(applied, &cs, nil); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
			return fmt.Errorf("replication: snapshot at %d: %w", applied, err)
		}
		if err := n.storage.Compact(compactTo); compactTo > 0 && err != nil && !errors.Is(err, raft.ErrCompacted) {
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
		n.finishStateCheckpoint(write())
		return
	}
	go func() { n.ckptDone <- write() }()
}

// finishStateCheckpoint takes the result of a checkpoint, on the loop.
func (n *Node) finishStateCheckpoint(err error) {
	n.ckptRunning = false
	if err != nil {
		n.setFault(err)
		return
	}
	n.checkpoints++
}

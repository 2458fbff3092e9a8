package replication

import (
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"keel/engine/logstore"
	"keel/invariant"
)

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
		// Before the entries of the same Ready, which follow it.
		if err := n.installSnapshot(rd.Snapshot, rd.HardState); err != nil {
			return err
		}
	}
	// The leader sends its appends before its own write: followers write
	// in parallel with it (the Raft thesis, section 10.2.1; etcd's server
	// does the same). Safe because nothing is applied, and so no client
	// answered, before this node's own write below is durable too: a
	// committed entry is then on a majority's disks. Every other role
	// sends only after the write (a vote or an append acknowledged before
	// its fsync could be lost by a crash).
	leading := n.rn.BasicStatus().RaftState == raft.StateLeader
	if leading && len(rd.Messages) > 0 && n.cfg.Send != nil {
		n.cfg.Send(rd.Messages)
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
	n.trackLogSizes(rd.Entries)
	if len(rd.Entries) > 0 {
		now := time.Now()
		for _, w := range n.unpersisted {
			w.persisted = now
		}
		clear(n.unpersisted)
		n.unpersisted = n.unpersisted[:0]
	}
	// A follower's messages go out only now, after the HardState and
	// entries they vouch for are durable (raft's Ready contract).
	if !leading && len(rd.Messages) > 0 && n.cfg.Send != nil {
		n.cfg.Send(rd.Messages)
	}
	var snapsSent []uint64
	for i := range rd.Messages {
		if rd.Messages[i].Type == raftpb.MsgSnap {
			snapsSent = append(snapsSent, rd.Messages[i].To)
		}
	}
	if err := n.apply(rd.CommittedEntries); err != nil {
		return err
	}
	n.readStates(rd.ReadStates)
	n.rn.Advance(rd)
	// The MsgSnap only tells the follower to fetch the snapshot; raft may
	// go back to probing it at once. Until it has installed the snapshot it
	// rejects appends, and raft offers the snapshot again; the follower
	// ignores offers while a fetch runs.
	for _, to := range snapsSent {
		n.rn.ReportSnapshot(to, raft.SnapshotFinish)
	}
	return nil
}

// persist writes one Ready's HardState and entries as WAL batches, each
// made durable before the next is written.
func (n *Node) persist(hs raftpb.HardState, ents []raftpb.Entry) error {
	var recs []logstore.Record
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
		recs = append(recs, logstore.Record{Type: logstore.RecordRaftEntry, Payload: b})
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
		recs = append(recs, logstore.Record{Type: logstore.RecordRaftState, Payload: b})
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

// trackLogSizes records the size of each entry appended to raft's log (a
// rewritten suffix replaces what it overwrote), for the compaction of a
// group's log (retainFrom).
func (n *Node) trackLogSizes(ents []raftpb.Entry) {
	if len(ents) == 0 {
		return
	}
	for len(n.logSizes) > 0 && n.logSizes[len(n.logSizes)-1].index >= ents[0].Index {
		n.logSizes = n.logSizes[:len(n.logSizes)-1]
	}
	for i := range ents {
		n.logSizes = append(n.logSizes, entrySize{index: ents[i].Index, bytes: ents[i].Size()})
	}
}

// compactionIndex returns the index up to which raft's log may be dropped
// once a checkpoint covers applied: all of it on a single node; in a group,
// the newest RaftLogRetainBytes stay, so a follower that fell that far
// behind catches up from the log. Trims the sizes it drops.
func (n *Node) compactionIndex(applied uint64) uint64 {
	to := applied
	if n.HA() {
		kept := int64(0)
		i := len(n.logSizes)
		for i > 0 && kept+int64(n.logSizes[i-1].bytes) <= n.cfg.RaftLogRetainBytes {
			kept += int64(n.logSizes[i-1].bytes)
			i--
		}
		switch {
		case i == 0:
			to = 0 // everything fits: drop nothing
		default:
			to = min(applied, n.logSizes[i-1].index)
		}
	}
	k := 0
	for k < len(n.logSizes) && n.logSizes[k].index <= to {
		k++
	}
	n.logSizes = append(n.logSizes[:0], n.logSizes[k:]...)
	return to
}

package replication

import (
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

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

// handleReady takes one Ready (raft accepts it at once: asynchronous
// storage writes, appender.go): messages to peers go out now (a leader's
// appends, before its own write: the Raft thesis, section 10.2.1; raft
// holds back whatever vouches for unwritten state, a follower's
// acknowledgement or a vote, as responses of the append), the append goes
// to the appender, committed entries are applied here.
func (n *Node) handleReady() error {
	rd := n.rn.Ready()
	// The Ready's messages are ours once taken: the peers' are filtered in
	// place (raft puts the two local ones last), the local ones copied out.
	var appendMsg, applyMsg *raftpb.Message
	peers := rd.Messages[:0]
	for _, m := range rd.Messages {
		switch m.To {
		case raft.LocalAppendThread:
			appendMsg = &m
		case raft.LocalApplyThread:
			applyMsg = &m
		default:
			peers = append(peers, m)
		}
	}
	if len(peers) > 0 && n.cfg.Send != nil {
		n.cfg.Send(peers)
	}
	for i := range peers {
		// The MsgSnap only tells the follower to fetch the snapshot; raft
		// may go back to probing it at once. Until it has installed the
		// snapshot it rejects appends, and raft offers the snapshot again;
		// the follower ignores offers while a fetch runs.
		if peers[i].Type == raftpb.MsgSnap {
			n.rn.ReportSnapshot(peers[i].To, raft.SnapshotFinish)
		}
	}
	if appendMsg != nil {
		if appendMsg.Snapshot != nil {
			if err := n.appendSnapshot(*appendMsg); err != nil {
				return err
			}
		} else {
			n.submitAppend(*appendMsg)
		}
	}
	if applyMsg != nil && n.Fault() == nil {
		if err := n.apply(applyMsg.Entries); err != nil {
			return err
		}
		n.deliverResponses(applyMsg.Responses)
	}
	n.readStates(rd.ReadStates)
	return nil
}

// appendSnapshot installs the snapshot an append carries, on the loop,
// once every earlier append is written, then writes the append's entries
// and HardState and delivers its responses.
func (n *Node) appendSnapshot(m raftpb.Message) error {
	n.drainAppends()
	if err := n.Fault(); err != nil {
		return err
	}
	if err := n.installSnapshot(*m.Snapshot, hardStateOf(&m)); err != nil {
		return err
	}
	n.walConfirmed = n.wal.NextOffset()
	n.lastLogIndex, n.lastStableIndex = m.Snapshot.Metadata.Index, m.Snapshot.Metadata.Index
	m.Snapshot = nil
	n.appendNow(n.newAppendJob(m))
	return nil
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

package replication

import (
	"encoding/binary"
	"errors"
	"time"

	"go.etcd.io/raft/v3"
)

// Linearizable reads (the Raft paper's section 8, "ReadIndex" in etcd
// raft): before a leader serves a read from its own state, it learns the
// commit index as of now and confirms with a quorum's heartbeat answers
// that it still leads; it serves the read once it has applied that index.
// A leader cut off from the majority never gets those answers, so it never
// serves a stale read; it steps down at its election timeout
// (CheckQuorum), and the waiting reads are told to go to the new leader.
//
// Reads that arrive while a confirmation is under way wait for the next
// one, so one heartbeat round serves every read of a loop turn, as group
// commit does for writes.

// ErrNoQuorum: the leader could not confirm with a majority that it still
// leads before the read's deadline.
var ErrNoQuorum = errors.New("replication: leadership not confirmed by a majority")

// readIndexMax bounds the reads waiting for the loop.
const readIndexMax = 16384

// readReq is one read waiting to be confirmed.
type readReq struct {
	done  chan error // capacity 1: the loop answers once
	index uint64     // the commit index to apply before answering
}

// readBatch is the reads of one ReadIndex request, identified by id (its
// raft request context).
type readBatch struct {
	id    uint64
	reqs  []*readReq
	index uint64 // set when raft answers with the read state
}

// LinearizableRead returns once a read issued now may be served from this
// node's applied state without missing any write acknowledged before it:
// at once on a single node (writes are answered after they are applied);
// in a group, after the leader confirmed its leadership with a quorum and
// applied up to the commit index it had when the read arrived. It fails
// with ErrNotLeader when this node does not lead (or stops leading), with
// ErrNoQuorum at the deadline, or with the node's fault.
func (n *Node) LinearizableRead(deadline time.Time) error {
	if !n.HA() {
		return n.Fault()
	}
	if err := n.Fault(); err != nil {
		return err
	}
	if st := n.Status(); st.Role != "leader" {
		return ErrNotLeader
	}
	r := &readReq{done: make(chan error, 1)}
	select {
	case n.reads <- r:
	default:
		return ErrOverloaded
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err := <-r.done:
		return err
	case <-t.C:
		return ErrNoQuorum
	case <-n.done:
		return ErrStopped
	}
}

// startReads asks raft to confirm leadership for first and every read
// waiting in the queue, as one batch. On a follower they fail at once.
func (n *Node) startReads(first *readReq) {
	reqs := []*readReq{first}
	for {
		select {
		case r := <-n.reads:
			reqs = append(reqs, r)
			continue
		default:
		}
		break
	}
	if n.rn.BasicStatus().RaftState != raft.StateLeader || n.Fault() != nil {
		for _, r := range reqs {
			r.done <- ErrNotLeader
		}
		return
	}
	n.readSeq++
	var ctx [8]byte
	binary.LittleEndian.PutUint64(ctx[:], n.readSeq)
	n.readBatches = append(n.readBatches, &readBatch{id: n.readSeq, reqs: reqs})
	n.rn.ReadIndex(ctx[:])
}

// readStates records the commit indexes raft confirmed for read batches.
func (n *Node) readStates(states []raft.ReadState) {
	for _, rs := range states {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		id := binary.LittleEndian.Uint64(rs.RequestCtx)
		for _, b := range n.readBatches {
			if b.id == id {
				b.index = max(rs.Index, 1)
			}
		}
	}
}

// answerReads answers the confirmed batches whose index is applied, and
// fails every waiting batch once this node no longer leads.
func (n *Node) answerReads() {
	if len(n.readBatches) == 0 {
		return
	}
	leading := n.rn.BasicStatus().RaftState == raft.StateLeader
	applied, _ := n.store.Applied()
	keep := n.readBatches[:0]
	for _, b := range n.readBatches {
		var err error
		switch {
		case !leading:
			err = ErrNotLeader
		case b.index != 0 && b.index <= applied:
		default:
			keep = append(keep, b)
			continue
		}
		for _, r := range b.reqs {
			r.done <- err
		}
	}
	clear(n.readBatches[len(keep):])
	n.readBatches = keep
}

// failReads answers every waiting read with err (the node stops).
func (n *Node) failReads(err error) {
	for _, b := range n.readBatches {
		for _, r := range b.reqs {
			r.done <- err
		}
	}
	n.readBatches = nil
	for {
		select {
		case r := <-n.reads:
			r.done <- err
		default:
			return
		}
	}
}

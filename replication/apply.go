package replication

import (
	"fmt"
	"time"

	"keel/engine"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// apply hands committed entries to the state machine in order and
// answers the proposers of each; a configuration change moves raft's
// configuration and the applied index. An error is a storage fault.
func (n *Node) apply(ents []raftpb.Entry) error {
	for i := range ents {
		e := &ents[i]
		switch e.Type {
		case raftpb.EntryNormal:
			n.confDropped(e.Index, false)
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
			n.applyMembership(e.Index, cc)
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
	if n.holdsAnswers() && n.rn.BasicStatus().RaftState == raft.StateLeader {
		n.hold(index)
		return
	}
	n.deliver(n.results, n.batchOf(index))
}

// deliver answers the proposers of results (of an entry persisted in WAL
// batch batch).
func (n *Node) deliver(results []engine.Result, batch uint64) {
	now := time.Now()
	for _, r := range results {
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

package replication

import (
	"go.etcd.io/raft/v3"

	"keel/invariant"
)

// publishStatus makes the loop's view of the node visible to other
// goroutines (Status), and marks the node serving the first time it leads
// with everything it had committed at open applied.
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
	first := caughtUp && !n.serving && n.Fault() == nil // a faulted node never starts serving
	if first {
		n.serving = true
	}
	st.Ready = n.Fault() == nil && caughtUp
	st.Serving = n.serving
	n.status.Store(st)
	if first {
		// After the store: whoever WaitServing wakes reads this status.
		close(n.servingC)
	}
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

package replication

import (
	"cmp"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"

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

		Voters:      n.confState.Voters,
		Learners:    n.confState.Learners,
		ConfIndex:   n.confIndex,
		JointActive: len(n.confState.VotersOutgoing) > 0,
		FreshQuorum: n.freshQuorum && bs.RaftState == raft.StateLeader,
		Followers:   n.followers,
	}
	// Caught up: a single voter once it leads with what it had committed
	// applied; a member of a group once it knows a leader (or leads) and
	// has applied everything committed that it knows of and has written
	// (with writes in flight, raft's commit index runs ahead of the
	// entries on this node's disk, which it cannot apply yet: a healthy
	// node under load is not behind).
	caughtUp := bs.RaftState == raft.StateLeader && applied >= n.startupCommit
	if n.HA() {
		caughtUp = bs.Lead != raft.None && applied >= max(n.startupCommit, min(bs.Commit, n.lastStableIndex))
	}
	first := caughtUp && !n.serving && n.Fault() == nil // a faulted node never starts serving
	if first {
		n.serving = true
	}
	st.Ready = n.Fault() == nil && caughtUp
	if n.HA() && len(n.confState.Voters) > 0 && !slices.Contains(n.confState.Voters, n.cfg.ID) && !slices.Contains(n.confState.Learners, n.cfg.ID) {
		// Removed (or not added yet): it serves nobody.
		st.Role, st.Ready = "removed", false
	}
	if n.Fault() != nil {
		// A faulted node takes no part any more (its loop no longer
		// ticks): it must not go on reporting itself as the leader.
		st.Role = "stopped"
	}
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

// refreshProgress records, on the leader, each follower's match index and
// whether a quorum of voters was recently active (raft's CheckQuorum
// view), for /metrics_ha and membership answers. It copies raft's whole
// progress map, so it runs once per tick, not per turn.
func (n *Node) refreshProgress() {
	if !n.HA() {
		n.freshQuorum = n.rn.BasicStatus().RaftState == raft.StateLeader
		return
	}
	st := n.rn.Status()
	if st.RaftState != raft.StateLeader {
		n.freshQuorum, n.followers = false, nil
		return
	}
	followers := make([]FollowerProgress, 0, len(st.Progress))
	active := 0
	for id, pr := range st.Progress {
		if pr.RecentActive || id == n.cfg.ID {
			active++
		}
		if id != n.cfg.ID {
			followers = append(followers, FollowerProgress{ID: id, Match: pr.Match})
		}
	}
	slices.SortFunc(followers, func(a, b FollowerProgress) int { return cmp.Compare(a.ID, b.ID) })
	n.followers = followers
	n.freshQuorum = active >= len(n.confState.Voters)/2+1
	n.maybeTransferLeadership(st)
	n.replaceRejoined(st)
}

// transferAfterTicks is how long a voter of higher priority must have been
// replicating and caught up before the leader hands it leadership: a node that just came
// back is not made leader while it may still fall behind again.
const transferAfterTicks = 20

// maybeTransferLeadership hands leadership to the voter of highest
// priority (Member.Priority) once it has been caught up (its log matches
// the commit index, and it was heard from recently) for transferAfterTicks
// ticks in a row. Priority is a preference, not a rule (design.md): the
// transfer is raft's cooperative TransferLeader, so a healthy term is
// never disrupted by an election, and with equal priorities nothing moves.
func (n *Node) maybeTransferLeadership(st raft.Status) {
	if st.LeadTransferee != raft.None || n.Fault() != nil {
		return
	}
	self, ok := n.Member(n.cfg.ID)
	if !ok {
		return
	}
	best := self
	for id, pr := range st.Progress {
		// Replicating (not probing or being sent a snapshot) and caught
		// up. RecentActive is not asked for: CheckQuorum clears it at every
		// election timeout, before the answers to that tick's heartbeat.
		if id == n.cfg.ID || pr.IsLearner || pr.State != tracker.StateReplicate || pr.Match < st.Commit {
			continue
		}
		if m, ok := n.Member(id); ok && m.Priority > best.Priority {
			best = m
		}
	}
	if best.ID == n.cfg.ID {
		n.transferTo, n.transferTicks = 0, 0
		return
	}
	if n.transferTo != best.ID {
		n.transferTo, n.transferTicks = best.ID, 0
	}
	if n.transferTicks++; n.transferTicks >= transferAfterTicks {
		n.log.Info("handing leadership to the caught-up node of higher priority", "to", best.Name, "priority", best.Priority, "own_priority", self.Priority)
		n.rn.TransferLeader(best.ID)
		n.transferTo, n.transferTicks = 0, 0
	}
}

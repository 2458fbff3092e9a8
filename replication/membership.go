package replication

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Membership changes (api.md, "Cluster (HA)"; the Raft paper's section 6,
// and etcd raft's ConfChangeV2): a node joins as a learner (it receives the
// log, or a snapshot, but does not vote), is promoted to voter once it has
// caught up, and can be removed. Each change is an entry of the log,
// carrying in its context the member's name and addresses, so every node
// keeps the same membership table (names, raft and HTTP addresses,
// priorities), and it survives restarts in the state checkpoint. One
// change at a time: raft refuses a second before the first is applied.

// Errors of membership changes.
var (
	ErrChangeInProgress = errors.New("replication: a membership change is in progress")
	ErrUnknownMember    = errors.New("replication: no such member")
	ErrMemberExists     = errors.New("replication: the member exists")
	ErrNotLearner       = errors.New("replication: the member is not a learner")
	ErrLastVoter        = errors.New("replication: the last voter cannot be removed")
	ErrLearnerBehind    = errors.New("replication: the learner has not caught up yet")
	ErrConcernTooHigh   = errors.New("replication: removing this voter leaves fewer voters than the write concern")
	ErrClusterFull      = fmt.Errorf("replication: a cluster has at most %d members", MembersMax)
)

// promoteLagMax is how far (entries) a learner may be behind the commit
// index and still be promoted: a voter far behind would hold up commits,
// and in a small group stall it (etcd's ErrLearnerNotReady).
const promoteLagMax = 1000

// confContext is what a configuration change carries: the request it
// answers and the member it adds.
type confContext struct {
	ReqID  uint64  `json:"req"`
	Member *Member `json:"member,omitempty"`
}

// confReq is a membership change waiting for the loop.
type confReq struct {
	kind     confKind
	member   Member // confAdd: the new member; else only Name
	id       uint64 // request id
	done     chan confResult
	deadline time.Time // after it nobody waits: the loop forgets the change
	index    uint64    // the index its entry was proposed at
}

type confKind uint8

const (
	confAdd confKind = iota + 1
	confPromote
	confRemove
	confRejoin // a learner with the name of a member that lost its data (RequestRejoin)
)

type confResult struct {
	index uint64
	err   error
}

// AddLearner adds m as a learner and returns the index of the change once
// it is applied. m.ID is set from m.Name.
func (n *Node) AddLearner(m Member, deadline time.Time) (uint64, error) {
	m.ID = RaftID(m.Name)
	return n.changeMembership(confReq{kind: confAdd, member: m}, deadline)
}

// Promote makes the learner named name a voter.
func (n *Node) Promote(name string, deadline time.Time) (uint64, error) {
	return n.changeMembership(confReq{kind: confPromote, member: Member{Name: name}}, deadline)
}

// RemoveMember removes the member named name.
func (n *Node) RemoveMember(name string, deadline time.Time) (uint64, error) {
	return n.changeMembership(confReq{kind: confRemove, member: Member{Name: name}}, deadline)
}

func (n *Node) changeMembership(req confReq, deadline time.Time) (uint64, error) {
	if err := n.Fault(); err != nil {
		return 0, err
	}
	req.id = n.reqBase | (n.reqSeq.Add(1) & (1<<32 - 1))
	req.done = make(chan confResult, 1)
	req.deadline = deadline
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case n.confs <- &req:
	case <-t.C:
		return 0, ErrTimeout
	case <-n.done:
		return 0, ErrStopped
	}
	select {
	case r := <-req.done:
		return r.index, r.err
	case <-t.C:
		return 0, ErrTimeout
	case <-n.done:
		return 0, ErrStopped
	}
}

// MembersMax is the most members (voters and learners) AddLearner lets a
// cluster have: Keel's clusters are of 1 to 7 nodes. A member that rejoins
// under a new id (it lost its data) is added beside its old identity for
// the time of its catch-up, so a cluster of 7 can hold 8 then.
const MembersMax = 7

// proposeConf proposes a membership change, on the loop.
func (n *Node) proposeConf(req *confReq) {
	fail := func(err error) { req.done <- confResult{err: err} }
	switch {
	case n.Fault() != nil:
		fail(n.Fault())
		return
	case n.rn.BasicStatus().RaftState != raft.StateLeader:
		fail(ErrNotLeader)
		return
	case n.confWaiting != nil || len(n.confState.VotersOutgoing) > 0:
		fail(ErrChangeInProgress)
		return
	}
	var cc raftpb.ConfChangeV2
	ctx := confContext{ReqID: req.id}
	existing, known := n.memberByName(req.member.Name)
	switch req.kind {
	case confRejoin:
		if slices.Contains(n.confState.Voters, req.member.ID) || slices.Contains(n.confState.Learners, req.member.ID) {
			fail(ErrMemberExists)
			return
		}
		m := req.member
		ctx.Member = &m
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddLearnerNode, NodeID: m.ID}}
	case confAdd:
		if len(n.confState.Voters)+len(n.confState.Learners) >= MembersMax {
			fail(ErrClusterFull)
			return
		}
		if known || slices.Contains(n.confState.Voters, req.member.ID) || slices.Contains(n.confState.Learners, req.member.ID) {
			fail(ErrMemberExists)
			return
		}
		m := req.member
		ctx.Member = &m
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddLearnerNode, NodeID: m.ID}}
	case confPromote:
		if !known {
			fail(ErrUnknownMember)
			return
		}
		if !slices.Contains(n.confState.Learners, existing.ID) {
			fail(ErrNotLearner)
			return
		}
		st := n.rn.Status()
		if pr, ok := st.Progress[existing.ID]; !ok || pr.State != tracker.StateReplicate || pr.Match+promoteLagMax < st.Commit {
			fail(ErrLearnerBehind)
			return
		}
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddNode, NodeID: existing.ID}}
	case confRemove:
		if !known {
			fail(ErrUnknownMember)
			return
		}
		if slices.Contains(n.confState.Voters, existing.ID) {
			if len(n.confState.Voters) == 1 {
				fail(ErrLastVoter)
				return
			}
			if len(n.confState.Voters)-1 < n.cfg.WriteConcern {
				fail(ErrConcernTooHigh)
				return
			}
		}
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeRemoveNode, NodeID: existing.ID}}
	}
	b, err := json.Marshal(ctx)
	if err != nil {
		fail(err)
		return
	}
	cc.Context = b
	// Every earlier Ready was handled this turn, so raft's log ends where
	// the last append handed over does: the change goes at the next index. Raft turns it into
	// an empty entry when an earlier change is not applied yet (just after
	// an election): applyEntryAt then answers it.
	last := n.lastLogIndex
	if err := n.rn.ProposeConfChange(cc); err != nil {
		fail(fmt.Errorf("%w: %v", ErrNotLeader, err))
		return
	}
	req.index = last + 1
	n.confWaiting = req
}

// confDropped answers the change this node proposed when the entry at its
// index was applied as something else (raft dropped the change), and
// forgets a change whose proposer stopped waiting.
func (n *Node) confDropped(index uint64, isConf bool) {
	w := n.confWaiting
	if w == nil {
		return
	}
	if !isConf && index == w.index || !w.deadline.IsZero() && time.Now().After(w.deadline) {
		select {
		case w.done <- confResult{err: ErrChangeInProgress}:
		default:
		}
		n.confWaiting = nil
	}
}

// applyMembership updates the membership table from an applied
// configuration change and answers its proposer.
func (n *Node) applyMembership(index uint64, cc raftpb.ConfChangeI) {
	v2 := cc.AsV2()
	var ctx confContext
	if len(v2.Context) > 0 {
		_ = json.Unmarshal(v2.Context, &ctx) // a change proposed by another build may carry none
	}
	changed := false
	for _, c := range v2.Changes {
		switch c.Type {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			if ctx.Member != nil && ctx.Member.ID == c.NodeID {
				n.members[c.NodeID] = *ctx.Member
				changed = true
			}
		case raftpb.ConfChangeRemoveNode:
			if _, ok := n.members[c.NodeID]; ok {
				delete(n.members, c.NodeID)
				changed = true
			}
			if c.NodeID == n.cfg.ID {
				n.log.Warn("this node was removed from the cluster: it takes no part any more and answers 503 not_member; stop it")
			}
		}
	}
	n.confIndex = index
	if changed {
		n.publishMembers()
		// The next snapshot must hold this configuration: a learner just
		// added refuses one from before it was added (raft: "not in the
		// ConfState"), and would otherwise wait for the next checkpoint.
		n.checkpointSoon = true
	}
	if w := n.confWaiting; w != nil && ctx.ReqID == w.id {
		w.done <- confResult{index: index}
		n.confWaiting = nil
	} else if n.confWaiting != nil && len(v2.Changes) > 0 {
		// Another node's change was applied: ours was dropped by raft
		// (a leader change) and will not come.
		n.confWaiting.done <- confResult{err: ErrNotLeader}
		n.confWaiting = nil
	}
}

// failConfIfFollower answers a membership change this node proposed once
// it no longer leads (its entry may still commit; the proposer retries).
func (n *Node) failConfIfFollower() {
	if n.confWaiting != nil && n.rn.BasicStatus().RaftState != raft.StateLeader {
		n.confWaiting.done <- confResult{err: ErrNotLeader}
		n.confWaiting = nil
	}
}

func (n *Node) memberByName(name string) (Member, bool) {
	for _, m := range n.members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// publishMembers makes the table visible to other goroutines (Members,
// Member) and tells the transport (Config.OnMembers).
func (n *Node) publishMembers() {
	ms := n.membersList()
	n.membersView.Store(&ms)
	if n.cfg.OnMembers != nil {
		n.cfg.OnMembers(ms)
	}
}

// membersList is the table sorted by name (nil when empty: a single
// node's checkpoint keeps none).
func (n *Node) membersList() []Member {
	if len(n.members) == 0 {
		return nil
	}
	ms := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return ms
}

// IsMember reports whether this node is in the configuration it applied
// (a voter or a learner).
func (n *Node) IsMember() bool {
	st := n.Status()
	return st.IsVoter(n.cfg.ID) || st.IsLearner(n.cfg.ID)
}

// rejoin queues, without waiting, the addition of m (a node that lost its
// data, under a new id) as a learner; the leader replaces its old identity
// once it has caught up (replaceRejoined).
func (n *Node) rejoin(m Member) {
	req := &confReq{kind: confRejoin, member: m, id: n.reqBase | (n.reqSeq.Add(1) & (1<<32 - 1)), done: make(chan confResult, 1)}
	select {
	case n.confs <- req:
	default: // busy: the node asks again
	}
}

// replaceRejoined runs on the leader at every tick: a learner that has the
// name of a voter (a node that lost its data and rejoined under a new id),
// once caught up, replaces that voter in one joint change (ConfChangeV2:
// the new id becomes a voter, the old one leaves; raft leaves the joint
// configuration by itself).
func (n *Node) replaceRejoined(st raft.Status) {
	if n.confWaiting != nil || len(n.confState.VotersOutgoing) > 0 || n.Fault() != nil {
		return
	}
	for _, l := range n.confState.Learners {
		lm, ok := n.members[l]
		pr, known := st.Progress[l]
		// Caught up, within promoteLagMax: under a steady stream of writes
		// the commit index keeps moving, and a learner that replicates
		// never quite holds all of it at the moment of a tick.
		if !ok || !known || pr.State != tracker.StateReplicate || pr.Match+promoteLagMax < st.Commit {
			continue
		}
		// A learner that lost its data is replaced by removing the old
		// learner: the new one stays a learner, as the old one was.
		for _, v := range n.confState.Learners {
			if vm, ok := n.members[v]; ok && v != l && vm.Name == lm.Name {
				if pv, ok := st.Progress[v]; ok && pv.State == tracker.StateReplicate && pv.Match+promoteLagMax >= st.Commit {
					continue // both replicate: not a lost one (it is the other's turn)
				}
				m := lm
				b, err := json.Marshal(confContext{Member: &m})
				if err != nil {
					return
				}
				cc := raftpb.ConfChangeV2{Context: b, Changes: []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeRemoveNode, NodeID: v}}}
				if err := n.rn.ProposeConfChange(cc); err != nil {
					return
				}
				n.log.Info("removing a learner that lost its data; its new identity goes on", "node", lm.Name, "old_raft_id", fmt.Sprintf("%x", v), "new_raft_id", fmt.Sprintf("%x", l))
				last := n.lastLogIndex
				n.confWaiting = &confReq{done: make(chan confResult, 1), index: last + 1, deadline: time.Now().Add(time.Minute)}
				return
			}
		}
		for _, v := range n.confState.Voters {
			if vm, ok := n.members[v]; ok && v != l && vm.Name == lm.Name {
				m := lm
				b, err := json.Marshal(confContext{Member: &m})
				if err != nil {
					return
				}
				cc := raftpb.ConfChangeV2{Context: b, Changes: []raftpb.ConfChangeSingle{
					{Type: raftpb.ConfChangeAddNode, NodeID: l}, {Type: raftpb.ConfChangeRemoveNode, NodeID: v}}}
				if err := n.rn.ProposeConfChange(cc); err != nil {
					return
				}
				n.log.Info("replacing a member that lost its data by its new identity", "node", lm.Name,
					"old_raft_id", fmt.Sprintf("%x", v), "new_raft_id", fmt.Sprintf("%x", l))
				last := n.lastLogIndex
				n.confWaiting = &confReq{done: make(chan confResult, 1), index: last + 1, deadline: time.Now().Add(time.Minute)} // id 0: the change carries none
				return
			}
		}
	}
}

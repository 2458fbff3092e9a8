package replication

import (
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"

	"keel/engine"
)

// Write concern above the majority (Config.WriteConcern, RF_HA_WRITE_CONCERN;
// design.md, "Write concern"): raft commits an entry once a majority has it
// on disk; a client that asked for N nodes is answered once N voters'
// progress (Match, the leader's own included: it applies only what it has
// written) reaches the entry. Until then the answers of an applied entry
// are held here; a proposer whose deadline passes first is answered by the
// reaper (ErrTimeout: 503 commit_timeout), the write being committed but
// not yet on N disks.

// heldAnswer is the results of one applied entry waiting for its write
// concern.
type heldAnswer struct {
	index   uint64
	batch   uint64
	results []engine.Result
}

// holdsAnswers reports whether answers wait for more than raft's commit.
func (n *Node) holdsAnswers() bool {
	return n.cfg.WriteConcern > len(n.confState.Voters)/2+1
}

// hold keeps the results just applied at index until enough voters have
// the entry.
func (n *Node) hold(index uint64) {
	n.held = append(n.held, heldAnswer{index: index, batch: n.batchOf(index), results: slices.Clone(n.results)})
}

// releaseHeld answers the held entries that WriteConcern voters have.
func (n *Node) releaseHeld() {
	if len(n.held) == 0 {
		return
	}
	if n.rn.BasicStatus().RaftState != raft.StateLeader {
		// No longer leading: the progress is someone else's to see. The
		// proposers are answered by their deadlines (commit_timeout).
		clear(n.held)
		n.held = n.held[:0]
		return
	}
	var matches []uint64
	n.rn.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
		if !pr.IsLearner {
			matches = append(matches, pr.Match)
		}
	})
	if len(matches) < n.cfg.WriteConcern {
		return
	}
	slices.Sort(matches)
	onEnough := matches[len(matches)-n.cfg.WriteConcern] // the index at least WriteConcern voters have
	k := 0
	for k < len(n.held) && n.held[k].index <= onEnough {
		h := n.held[k]
		n.deliver(h.results, h.batch)
		k++
	}
	clear(n.held[:k])
	n.held = n.held[k:]
}

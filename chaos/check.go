package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Violation is one thing the history or the final logs break.
type Violation struct {
	Kind      string `json:"kind"` // lost, duplicate, divergent, not_linearizable, undecided
	Partition int    `json:"partition"`
	Detail    string `json:"detail"`
}

func (v Violation) String() string {
	return fmt.Sprintf("%s (partition %d): %s", v.Kind, v.Partition, v.Detail)
}

// Result is what Check found.
type Result struct {
	Operations     int         `json:"operations"`
	AppendsOK      int         `json:"appends_ok"`
	AppendsUnknown int         `json:"appends_unknown"` // no answer; resolved from the final logs where the key is there
	AppendsFailed  int         `json:"appends_failed"`
	Reads          int         `json:"reads_ok"`
	CommitsOK      int         `json:"commits_ok"`
	CommitReads    int         `json:"commit_reads_ok"`
	KVReads        int         `json:"kv_reads_ok"`
	KVPutsOK       int         `json:"kv_puts_ok"`       // applied
	KVMismatches   int         `json:"kv_puts_mismatch"` // refused with cas_mismatch
	KVPutsUnknown  int         `json:"kv_puts_unknown"`
	Violations     []Violation `json:"violations"`

	models map[int]porcupine.LinearizationInfo // per partition, for Visualize
}

// FinalCommits is each node's committed offset of every (group,
// partition) at the end (-1: none).
type FinalCommits map[string]map[GroupPartition]int64

// GroupPartition names one committed offset.
type GroupPartition struct {
	Group     string
	Partition int
}

// FinalLogs is what each node holds at the end, once healed and caught up:
// node name → partition → the keys at offsets 0, 1, 2, … (dense; the
// runner reports a gap as a violation of its own).
type FinalLogs map[string]map[int][]string

// Check checks a history against the final logs of every node: every
// acknowledged append is on every node at its offset, no key is at two
// offsets, every node holds the same log, and each partition's history is
// linearizable as an append-only log (porcupine, within timeout per
// partition; a check that runs out of time is reported as undecided).
// Unknown appends whose key is in the final log are taken as done at that
// offset (at some time after their call); the others as never done.
//
// KV: each key's reads and compare-and-set puts are linearizable as a
// register (kv.go).
//
// Commits: each (group, partition)'s history is linearizable as a register
// that keeps the largest offset committed, and every node ends with at
// least the largest acknowledged commit and at most the largest attempted
// one (committed offsets never move back).
func Check(ops []Op, finals FinalLogs, commits FinalCommits, timeout time.Duration) Result {
	res := Result{Operations: len(ops), Violations: []Violation{}, models: map[int]porcupine.LinearizationInfo{}}
	nodes := make([]string, 0, len(finals))
	for n := range finals {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	byPart := map[int][]Op{}
	byCommit := map[GroupPartition][]Op{}
	byKV := map[string][]Op{}
	for _, op := range ops {
		if op.Kind == OpKVRead || op.Kind == OpKVPut {
			byKV[op.Key] = append(byKV[op.Key], op)
			switch {
			case op.Kind == OpKVRead && op.Outcome == OK:
				res.KVReads++
			case op.Outcome == OK && op.Mismatch:
				res.KVMismatches++
			case op.Outcome == OK:
				res.KVPutsOK++
			case op.Outcome == Unknown:
				res.KVPutsUnknown++
			}
			continue
		}
		if op.Kind == OpCommit || op.Kind == OpReadCommit {
			gp := GroupPartition{op.Group, op.Partition}
			byCommit[gp] = append(byCommit[gp], op)
			switch {
			case op.Kind == OpCommit && op.Outcome == OK:
				res.CommitsOK++
			case op.Kind == OpReadCommit && op.Outcome == OK:
				res.CommitReads++
			}
			continue
		}
		byPart[op.Partition] = append(byPart[op.Partition], op)
		switch {
		case op.Kind == OpAppend && op.Outcome == OK:
			res.AppendsOK++
		case op.Kind == OpAppend && op.Outcome == Unknown:
			res.AppendsUnknown++
		case op.Kind == OpAppend:
			res.AppendsFailed++
		case op.Kind == OpRead && op.Outcome == OK:
			res.Reads++
		}
	}
	parts := map[int]bool{}
	for p := range byPart {
		parts[p] = true
	}
	for _, n := range nodes {
		for p := range finals[n] {
			parts[p] = true
		}
	}
	for _, p := range slices.Sorted(maps.Keys(parts)) {
		res.Violations = append(res.Violations, checkPartition(&res, p, byPart[p], finals, nodes, timeout)...)
	}
	gps := slices.SortedFunc(maps.Keys(byCommit), func(a, b GroupPartition) int {
		if a.Group != b.Group {
			return strings.Compare(a.Group, b.Group)
		}
		return a.Partition - b.Partition
	})
	for _, gp := range gps {
		res.Violations = append(res.Violations, checkCommits(gp, byCommit[gp], commits, timeout)...)
	}
	for _, key := range slices.Sorted(maps.Keys(byKV)) {
		res.Violations = append(res.Violations, checkKV(key, byKV[key], timeout)...)
	}
	return res
}

func checkCommits(gp GroupPartition, ops []Op, commits FinalCommits, timeout time.Duration) []Violation {
	var vs []Violation
	add := func(kind, format string, args ...any) {
		vs = append(vs, Violation{Kind: kind, Partition: gp.Partition, Detail: fmt.Sprintf("group %s: ", gp.Group) + fmt.Sprintf(format, args...)})
	}
	acked, tried := int64(-1), int64(-1)
	for _, op := range ops {
		if op.Kind != OpCommit {
			continue
		}
		if op.Outcome == OK {
			acked = max(acked, op.Offset)
		}
		if op.Outcome != Fail {
			tried = max(tried, op.Offset)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(commits)) {
		c, ok := commits[n][gp]
		if !ok {
			c = -1
		}
		if c < acked {
			add("commit_moved_back", "node %s holds committed offset %d, below the acknowledged commit of %d", n, c, acked)
		}
		if c > tried {
			add("commit_invented", "node %s holds committed offset %d, above every commit sent (%d)", n, c, tried)
		}
	}
	if out := porcupine.CheckOperationsTimeout(commitModel(), commitOps(ops), timeout); out == porcupine.Illegal {
		add("not_linearizable", "the commits and reads of the committed offset are not linearizable as a register keeping the largest value")
	} else if out == porcupine.Unknown {
		add("undecided", "the commit check ran out of its %s", timeout)
	}
	return vs
}

func checkPartition(res *Result, p int, ops []Op, finals FinalLogs, nodes []string, timeout time.Duration) []Violation {
	var vs []Violation
	add := func(kind, format string, args ...any) {
		vs = append(vs, Violation{Kind: kind, Partition: p, Detail: fmt.Sprintf(format, args...)})
	}
	// Every node: no key twice; the same log as the first node.
	var ref []string
	for i, n := range nodes {
		log := finals[n][p]
		at := map[string]int{}
		for o, k := range log {
			if prev, dup := at[k]; dup {
				add("duplicate", "node %s holds key %s at offsets %d and %d", n, k, prev, o)
			}
			at[k] = o
		}
		if i == 0 {
			ref = log
			continue
		}
		if d := firstDifference(ref, log); d >= 0 {
			add("divergent", "node %s differs from node %s at offset %d (%d and %d entries)", n, nodes[0], d, len(log), len(ref))
		}
	}
	// Every acknowledged append, on every node at its offset.
	for _, op := range ops {
		if op.Kind != OpAppend || op.Outcome != OK {
			continue
		}
		if acks := uniq(op.Acked); len(acks) > 1 {
			add("duplicate", "key %s acknowledged at offsets %v", op.Key, acks)
		}
		for _, n := range nodes {
			log := finals[n][p]
			if op.Offset >= int64(len(log)) || log[op.Offset] != op.Key {
				got := "nothing"
				if op.Offset < int64(len(log)) {
					got = log[op.Offset]
				}
				add("lost", "key %s acknowledged at offset %d (op %d) is not there on node %s (%s is)", op.Key, op.Offset, op.ID, n, got)
			}
		}
	}
	// Linearizability, with unknown appends resolved from the final log.
	if len(ops) == 0 {
		return vs
	}
	where := map[string]int64{}
	for o, k := range ref {
		where[k] = int64(o)
	}
	var kept []Op
	resolved := map[int]int64{}
	for _, op := range ops {
		if op.Kind == OpAppend && op.Outcome == Unknown {
			o, ok := where[op.Key]
			if !ok {
				continue // never took effect
			}
			resolved[op.ID] = o // took effect at o, some time after its call
		}
		kept = append(kept, op)
	}
	history := porcupineOps(kept, resolved)
	out, info := porcupine.CheckOperationsVerbose(logModel(), history, timeout)
	res.models[p] = info
	switch out {
	case porcupine.Illegal:
		add("not_linearizable", "the history of %d operations is not linearizable as an append-only log (see the timeline)", len(history))
	case porcupine.Unknown:
		add("undecided", "the linearizability check ran out of its %s", timeout)
	}
	return vs
}

func firstDifference(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func uniq(xs []int64) []int64 {
	out := slices.Clone(xs)
	slices.Sort(out)
	return slices.Compact(out)
}

// Visualize writes porcupine's timeline of partition p's history as HTML.
func (r Result) Visualize(p int, w io.Writer) error {
	info, ok := r.models[p]
	if !ok {
		return fmt.Errorf("chaos: no history for partition %d", p)
	}
	return porcupine.Visualize(logModel(), info, w)
}

// Partitions lists the partitions checked.
func (r Result) Partitions() []int { return slices.Sorted(maps.Keys(r.models)) }

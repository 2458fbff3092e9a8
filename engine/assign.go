package engine

import (
	"fmt"
	"slices"
)

// Assignment strategies of a consumer group: how a topic's partitions are
// shared among the members that read it. Each is a pure function of the
// members (sorted by id), the partition count and, for sticky, the
// previous assignment, so every replica computes the same answer at apply.
//
// The names and behaviour follow Kafka's assignors (RangeAssignor,
// RoundRobinAssignor, StickyAssignor): with P partitions and M members,
// every member gets P/M or P/M+1 partitions, and a group with more members
// than partitions leaves the extra ones idle.
const (
	StrategyUnset      uint8 = 0 // a join that names none: the group's, else sticky
	StrategySticky     uint8 = 1
	StrategyRange      uint8 = 2
	StrategyRoundRobin uint8 = 3
	strategyMax              = StrategyRoundRobin
)

// StrategyName is the API name of a strategy ("sticky", "range",
// "roundrobin").
func StrategyName(s uint8) string {
	switch s {
	case StrategyRange:
		return "range"
	case StrategyRoundRobin:
		return "roundrobin"
	}
	return "sticky"
}

// ParseStrategy is StrategyName's inverse; "" is StrategyUnset.
func ParseStrategy(name string) (uint8, error) {
	switch name {
	case "":
		return StrategyUnset, nil
	case "sticky":
		return StrategySticky, nil
	case "range":
		return StrategyRange, nil
	case "roundrobin":
		return StrategyRoundRobin, nil
	}
	return 0, fmt.Errorf("unknown strategy %q (sticky, range or roundrobin)", name)
}

// Assign shares partitions 0..partitions-1 among members (ids, sorted
// ascending, no duplicates) by strategy. prev is each member's assignment
// before (sticky keeps as much of it as the balance allows; the others
// ignore it). The result gives every member a sorted slice, empty when it
// is idle.
func Assign(strategy uint8, members []string, partitions int, prev map[string][]int32) map[string][]int32 {
	out := make(map[string][]int32, len(members))
	m := len(members)
	if m == 0 {
		return out
	}
	base, extra := partitions/m, partitions%m
	switch strategy {
	case StrategyRange:
		// Contiguous ranges; the first partitions%m members get one more.
		next := 0
		for i, id := range members {
			n := base
			if i < extra {
				n++
			}
			out[id] = rangeOf(next, n)
			next += n
		}
	case StrategyRoundRobin:
		for _, id := range members {
			out[id] = []int32{}
		}
		for p := range partitions {
			id := members[p%m]
			out[id] = append(out[id], int32(p))
		}
	default:
		return assignSticky(members, partitions, prev)
	}
	return out
}

func rangeOf(first, n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(first + i)
	}
	return out
}

// assignSticky balances like the others but moves as few partitions as it
// can: each member keeps what it held, up to its quota (P/M, or P/M+1 for
// the P%M members that held the most, ties to the smaller id), and only
// the partitions left over (released by members over quota, or held by
// members that are gone) go to members under quota, the emptiest first.
// When one of N members leaves, exactly its partitions move.
func assignSticky(members []string, partitions int, prev map[string][]int32) map[string][]int32 {
	m := len(members)
	base, extra := partitions/m, partitions%m
	// What each member held that is still valid and not claimed twice
	// (a partition two members claim stays with the smaller id).
	owner := make([]int, partitions)
	for i := range owner {
		owner[i] = -1
	}
	held := make([][]int32, m)
	for i, id := range members {
		for _, p := range prev[id] {
			if p >= 0 && int(p) < partitions && owner[p] == -1 {
				owner[p] = i
				held[i] = append(held[i], p)
			}
		}
		slices.Sort(held[i])
	}
	// The extra slots go to the members that held the most.
	order := make([]int, m)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(held[b]) - len(held[a]) })
	quota := make([]int, m)
	for rank, i := range order {
		quota[i] = base
		if rank < extra {
			quota[i]++
		}
	}
	out := make(map[string][]int32, m)
	assigned := make([]bool, partitions)
	kept := make([][]int32, m)
	for i := range members {
		k := held[i][:min(len(held[i]), quota[i])]
		kept[i] = append([]int32{}, k...)
		for _, p := range k {
			assigned[p] = true
		}
	}
	// Free partitions, ascending, each to the member furthest below its
	// quota (ties to the smaller id).
	for p := range partitions {
		if assigned[p] {
			continue
		}
		best := -1
		for i := range members {
			if len(kept[i]) >= quota[i] {
				continue
			}
			if best == -1 || quota[i]-len(kept[i]) > quota[best]-len(kept[best]) {
				best = i
			}
		}
		if best == -1 {
			break // cannot happen: the quotas add up to partitions
		}
		kept[best] = append(kept[best], int32(p))
	}
	for i, id := range members {
		slices.Sort(kept[i])
		out[id] = kept[i]
	}
	return out
}

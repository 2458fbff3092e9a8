package engine

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
)

func TestAssignStrategies(t *testing.T) {
	three := []string{"a", "b", "c"}
	cases := []struct {
		name       string
		strategy   uint8
		members    []string
		partitions int
		prev       map[string][]int32
		want       map[string][]int32
	}{
		{"range, even", StrategyRange, three, 6, nil, map[string][]int32{"a": {0, 1}, "b": {2, 3}, "c": {4, 5}}},
		{"range, uneven: the first get one more", StrategyRange, three, 7, nil, map[string][]int32{"a": {0, 1, 2}, "b": {3, 4}, "c": {5, 6}}},
		{"range, more members than partitions", StrategyRange, three, 2, nil, map[string][]int32{"a": {0}, "b": {1}, "c": {}}},
		{"roundrobin", StrategyRoundRobin, three, 7, nil, map[string][]int32{"a": {0, 3, 6}, "b": {1, 4}, "c": {2, 5}}},
		{"roundrobin, idle members", StrategyRoundRobin, []string{"a", "b", "c", "d"}, 3, nil, map[string][]int32{"a": {0}, "b": {1}, "c": {2}, "d": {}}},
		{"sticky, fresh: balanced", StrategySticky, three, 6, nil, map[string][]int32{"a": {0, 3}, "b": {1, 4}, "c": {2, 5}}},
		{"sticky, a member leaves: only its partitions move", StrategySticky, []string{"a", "c"}, 6,
			map[string][]int32{"a": {0, 3}, "b": {1, 4}, "c": {2, 5}}, map[string][]int32{"a": {0, 1, 3}, "c": {2, 4, 5}}},
		{"sticky, a member joins: it takes from the fullest", StrategySticky, []string{"a", "b", "c"}, 6,
			map[string][]int32{"a": {0, 1, 2}, "c": {3, 4, 5}}, map[string][]int32{"a": {0, 1}, "b": {2, 5}, "c": {3, 4}}},
		{"sticky, prev partitions out of range are dropped", StrategySticky, []string{"a", "b"}, 2,
			map[string][]int32{"a": {0, 7}, "b": {-1}}, map[string][]int32{"a": {0}, "b": {1}}},
		{"sticky, a partition claimed twice stays with the first", StrategySticky, []string{"a", "b"}, 2,
			map[string][]int32{"a": {0}, "b": {0}}, map[string][]int32{"a": {0}, "b": {1}}},
		{"sticky, more members than partitions: holders keep theirs", StrategySticky, []string{"a", "b", "c"}, 2,
			map[string][]int32{"c": {1}}, map[string][]int32{"a": {0}, "b": {}, "c": {1}}},
		{"no members", StrategySticky, nil, 4, nil, map[string][]int32{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Assign(tc.strategy, tc.members, tc.partitions, tc.prev)
			norm := func(m map[string][]int32) map[string][]int32 {
				out := map[string][]int32{}
				for k, v := range m {
					out[k] = append([]int32{}, v...)
				}
				return out
			}
			if !reflect.DeepEqual(norm(got), norm(tc.want)) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// Every strategy covers each partition exactly once and balances within
// one; sticky moves exactly the leaving member's partitions when one of N
// leaves, for every N and partition count tried.
func TestAssignInvariants(t *testing.T) {
	for _, strategy := range []uint8{StrategySticky, StrategyRange, StrategyRoundRobin} {
		for m := 1; m <= 9; m++ {
			for p := 0; p <= 20; p++ {
				ids := make([]string, m)
				for i := range ids {
					ids[i] = fmt.Sprintf("m%02d", i)
				}
				got := Assign(strategy, ids, p, nil)
				checkBalanced(t, fmt.Sprintf("%s m=%d p=%d", StrategyName(strategy), m, p), got, ids, p)
				if strategy != StrategySticky || m < 2 {
					continue
				}
				for leave := range ids {
					rest := slices.Delete(slices.Clone(ids), leave, leave+1)
					after := Assign(StrategySticky, rest, p, got)
					checkBalanced(t, fmt.Sprintf("sticky m=%d p=%d without %s", m, p, ids[leave]), after, rest, p)
					moved := 0
					for _, id := range rest {
						for _, part := range got[id] {
							if !slices.Contains(after[id], part) {
								moved++
							}
						}
					}
					// A stayer gives a partition away only when the balance
					// needs it (the leaver held fewer than the new quota
					// takes); with a balanced start it never does.
					if moved != 0 {
						t.Fatalf("sticky m=%d p=%d: %s left and %d partitions moved between the members that stayed (%v -> %v)",
							m, p, ids[leave], moved, got, after)
					}
				}
			}
		}
	}
}

func checkBalanced(t *testing.T, name string, got map[string][]int32, ids []string, partitions int) {
	t.Helper()
	if !slices.Equal(slices.Sorted(maps.Keys(got)), ids) {
		t.Fatalf("%s: members %v, want %v", name, slices.Sorted(maps.Keys(got)), ids)
	}
	seen := make([]int, partitions)
	lo, hi := partitions, 0
	for _, ps := range got {
		if !slices.IsSorted(ps) {
			t.Fatalf("%s: unsorted %v", name, ps)
		}
		for _, p := range ps {
			seen[p]++
		}
		lo, hi = min(lo, len(ps)), max(hi, len(ps))
	}
	for p, n := range seen {
		if n != 1 {
			t.Fatalf("%s: partition %d assigned %d times: %v", name, p, n, got)
		}
	}
	if hi-lo > 1 {
		t.Fatalf("%s: unbalanced (%d to %d): %v", name, lo, hi, got)
	}
}

package chaos

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// h builds a history: appends and reads with explicit intervals.
type h struct{ ops []Op }

func (b *h) append(proc int, key string, call, ret int64, out Outcome, offset int64) *h {
	op := Op{ID: len(b.ops), Process: proc, Kind: OpAppend, Key: key, Call: call, Return: ret, Outcome: out, Offset: offset}
	if out == OK {
		op.Acked = []int64{offset}
	}
	b.ops = append(b.ops, op)
	return b
}

func (b *h) read(proc int, offset int64, call, ret int64, value string) *h {
	b.ops = append(b.ops, Op{ID: len(b.ops), Process: proc, Kind: OpRead, Offset: offset, Call: call, Return: ret, Outcome: OK, Value: value, Found: value != ""})
	return b
}

func kinds(vs []Violation) string {
	var ks []string
	for _, v := range vs {
		ks = append(ks, v.Kind)
	}
	return strings.Join(ks, ",")
}

func TestCheck(t *testing.T) {
	three := func(log ...string) FinalLogs {
		return FinalLogs{"n1": {0: log}, "n2": {0: log}, "n3": {0: log}}
	}
	for _, tc := range []struct {
		name   string
		ops    *h
		finals FinalLogs
		want   string // violation kinds, in order
	}{
		{"sequential appends and reads", new(h).
			append(0, "a", 0, 10, OK, 0).append(0, "b", 11, 20, OK, 1).
			read(1, 0, 21, 30, "a").read(1, 1, 31, 40, "b").read(1, 2, 41, 50, ""),
			three("a", "b"), ""},
		{"concurrent appends in either order", new(h).
			append(0, "a", 0, 100, OK, 1).append(1, "b", 0, 100, OK, 0),
			three("b", "a"), ""},
		{"a read concurrent with the append sees it or not", new(h).
			append(0, "a", 0, 100, OK, 0).read(1, 0, 50, 60, "").read(2, 0, 50, 60, "a"),
			three("a"), ""},
		{"unknown appends: one took effect, one did not", new(h).
			append(0, "a", 0, 10, Unknown, 0).append(1, "b", 20, 30, OK, 1).append(2, "c", 40, 50, Unknown, 0),
			three("a", "b"), ""},
		{"an unknown append takes effect after its client gave up", new(h).
			append(0, "a", 0, 10, Unknown, 0).append(1, "b", 20, 30, OK, 0),
			three("b", "a"), ""},
		{"failed appends are left out", new(h).
			append(0, "a", 0, 10, Fail, 0).append(1, "b", 20, 30, OK, 0),
			three("b"), ""},
		{"a lost write and a duplicate", new(h).
			append(0, "a", 0, 10, OK, 0).append(0, "b", 11, 20, OK, 1).append(0, "c", 21, 30, OK, 2),
			three("a", "b", "b"), "duplicate,duplicate,duplicate,lost,lost,lost"}, // the history alone is linearizable
		{"a stale read: past the end after an acknowledged append", new(h).
			append(0, "a", 0, 10, OK, 0).read(1, 0, 20, 30, ""),
			three("a"), "not_linearizable"},
		{"a read of the future: before the append was called", new(h).
			read(1, 0, 0, 10, "a").append(0, "a", 20, 30, OK, 0),
			three("a"), "not_linearizable"},
		{"an acknowledged offset that skips one", new(h).
			append(0, "a", 0, 10, OK, 1),
			FinalLogs{"n1": {0: {"x", "a"}}}, "not_linearizable"},
		{"nodes that differ", new(h).
			append(0, "a", 0, 10, OK, 0),
			FinalLogs{"n1": {0: {"a", "b"}}, "n2": {0: {"a", "c"}}}, "divergent"},
		{"one key acknowledged at two offsets", &h{ops: []Op{{ID: 0, Kind: OpAppend, Key: "a", Outcome: OK, Offset: 0, Acked: []int64{0, 1}, Return: 10}}},
			three("a"), "duplicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Check(tc.ops.ops, tc.finals, nil, 10*time.Second)
			if got := kinds(res.Violations); got != tc.want {
				t.Fatalf("violations %q, want %q: %v", got, tc.want, res.Violations)
			}
			var buf bytes.Buffer
			if err := res.Visualize(0, &buf); err != nil || !strings.Contains(buf.String(), "<html") {
				t.Fatalf("timeline: %v (%d bytes)", err, buf.Len())
			}
		})
	}
}

// TestCheckScales: a history of 20,000 appends by 20 clients and as many
// reads is checked well within the run's budget.
func TestCheckScales(t *testing.T) {
	var b h
	var log []string
	now := int64(0)
	for i := range 20000 {
		key := fmt.Sprintf("k%d", i)
		// Each append overlaps the next two (30 long, one every 10).
		b.append(i%20, key, now, now+30, OK, int64(i))
		b.read(20+i%20, int64(i), now+31, now+40, key)
		log = append(log, key)
		now += 10
	}
	start := time.Now()
	res := Check(b.ops, FinalLogs{"n1": {0: log}, "n2": {0: log}}, nil, time.Minute)
	if len(res.Violations) != 0 {
		t.Fatalf("violations: %v", res.Violations[:min(3, len(res.Violations))])
	}
	t.Logf("%d operations checked in %s", res.Operations, time.Since(start))
}

func TestLogState(t *testing.T) {
	s := &logState{}
	var states []*logState
	for i := range 5000 {
		states = append(states, s)
		s = s.push(fmt.Sprint(i))
	}
	for n, st := range states { // every earlier version is unchanged
		if st.n != int64(n) {
			t.Fatalf("state %d has %d entries", n, st.n)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if i >= 0 && i < n && st.get(int64(i)) != fmt.Sprint(i) {
				t.Fatalf("state %d: entry %d is %q", n, i, st.get(int64(i)))
			}
		}
	}
	other := &logState{}
	for i := range 5000 {
		other = other.push(fmt.Sprint(i))
	}
	if other.h1 != s.h1 || other.h2 != s.h2 {
		t.Fatal("equal logs hash differently")
	}
	if s.push("x").h1 == s.push("y").h1 {
		t.Fatal("different logs hash the same")
	}
}

func TestCheckCommits(t *testing.T) {
	commit := func(id int, off int64, call, ret int64, out Outcome) Op {
		return Op{ID: id, Kind: OpCommit, Group: "g", Offset: off, Call: call, Return: ret, Outcome: out}
	}
	read := func(id int, off int64, call, ret int64) Op {
		return Op{ID: id, Kind: OpReadCommit, Group: "g", Offset: off, Call: call, Return: ret, Outcome: OK}
	}
	gp := GroupPartition{"g", 0}
	at := func(c int64) FinalCommits { return FinalCommits{"n1": {gp: c}, "n2": {gp: c}} }
	for _, tc := range []struct {
		name  string
		ops   []Op
		final FinalCommits
		want  string
	}{
		{"commits up, a lower one ignored", []Op{commit(0, 5, 0, 10, OK), commit(1, 3, 11, 20, OK), read(2, 5, 21, 30)}, at(5), ""},
		{"concurrent commits, read either", []Op{commit(0, 5, 0, 100, OK), commit(1, 7, 0, 100, OK), read(2, 5, 50, 60), read(3, 7, 101, 110)}, at(7), ""},
		{"an unknown commit that took effect later", []Op{commit(0, 9, 0, 10, Unknown), read(1, -1, 20, 30), read(2, 9, 40, 50)}, at(9), ""},
		{"a commit that moved back", []Op{commit(0, 5, 0, 10, OK), read(1, 3, 20, 30)}, at(5), "not_linearizable"},
		{"a node below the acknowledged commit", []Op{commit(0, 5, 0, 10, OK)}, FinalCommits{"n1": {gp: 5}, "n2": {gp: 4}}, "commit_moved_back"},
		{"a node above every commit sent", []Op{commit(0, 5, 0, 10, OK)}, at(6), "commit_invented,commit_invented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Check(tc.ops, nil, tc.final, 10*time.Second)
			if got := kinds(res.Violations); got != tc.want {
				t.Fatalf("violations %q, want %q: %v", got, tc.want, res.Violations)
			}
		})
	}
}

// kvRead and kvPut add KV operations to a history.
func (b *h) kvRead(proc int, key string, call, ret int64, value string, cas int64) *h {
	b.ops = append(b.ops, Op{ID: len(b.ops), Process: proc, Kind: OpKVRead, Key: key, Call: call, Return: ret, Outcome: OK, Value: value, CAS: cas, Found: cas > 0})
	return b
}

func (b *h) kvPut(proc int, key string, call, ret int64, out Outcome, value string, expect, cas int64, mismatch bool) *h {
	b.ops = append(b.ops, Op{ID: len(b.ops), Process: proc, Kind: OpKVPut, Key: key, Call: call, Return: ret, Outcome: out, Value: value, ExpectCAS: expect, CAS: cas, Mismatch: mismatch})
	return b
}

func TestCheckKV(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  *h
		want string // violation kinds
	}{
		{"create, update, read", new(h).
			kvPut(1, "k", 0, 10, OK, "a", 0, 1, false).
			kvPut(2, "k", 20, 30, OK, "b", 1, 2, false).
			kvRead(1, "k", 40, 50, "b", 2), ""},
		{"a loser sees the winner's cas", new(h).
			kvPut(1, "k", 0, 10, OK, "a", 0, 1, false).
			kvPut(2, "k", 5, 15, OK, "x", 0, 1, true), ""},
		{"an unknown put that applied", new(h).
			kvPut(1, "k", 0, 10, Unknown, "a", 0, 0, false).
			kvRead(2, "k", 20, 30, "a", 1), ""},
		{"an unknown put that did not apply", new(h).
			kvPut(1, "k", 0, 10, Unknown, "a", 0, 0, false).
			kvRead(2, "k", 20, 30, "", 0), ""},
		{"two winners of one cas", new(h).
			kvPut(1, "k", 0, 10, OK, "a", 0, 1, false).
			kvPut(2, "k", 20, 30, OK, "b", 1, 2, false).
			kvPut(3, "k", 40, 50, OK, "c", 1, 2, false), "not_linearizable"},
		{"a stale read after a put completed", new(h).
			kvPut(1, "k", 0, 10, OK, "a", 0, 1, false).
			kvPut(2, "k", 20, 30, OK, "b", 1, 2, false).
			kvRead(3, "k", 40, 50, "a", 1), "not_linearizable"},
		{"a lost acknowledged put", new(h).
			kvPut(1, "k", 0, 10, OK, "a", 0, 1, false).
			kvRead(2, "k", 20, 30, "", 0), "not_linearizable"},
		{"a mismatch naming a cas the key never had", new(h).
			kvPut(1, "k", 0, 10, OK, "a", 0, 1, false).
			kvPut(2, "k", 20, 30, OK, "x", 5, 3, true), "not_linearizable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Check(tc.ops.ops, FinalLogs{}, FinalCommits{}, 10*time.Second)
			if got := kinds(res.Violations); got != tc.want {
				t.Fatalf("violations %q, want %q: %v", got, tc.want, res.Violations)
			}
		})
	}
}

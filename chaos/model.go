package chaos

import (
	"fmt"
	"hash/maphash"
	"math"

	"github.com/anishathalye/porcupine"
)

// The porcupine model of one partition: an append-only log whose entries
// are idempotency keys (each append's value is its key).
//
//   - append(key) → offset o: the log had o entries; key becomes entry o.
//   - append(key) with an unknown outcome: it may or may not have happened
//     (both next states are possible: a nondeterministic step).
//   - read(o) → key: the log holds key at o; read(o) → nothing: the log has
//     at most o entries.
//
// A retried append is one operation whose interval covers every attempt,
// and the server applies a key at most once, so appends need no key
// lookup. The state is a persistent vector (logState): a step copies
// O(log n) nodes, never the log.

// logInput is an operation's input.
type logInput struct {
	read   bool
	key    string // append
	offset int64  // read
}

// logOutput is what the operation returned.
type logOutput struct {
	unknown bool   // append: no answer (may or may not have happened)
	offset  int64  // append: where it went
	value   string // read
	found   bool   // read
}

// vecBits is the branching of the persistent vector: 32 children a node.
const vecBits = 5

// vecNode is an inner node (kids) or a leaf (vals) of a logState.
type vecNode struct {
	kids [1 << vecBits]*vecNode
	vals [1 << vecBits]string
}

// logState is an immutable log: n entries in a tree of height depth, and
// two running hashes of its content (equal logs have equal hashes; two
// logs of equal length with equal 128-bit hashes are taken as equal).
type logState struct {
	n      int64
	depth  uint
	root   *vecNode
	h1, h2 uint64
}

var hashSeed1, hashSeed2 = maphash.MakeSeed(), maphash.MakeSeed()

func (s *logState) get(i int64) string {
	nd := s.root
	for d := s.depth; d > 0; d-- {
		nd = nd.kids[(i>>(d*vecBits))&(1<<vecBits-1)]
	}
	return nd.vals[i&(1<<vecBits-1)]
}

// push returns the log with key appended; s is unchanged.
func (s *logState) push(key string) *logState {
	out := &logState{n: s.n + 1, depth: s.depth, root: s.root}
	if s.root == nil {
		out.root = &vecNode{}
	} else if s.n == int64(1)<<((s.depth+1)*vecBits) { // full: grow a level
		out.root = &vecNode{}
		out.root.kids[0] = s.root
		out.depth++
	}
	out.root = setPath(out.root, out.depth, s.n, key)
	out.h1 = mix(hashSeed1, s.h1, key)
	out.h2 = mix(hashSeed2, s.h2, key)
	return out
}

// setPath copies the path to entry i and sets it.
func setPath(nd *vecNode, depth uint, i int64, key string) *vecNode {
	c := &vecNode{}
	if nd != nil {
		*c = *nd
	}
	if depth == 0 {
		c.vals[i&(1<<vecBits-1)] = key
		return c
	}
	slot := (i >> (depth * vecBits)) & (1<<vecBits - 1)
	c.kids[slot] = setPath(c.kids[slot], depth-1, i, key)
	return c
}

func mix(seed maphash.Seed, h uint64, key string) uint64 {
	var m maphash.Hash
	m.SetSeed(seed)
	var b [8]byte
	for i := range b {
		b[i] = byte(h >> (8 * i))
	}
	m.Write(b[:])
	m.WriteString(key)
	return m.Sum64()
}

// logModel is the model of one partition's log.
func logModel() porcupine.Model {
	empty := &logState{}
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{empty} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(*logState), input.(logInput), output.(logOutput)
			switch {
			case in.read && out.found:
				if in.offset < s.n && s.get(in.offset) == out.value {
					return []any{s}
				}
			case in.read:
				if in.offset >= s.n {
					return []any{s}
				}
			case out.unknown:
				return []any{s, s.push(in.key)}
			default:
				if out.offset == s.n {
					return []any{s.push(in.key)}
				}
			}
			return nil
		},
		Equal: func(a, b any) bool {
			x, y := a.(*logState), b.(*logState)
			return x == y || x.n == y.n && x.h1 == y.h1 && x.h2 == y.h2
		},
		Hash: func(state any) uint64 { return state.(*logState).h1 },
		DescribeOperation: func(input, output any) string {
			in, out := input.(logInput), output.(logOutput)
			switch {
			case in.read && out.found:
				return fmt.Sprintf("read(%d) → %s", in.offset, out.value)
			case in.read:
				return fmt.Sprintf("read(%d) → past the end", in.offset)
			case out.unknown:
				return fmt.Sprintf("append(%s) → ?", in.key)
			default:
				return fmt.Sprintf("append(%s) → %d", in.key, out.offset)
			}
		},
		DescribeState: func(state any) string {
			s := state.(*logState)
			if s.n == 0 {
				return "[]"
			}
			return fmt.Sprintf("%d entries, last %s", s.n, s.get(s.n-1))
		},
	}
	return nm.ToModel()
}

// porcupineOps turns one partition's operations into porcupine's, leaving
// out what certainly took no effect. An operation with an unknown outcome
// stays open to the end of the history: it may take effect any time after
// its call; resolved gives the offset of those known to have taken effect
// (by op ID).
func porcupineOps(ops []Op, resolved map[int]int64) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Outcome == Fail {
			continue
		}
		p := porcupine.Operation{ClientId: op.Process, Call: op.Call, Return: op.Return, Metadata: op.ID}
		switch op.Kind {
		case OpAppend:
			p.Input = logInput{key: op.Key}
			if op.Outcome == Unknown {
				p.Output = logOutput{unknown: true}
				if o, ok := resolved[op.ID]; ok {
					p.Output = logOutput{offset: o}
				}
				p.Return = math.MaxInt64
			} else {
				p.Output = logOutput{offset: op.Offset}
			}
		case OpRead:
			if op.Outcome != OK {
				continue // a read that returned nothing constrains nothing
			}
			p.Input = logInput{read: true, offset: op.Offset}
			p.Output = logOutput{value: op.Value, found: op.Found}
		default:
			continue
		}
		out = append(out, p)
	}
	return out
}

// The porcupine model of one group's committed offset of one partition: a
// register that keeps the largest value written (Keel ignores a commit
// lower than the stored one). A commit of unknown outcome may or may not
// have happened.

type commitInput struct {
	read   bool
	offset int64 // commit
}

type commitOutput struct {
	unknown bool  // commit: no answer
	offset  int64 // read: the committed offset (-1: none)
}

func commitModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{int64(-1)} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(int64), input.(commitInput), output.(commitOutput)
			switch {
			case in.read:
				if out.offset == s {
					return []any{s}
				}
				return nil
			case out.unknown:
				return []any{s, max(s, in.offset)}
			default:
				return []any{max(s, in.offset)}
			}
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(commitInput), output.(commitOutput)
			switch {
			case in.read:
				return fmt.Sprintf("committed → %d", out.offset)
			case out.unknown:
				return fmt.Sprintf("commit(%d) → ?", in.offset)
			default:
				return fmt.Sprintf("commit(%d)", in.offset)
			}
		},
		DescribeState: func(state any) string { return fmt.Sprint(state.(int64)) },
	}
	return nm.ToModel()
}

// commitOps turns one (group, partition)'s commit operations into
// porcupine's.
func commitOps(ops []Op) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Outcome == Fail || op.Kind == OpReadCommit && op.Outcome != OK {
			continue
		}
		p := porcupine.Operation{ClientId: op.Process, Call: op.Call, Return: op.Return, Metadata: op.ID}
		if op.Kind == OpReadCommit {
			p.Input, p.Output = commitInput{read: true}, commitOutput{offset: op.Offset}
		} else {
			p.Input, p.Output = commitInput{offset: op.Offset}, commitOutput{}
			if op.Outcome == Unknown {
				p.Output, p.Return = commitOutput{unknown: true}, math.MaxInt64
			}
		}
		out = append(out, p)
	}
	return out
}

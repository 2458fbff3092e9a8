package chaos

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
)

// The KV workload: writers race compare-and-set on a few keys of one
// namespace. Each round reads a key on the leader (a linearizable read),
// then puts a new value with the cas it read (0: create only if absent).
// A put is sent once: a retry of a put whose first attempt may have
// applied would meet its own write as a mismatch, which says nothing
// about the first attempt.
//
// The model of one key is a compare-and-set register (no deletes): its
// state is the value and the cas (0: absent). A put with cas c applies
// iff the state's cas is c, and the new cas is c + 1; a 409 cas_mismatch
// names the current cas; a put without an answer may or may not have
// applied.

const kvNamespace = "chaos-kv"

// finalReader is the process id of the reads made after healing.
const finalReader = 1 << 20

// kvKeys are the keys the writers share: few, so that they collide.
var kvKeys = []string{"k0", "k1", "k2"}

// Operation kinds of the KV workload.
const (
	// OpKVRead reads a key on the leader: Found, Value and CAS.
	OpKVRead OpKind = "kv_read"
	// OpKVPut puts Value with ExpectCAS: on OK, CAS is the new cas, or
	// with Mismatch the current one.
	OpKVPut OpKind = "kv_put"
)

type kvState struct {
	value string
	cas   int64
}

type kvInput struct {
	read   bool
	expect int64  // put: the cas required (0: absent)
	value  string // put
}

type kvOutput struct {
	unknown  bool   // put: no answer
	mismatch bool   // put: refused, cas is the current one
	cas      int64  // read: the cas (0: not found); put: the new or current cas
	value    string // read
}

func kvModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{kvState{}} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(kvState), input.(kvInput), output.(kvOutput)
			next := kvState{value: in.value, cas: s.cas + 1}
			switch {
			case in.read:
				if out.cas == s.cas && (s.cas == 0 || out.value == s.value) {
					return []any{s}
				}
			case out.unknown:
				if s.cas == in.expect {
					return []any{s, next}
				}
				return []any{s}
			case out.mismatch:
				if s.cas != in.expect && out.cas == s.cas {
					return []any{s}
				}
			default:
				if s.cas == in.expect && out.cas == next.cas {
					return []any{next}
				}
			}
			return nil
		},
		Equal: func(a, b any) bool { return a.(kvState) == b.(kvState) },
		DescribeOperation: func(input, output any) string {
			in, out := input.(kvInput), output.(kvOutput)
			switch {
			case in.read && out.cas == 0:
				return "read → absent"
			case in.read:
				return fmt.Sprintf("read → %s@%d", out.value, out.cas)
			case out.unknown:
				return fmt.Sprintf("put(%s if %d) → ?", in.value, in.expect)
			case out.mismatch:
				return fmt.Sprintf("put(%s if %d) → mismatch, %d", in.value, in.expect, out.cas)
			default:
				return fmt.Sprintf("put(%s if %d) → %d", in.value, in.expect, out.cas)
			}
		},
		DescribeState: func(state any) string {
			s := state.(kvState)
			return fmt.Sprintf("%s@%d", s.value, s.cas)
		},
	}
	return nm.ToModel()
}

// kvOps turns one key's operations into porcupine's.
func kvOps(ops []Op) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Outcome == Fail {
			continue
		}
		p := porcupine.Operation{ClientId: op.Process, Call: op.Call, Return: op.Return, Metadata: op.ID}
		switch {
		case op.Kind == OpKVRead:
			p.Input, p.Output = kvInput{read: true}, kvOutput{cas: op.CAS, value: op.Value}
		case op.Outcome == Unknown:
			p.Input, p.Output, p.Return = kvInput{expect: op.ExpectCAS, value: op.Value}, kvOutput{unknown: true}, math.MaxInt64
		default:
			p.Input, p.Output = kvInput{expect: op.ExpectCAS, value: op.Value}, kvOutput{mismatch: op.Mismatch, cas: op.CAS}
		}
		out = append(out, p)
	}
	return out
}

// checkKV checks one key's history: linearizable as a compare-and-set
// register.
func checkKV(key string, ops []Op, timeout time.Duration) []Violation {
	switch porcupine.CheckOperationsTimeout(kvModel(), kvOps(ops), timeout) {
	case porcupine.Illegal:
		return []Violation{{Kind: "not_linearizable", Partition: -1, Detail: fmt.Sprintf("kv key %s: the reads and compare-and-set puts are not linearizable as a register", key)}}
	case porcupine.Unknown:
		return []Violation{{Kind: "undecided", Partition: -1, Detail: fmt.Sprintf("kv key %s: the check ran out of its %s", key, timeout)}}
	}
	return nil
}

// kvWriter reads a key and puts a new value with the cas it read, until
// ctx ends.
func (w *workload) kvWriter(ctx context.Context, id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	next := time.Now()
	for seq := 0; ctx.Err() == nil; seq++ {
		next = w.wait(ctx, next)
		key := kvKeys[rng.IntN(len(kvKeys))]
		rd := w.kvRead(rng, id, key)
		w.record(rd)
		if rd.Outcome != OK {
			continue
		}
		put := Op{Process: id, Kind: OpKVPut, Key: key, ExpectCAS: rd.CAS, Value: fmt.Sprintf("c%d-%d", id, seq), Outcome: Fail, Call: w.now()}
		for _, i := range w.nodeOrder(rng) {
			put.Attempts++
			put.Node = w.c.nodes[i].name
			res, cas, mismatch, note := w.kvPut(i, key, put.Value, put.ExpectCAS)
			put.Error = note
			if res == attemptOK {
				put.Outcome, put.CAS, put.Mismatch, put.Error = OK, cas, mismatch, ""
				w.hint.Store(int32(i))
				break
			}
			if res == attemptUnknown {
				put.Outcome = Unknown
				w.hint.CompareAndSwap(int32(i), int32((i+1)%len(w.c.nodes)))
				break
			}
		}
		put.Return = w.now()
		w.record(put)
	}
}

// kvRead reads key on the leader (following the node order past
// redirects).
func (w *workload) kvRead(rng *rand.Rand, id int, key string) Op {
	op := Op{Process: id, Kind: OpKVRead, Key: key, Outcome: Fail, Call: w.now()}
	for _, i := range w.nodeOrder(rng) {
		op.Node = w.c.nodes[i].name
		value, cas, status, err := w.kvGet(i, key, false)
		if err == nil && status == 200 {
			op.Outcome, op.Value, op.CAS, op.Found = OK, value, cas, cas > 0
			w.hint.Store(int32(i))
			break
		}
		if err != nil {
			op.Error = err.Error()
		} else {
			op.Error = fmt.Sprint(status)
		}
		if status != 307 {
			break
		}
	}
	op.Return = w.now()
	return op
}

// kvGet reads key on node i: its value and cas (0: absent, answered 404).
// stale reads the node's own applied data.
func (w *workload) kvGet(i int, key string, stale bool) (string, int64, int, error) {
	u := fmt.Sprintf("%s/kv/%s/%s", w.c.nodes[i].url(), kvNamespace, key)
	if stale {
		u += "?stale=1"
	}
	resp, err := do("GET", u, nil)
	if err != nil {
		return "", 0, 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ans struct {
		Value string `json:"value"`
		CAS   int64  `json:"cas"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return "", 0, resp.StatusCode, fmt.Errorf("chaos: kv answer %d: %w", resp.StatusCode, err)
	}
	switch {
	case resp.StatusCode == 404 && ans.Error == "not_found":
		return "", 0, 200, nil
	case resp.StatusCode != 200:
		return "", 0, resp.StatusCode, nil
	}
	v, err := base64.StdEncoding.DecodeString(ans.Value)
	if err != nil {
		return "", 0, 200, fmt.Errorf("chaos: kv value: %w", err)
	}
	return string(v), ans.CAS, 200, nil
}

// kvPut sends one compare-and-set put to node i.
func (w *workload) kvPut(i int, key, value string, expect int64) (res attempt, cas int64, mismatch bool, note string) {
	u := fmt.Sprintf("%s/kv/%s/%s?cas=%d&timeout_ms=2000", w.c.nodes[i].url(), kvNamespace, key, expect)
	resp, err := do("POST", u, strings.NewReader(value))
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return attemptRefused, 0, false, "connection refused"
		}
		return attemptUnknown, 0, false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ans struct {
		OK      bool   `json:"ok"`
		CAS     int64  `json:"cas"`
		Durable bool   `json:"durable"`
		Current int64  `json:"current"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(b, &ans)
	if resp.StatusCode == 507 {
		w.diskFull.Add(1)
	}
	switch {
	case resp.StatusCode == 200 && ans.OK && ans.Durable:
		return attemptOK, ans.CAS, false, ""
	case resp.StatusCode == 409 && ans.Error == "cas_mismatch":
		return attemptOK, ans.Current, true, ""
	case resp.StatusCode == 307 || resp.StatusCode >= 400 && resp.StatusCode < 500:
		return attemptRefused, 0, false, fmt.Sprintf("%d %s", resp.StatusCode, ans.Error)
	default:
		return attemptUnknown, 0, false, fmt.Sprintf("%d %s", resp.StatusCode, ans.Error)
	}
}

// finalKV reads every key on the leader (an operation of the history,
// after all others) and on every node from its own data, and reports
// nodes that disagree with the leader.
func (w *workload) finalKV(ctx context.Context) []Violation {
	var vs []Violation
	rng := rand.New(rand.NewPCG(1, 1))
	for _, key := range kvKeys {
		rd := w.kvRead(rng, finalReader, key)
		w.record(rd)
		if rd.Outcome != OK {
			vs = append(vs, Violation{Kind: "unreadable", Partition: -1, Detail: fmt.Sprintf("kv key %s on the leader: %s", key, rd.Error)})
			continue
		}
		for i, nd := range w.c.nodes {
			value, cas, status, err := w.kvGet(i, key, true)
			switch {
			case err != nil || status != 200:
				vs = append(vs, Violation{Kind: "unreadable", Partition: -1, Detail: fmt.Sprintf("kv key %s on %s: status %d %v", key, nd.name, status, err)})
			case cas != rd.CAS || value != rd.Value:
				vs = append(vs, Violation{Kind: "divergent", Partition: -1, Detail: fmt.Sprintf("kv key %s: %s holds %q@%d, the leader %q@%d", key, nd.name, value, cas, rd.Value, rd.CAS)})
			}
		}
	}
	return vs
}

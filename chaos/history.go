// Package chaos runs a Keel cluster of local processes under faults (the
// nemeses: kill -9, SIGSTOP, network partitions through proxies on every
// node-to-node link) while a workload writes and reads over HTTP, records
// what every operation saw, and checks the history: each partition's log
// must be linearizable as an append-only log (porcupine, model.go), each
// KV key as a compare-and-set register (kv.go), no
// acknowledged write may be missing from any node after healing, no
// idempotency key may sit at two offsets, offsets are dense and every node
// holds the same log (check.go).
//
// The suite speaks only HTTP to the nodes and starts them as processes of
// the keel binary, as a user would; `make chaos` and `make chaos-short` run
// it (chaos_test.go).
package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// OpKind is what an operation did.
type OpKind string

const (
	// OpAppend is a produce of one message whose value is its idempotency
	// key, retried with the same key until it is acknowledged or given up.
	OpAppend OpKind = "append"
	// OpRead reads the message at one offset of a partition (linearizable:
	// on the leader, consume with offset and limit 1).
	OpRead OpKind = "read"
	// OpCommit commits a consumer group's offset of a partition (the
	// stored offset is the largest committed: a lower one is ignored).
	OpCommit OpKind = "commit"
	// OpReadCommit reads a group's committed offset of a partition (the
	// committed_offset of a consume on the leader; -1 for none).
	OpReadCommit OpKind = "read_commit"
)

// Outcome says whether an operation took effect.
type Outcome string

const (
	OK      Outcome = "ok"      // it took effect; its result is known
	Fail    Outcome = "fail"    // it certainly took no effect (refused before being proposed)
	Unknown Outcome = "unknown" // it may or may not have taken effect (timeouts, lost connections)
)

// Op is one operation of the history: one line of history.jsonl. An append
// retried several times is one operation, from the first attempt's call to
// the last attempt's return.
type Op struct {
	ID        int     `json:"id"`
	Process   int     `json:"process"` // the workload client that ran it (porcupine's ClientId)
	Kind      OpKind  `json:"kind"`
	Partition int     `json:"partition"`
	Key       string  `json:"key,omitempty"`   // append: the idempotency key, also the value; kv_read, kv_put: the KV key
	Group     string  `json:"group,omitempty"` // commit, read_commit
	Offset    int64   `json:"offset"`          // append: the offset acknowledged; read: the offset asked; commit: the offset committed; read_commit: the offset read
	Acked     []int64 `json:"acked,omitempty"`
	Value     string  `json:"value,omitempty"`      // read, kv_read: the value found; kv_put: the value put
	Found     bool    `json:"found,omitempty"`      // read: a message was at the offset (else it was past the end); kv_read: the key exists
	ExpectCAS int64   `json:"expect_cas,omitempty"` // kv_put: the cas required (0: absent)
	CAS       int64   `json:"cas,omitempty"`        // kv_read: the cas read (0: absent); kv_put: the new cas, or the current one on a mismatch
	Mismatch  bool    `json:"mismatch,omitempty"`   // kv_put: refused with 409 cas_mismatch
	Node      string  `json:"node,omitempty"`       // the node that answered last
	Attempts  int     `json:"attempts,omitempty"`
	Call      int64   `json:"call_ns"` // since the start of the run
	Return    int64   `json:"return_ns"`
	Outcome   Outcome `json:"outcome"`
	Error     string  `json:"error,omitempty"`
}

// WriteHistory writes ops as JSON lines.
func WriteHistory(w io.Writer, ops []Op) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range ops {
		if err := enc.Encode(&ops[i]); err != nil {
			return fmt.Errorf("chaos: history: %w", err)
		}
	}
	return bw.Flush()
}

// ReadHistory reads a history written by WriteHistory.
func ReadHistory(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []Op
	dec := json.NewDecoder(f)
	for {
		var op Op
		if err := dec.Decode(&op); err == io.EOF {
			return ops, nil
		} else if err != nil {
			return nil, fmt.Errorf("chaos: %s: %w", path, err)
		}
		ops = append(ops, op)
	}
}

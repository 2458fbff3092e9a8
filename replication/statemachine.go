package replication

import "keel/engine"

// StateMachine is what a Raft group replicates into, in the shape of etcd
// raftexample's: replication hands it committed entries in index order and
// asks it for checkpoints; the entries' contents are its own. A process
// can host several groups (multi-Raft), each with its own state machine and
// applied index. *engine.Store is the one Keel runs.
type StateMachine interface {
	// ApplyEntry applies committed entry index of term: data is the entry
	// as proposed (nil for a configuration change, which only moves the
	// applied index), and one result per command is appended to results.
	// index is always the applied index + 1. An error is a storage fault:
	// replicas would diverge, so the node stops.
	ApplyEntry(index, term uint64, data []byte, results []engine.Result) ([]engine.Result, error)

	// Applied is the index and term of the last applied entry (after a
	// restart, the checkpoint's).
	Applied() (index, term uint64)

	// Capture takes the state as of the applied index, with blob (the
	// replication state to restore with it), without I/O; its Write makes
	// it durable later, off the loop, while apply goes on.
	Capture(blob []byte) *engine.StateCapture
}

var _ StateMachine = (*engine.Store)(nil)

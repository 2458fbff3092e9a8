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

	// AppendEntryHeader appends to dst what starts an entry this node
	// proposes at leader time leaderTimeMs (Unix ms): the state machine's
	// own header (for Keel's, the version of its apply rules and the
	// limits that change them). The commands follow it.
	AppendEntryHeader(dst []byte, leaderTimeMs int64) []byte

	// Snapshots (snapshot.go): the leader reads its last checkpoint and
	// the files that go with it; a follower stages them and installs them
	// with its own replication blob.
	SnapshotManifest() (state []byte, files []engine.SnapshotFile, err error)
	ReadSnapshotFile(f engine.SnapshotFile, off int64, buf []byte) (int, error)
	BeginSnapshot() (*engine.SnapshotStaging, error)
	InstallSnapshot(g *engine.SnapshotStaging, blob []byte) error
}

// Command is what Propose takes: a state-machine command that encodes
// itself. Replication never reads the encoding; it assigns each proposal
// a request id, which the state machine hands back in the Result of
// applying it, so the proposer is answered.
type Command interface {
	// AppendTo appends the encoding of the command carrying reqID to dst.
	AppendTo(dst []byte, reqID uint64) []byte
}

var _ StateMachine = (*engine.Store)(nil)

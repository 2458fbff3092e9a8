// Package engine is Keel's state machine: it applies committed Raft
// entries to topics, partitions, consumer offsets and the idempotency
// table, deterministically (the leader's time and the limits travel in
// each entry), and writes the state checkpoint that bounds recovery.
//
// Layers, each its own package:
//   - engine/record: the record codec (frames, message payloads), pure;
//   - engine/logstore: the log store (segments, index, reads, recovery,
//     truncation); each partition is a logstore.Log;
//   - engine/vfs: the metadata I/O seam, given in StoreConfig.FS;
//   - engine (this package): the entry and command encoding (command.go),
//     apply (apply.go), the state checkpoint (state.go), leaving room for
//     KV and retention beside them.
//
// engine imports ring, invariant and its own sub-packages (and the
// standard library).
package engine

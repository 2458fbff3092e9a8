// Package engine is Keel's state machine: it applies committed Raft
// entries to topics, partitions, consumer offsets, the idempotency
// table, retention (log starts and policies) and the KV store,
// deterministically (the leader's time and the limits travel in
// each entry), and writes the state checkpoint that bounds recovery.
//
// Layers, each its own package:
//   - engine/record: the record codec (frames, message payloads), pure;
//   - engine/logstore: the log store (segments, index, reads, recovery,
//     truncation); each partition is a logstore.Log;
//   - engine/vfs: the metadata I/O seam, given in StoreConfig.FS;
//   - engine (this package): the entry and command encoding (command.go),
//     apply (apply.go), the state checkpoint (state.go), retention and the
//     janitor that deletes segment files below log starts (retention.go),
//     the KV store (kv.go), snapshots (snapshot.go).
//
// engine imports ring, invariant and its own sub-packages (and the
// standard library).
package engine

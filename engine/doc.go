// Package engine stores logs of framed records on segment files and makes
// appends durable through a group-commit writer.
//
// Contract:
//   - A Log is a sequence of records with dense offsets start, start+1, ...
//     kept in segment files that roll at LogConfig.SegmentBytes and are then
//     sealed (immutable, with a sparse index file beside them).
//   - Every record is a frame (format.go): length, CRC32C, type, flags,
//     batch, offset, payload, 8-byte aligned; zeroed bytes never decode.
//   - Writer.Append returns only once its records are fdatasynced. Appends
//     that wait together share one write and one fdatasync (group commit).
//   - A storage fault (failed write or fsync) is sticky: the Log refuses every
//     later append with the first fault, and fsync is never retried.
//   - OpenLog recovers: it fsyncs the directory and the tail segment before
//     reading them, loads the checkpoint, classifies the tail with one
//     decision table (recovery.go), cuts and zeroes a torn tail, and refuses
//     to start with a CorruptionError when data that an fsync vouched for no
//     longer decodes. Sealed segments are trusted through their index files,
//     so opening costs one scan of the active segment, not of all data.
//   - Reads never return bytes that fail their CRC and never see records
//     whose append has not completed.
//
// The same frames and Log serve partition segments (RecordMessage) and the
// Raft WAL (RecordRaftEntry, RecordRaftState). The Raft loop is the WAL's
// only appender and already batches everything waiting into one Ready, so
// it calls Log.AppendBatch directly: a Ready's entries and HardState are one
// batch with one fsync. Writer is the group-commit front for logs with many
// concurrent appenders and no Raft loop in front (benchmarked by
// BenchmarkWriterAppend).
//
// The state machine (Store) lives here too: it applies committed entries to
// partitions, consumer offsets and the idempotency table, deterministically,
// and writes the state checkpoint that bounds recovery.
//
// engine imports only ring (and the standard library).
package engine

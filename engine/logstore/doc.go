// Package logstore stores logs of framed records on segment files: the
// Raft WAL and every partition of Keel are a Log.
//
// Contract:
//   - A Log is a sequence of records with dense offsets start, start+1, ...
//     kept in segment files that roll at LogConfig.SegmentBytes and are then
//     sealed (immutable, with a sparse index file beside them: offsets to
//     positions, and the newest timestamp before each entry, the time
//     index of Log.OffsetForTime). The start moves up only by
//     DeleteBefore, AdvanceStart (no I/O; the caller deletes the detached
//     segments) or DropSegmentsBefore. Sealed
//     segments keep no descriptor of their own: their files are opened on
//     demand through a bounded, process-wide cache (filecache.go).
//   - Every record is a frame of package engine/record: length, CRC32C, type,
//     flags, batch, offset, payload, 8-byte aligned; zeroed bytes never decode.
//   - Log.AppendBatch writes one batch with one write and, when asked, one
//     fdatasync. The caller is the group commit: replication writes every
//     Raft append waiting for the WAL as one batch (its loop, or its
//     appender goroutine in a cluster); partition logs are appended without
//     an fsync per batch (the WAL is their durable copy).
//   - A storage fault (failed write or fsync) is sticky: the Log refuses every
//     later append with the first fault, and fsync is never retried.
//   - OpenLog recovers: it fsyncs the directory and the tail segment before
//     reading them, loads the log's durable mark, classifies the tail with
//     one decision table (recovery.go), cuts and zeroes a torn tail, and
//     refuses to start with a CorruptionError when data that an fsync
//     vouched for no longer decodes. Sealed segments are trusted through
//     their index files, so opening costs one scan of the active segment.
//   - Reads never return bytes that fail their CRC and never see records
//     whose append has not completed.
//   - Metadata I/O (directories, index files, durable marks, renames) goes
//     through LogConfig.FS (package engine/vfs); segment data through
//     ring.Backend.
//
// logstore imports ring, invariant, engine/record and engine/vfs (and the
// standard library).
package logstore

package logstore

import (
	"fmt"

	"keel/engine/record"
	"keel/engine/vfs"
)

// LogConfig holds a Log's limits. Zero fields take the defaults below;
// validate rejects values outside the limits.
type LogConfig struct {
	// SegmentBytes is the size at which the active segment is sealed and a
	// new one started.
	SegmentBytes int64
	// IndexIntervalBytes is the spacing of sparse index entries.
	IndexIntervalBytes int64
	// MarkIntervalBytes is how many bytes may be appended (with fsync)
	// after the last durable mark before the next one is written; it bounds
	// what recovery must re-validate as unvouched tail.
	MarkIntervalBytes int64
	// BatchBytesMax bounds one group commit (and so one write + fdatasync).
	BatchBytesMax int
	// TailUnordered says batches after the last checkpoint were written
	// without an fsync between them: partition segments (rebuilt from the
	// Raft WAL) and the WAL in rocket mode (which promises no durability).
	// Page-cache writeback is not ordered, so such a tail may be damaged in
	// the middle; recovery then cuts at the first bad frame instead of
	// refusing to start. Damage in vouched bytes still refuses.
	TailUnordered bool
	// DeferDirSync: when OpenLog creates the log (its directory did not
	// exist), the new directories and first segment file are not fsynced
	// and no durable mark is written; the state capture syncs them before
	// the state checkpoint names the log. For partition logs, which the Raft WAL
	// rebuilds after a crash: creating a topic then costs no fsync on the
	// apply loop (it cost ~2.3 ms per partition, so a flood of new topic
	// names stalled every write).
	DeferDirSync bool
	// WriteBehindBytes: once this many bytes were appended without a sync,
	// their writeback is started (sync_file_range, SYNC_FILE_RANGE_WRITE;
	// it does not wait). Dirty pages then reach the disk in a steady
	// trickle instead of piling up until a checkpoint's fsync or the
	// kernel's periodic writeback flushes them in one burst, which stalls
	// the WAL's fdatasyncs on the same disk for tens of milliseconds.
	// 0 takes the default (1 MiB); negative turns it off.
	WriteBehindBytes int64
	// FS does the log's metadata I/O (vfs.Default when nil).
	FS vfs.FS
}

const (
	segmentBytesDefault       = 64 << 20
	segmentBytesLimit         = 1 << 30 // index positions are 32-bit
	segmentBytesMin           = 4 << 10
	indexIntervalBytesDefault = 4 << 10
	markIntervalBytesDefault  = 8 << 20
	batchBytesMaxDefault      = 8 << 20
	writeBehindBytesDefault   = 1 << 20
)

func (c LogConfig) WithDefaults() LogConfig {
	c.FS = vfs.OrDefault(c.FS)
	if c.SegmentBytes == 0 {
		c.SegmentBytes = segmentBytesDefault
	}
	if c.IndexIntervalBytes == 0 {
		c.IndexIntervalBytes = indexIntervalBytesDefault
	}
	if c.MarkIntervalBytes == 0 {
		c.MarkIntervalBytes = markIntervalBytesDefault
	}
	if c.BatchBytesMax == 0 {
		c.BatchBytesMax = batchBytesMaxDefault
	}
	if c.WriteBehindBytes == 0 {
		c.WriteBehindBytes = writeBehindBytesDefault
	}
	return c
}

func (c LogConfig) Validate() error {
	switch {
	case c.SegmentBytes < segmentBytesMin || c.SegmentBytes > segmentBytesLimit:
		return fmt.Errorf("engine: SegmentBytes %d outside [%d, %d]", c.SegmentBytes, segmentBytesMin, segmentBytesLimit)
	case c.IndexIntervalBytes < record.Align:
		return fmt.Errorf("engine: IndexIntervalBytes %d below %d", c.IndexIntervalBytes, record.Align)
	case c.MarkIntervalBytes < 1:
		return fmt.Errorf("engine: MarkIntervalBytes %d must be positive", c.MarkIntervalBytes)
	case c.BatchBytesMax < record.HeaderBytes || int64(c.BatchBytesMax) > c.SegmentBytes:
		return fmt.Errorf("engine: BatchBytesMax %d outside [%d, SegmentBytes=%d]", c.BatchBytesMax, record.HeaderBytes, c.SegmentBytes)
	}
	return nil
}

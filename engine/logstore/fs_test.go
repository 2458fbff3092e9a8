package logstore

import (
	"errors"
	"syscall"
	"testing"

	"keel/engine/vfs/vfstest"
)

// TestMetadataFaults: a failure of the log's metadata I/O surfaces as an
// error that keeps its cause, and a log that met one refuses later appends
// (sticky).
func TestMetadataFaults(t *testing.T) {
	t.Run("index file at a roll", func(t *testing.T) {
		ffs := vfstest.NewFaultFS(nil)
		l := mustOpen(t, t.TempDir(), openBackend(t, "syscall"),
			LogConfig{FS: ffs, SegmentBytes: 4 << 10, IndexIntervalBytes: 512, BatchBytesMax: 4 << 10, MarkIntervalBytes: 8 << 10})
		defer l.Close()
		ffs.FailOn("WriteFileSync", indexSuffix, syscall.EIO)
		var err error
		for off := uint64(0); off < 200 && err == nil; off++ {
			_, _, err = l.AppendBatch([]Record{messageRecord(off)}, false)
		}
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("a roll whose index file cannot be written: %v", err)
		}
		ffs.FailOn("", "", nil)
		if _, _, err := l.AppendBatch([]Record{messageRecord(999)}, false); err == nil {
			t.Fatal("the log took an append after a storage fault (it must be sticky)")
		}
	})
	t.Run("directory fsync at open", func(t *testing.T) {
		ffs := vfstest.NewFaultFS(nil)
		dir := t.TempDir()
		l := mustOpen(t, dir, openBackend(t, "syscall"), LogConfig{FS: ffs})
		l.Close()
		ffs.FailOn("SyncDir", dir, syscall.EIO)
		if _, err := OpenLog(dir, openBackend(t, "syscall"), LogConfig{FS: ffs}); !errors.Is(err, syscall.EIO) {
			t.Fatalf("open with a failing directory fsync: %v", err)
		}
	})
}

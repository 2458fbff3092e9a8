package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"keel/engine/record"
	"keel/engine/vfs"
	"keel/ring"
)

func fillLog(t *testing.T, l *Log, n uint64) {
	t.Helper()
	for off := l.NextOffset(); off < n; off++ {
		if _, _, err := l.AppendBatch([]Record{messageRecord(off)}, off%7 == 0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTruncateTo(t *testing.T) {
	cfg := LogConfig{SegmentBytes: 4096, IndexIntervalBytes: 256, BatchBytesMax: 4096}
	cases := []struct {
		name        string
		total, next uint64
	}{
		{"inside the active segment", 200, 198},
		{"nothing to cut", 200, 200},
		{"past the end is a no-op", 200, 500},
		{"into a sealed segment", 200, 30},
		{"to the first record", 200, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			io := openBackend(t, "syscall")
			l := mustOpen(t, dir, io, cfg)
			fillLog(t, l, tc.total)
			if err := l.TruncateTo(tc.next); err != nil {
				t.Fatal(err)
			}
			want := min(tc.next, tc.total)
			check := func(l *Log) {
				t.Helper()
				if l.NextOffset() != want {
					t.Fatalf("NextOffset %d, want %d", l.NextOffset(), want)
				}
				got := readAll(t, l, 0)
				if uint64(len(got)) != want {
					t.Fatalf("read %d records, want %d", len(got), want)
				}
				for off, p := range got {
					if !bytes.Equal(p, payloadFor(off)) {
						t.Fatalf("offset %d differs", off)
					}
				}
			}
			check(l)
			// Appends continue at the cut, across a reopen too.
			fillLog(t, l, want+50)
			want += 50
			check(l)
			l.abandon()
			l2 := mustOpen(t, dir, io, cfg)
			defer l2.Close()
			check(l2)
		})
	}
}

func TestDeleteBefore(t *testing.T) {
	cfg := LogConfig{SegmentBytes: 4096, IndexIntervalBytes: 256, BatchBytesMax: 4096}
	dir := t.TempDir()
	io := openBackend(t, "syscall")
	l := mustOpen(t, dir, io, cfg)
	fillLog(t, l, 300)
	before, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	cases := []struct {
		offset, wantStart, wantDeleted uint64
	}{
		{100, 100, 100},
		{50, 100, 0}, // never moves down
		{250, 250, 150},
		{999, 300, 50}, // never past the end
	}
	for _, tc := range cases {
		deleted, _, err := l.DeleteBefore(tc.offset)
		if err != nil || deleted != tc.wantDeleted || l.StartOffset() != tc.wantStart {
			t.Fatalf("DeleteBefore(%d): deleted %d start %d err %v; want %d, %d",
				tc.offset, deleted, l.StartOffset(), err, tc.wantDeleted, tc.wantStart)
		}
	}
	after, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	if len(after) >= len(before) || len(after) < 1 {
		t.Fatalf("segments %d before, %d after: want whole segments deleted", len(before), len(after))
	}
	// Reading below the start reads from the start; the start survives a reopen.
	if got := readAll(t, l, 0); len(got) != 0 {
		t.Fatalf("read %d records with the start at the end", len(got))
	}
	fillLog(t, l, 320)
	l.abandon()
	l2 := mustOpen(t, dir, io, cfg)
	defer l2.Close()
	if l2.StartOffset() != 300 || l2.NextOffset() != 320 {
		t.Fatalf("after reopen: start %d next %d, want 300 and 320", l2.StartOffset(), l2.NextOffset())
	}
	got := readAll(t, l2, 0)
	if len(got) != 20 {
		t.Fatalf("read %d records from 0, want the 20 from the start on", len(got))
	}
	for off := uint64(300); off < 320; off++ {
		if !bytes.Equal(got[off], payloadFor(off)) {
			t.Fatalf("offset %d lost", off)
		}
	}
}

// TestTailUnorderedCutsDamagedTail checks the partition policy: damage in
// the unvouched tail is cut even when later batches follow, because the WAL
// will re-apply them.
func TestTailUnorderedCutsDamagedTail(t *testing.T) {
	sc := buildScenario(t, 4, false)
	mutateFile(t, sc.active, func(b []byte) []byte { b[sc.batchStart[1]+record.HeaderBytes] ^= 0xff; return b })
	l, err := OpenLog(sc.dir, openBackend(t, "syscall"), LogConfig{TailUnordered: true})
	if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	defer l.Close()
	if l.NextOffset() != 3 || l.Recovery().CutBytes == 0 {
		t.Fatalf("NextOffset %d, report %+v; want the log cut after the first batch", l.NextOffset(), l.Recovery())
	}
}

// TestTruncateCrashAfterCheckpoint stops TruncateTo right after its first
// step (the lowered checkpoint), as a crash would: recovery must accept
// the files and a second TruncateTo must finish the cut.
func TestTruncateCrashAfterCheckpoint(t *testing.T) {
	cfg := LogConfig{SegmentBytes: 4096, IndexIntervalBytes: 256, BatchBytesMax: 4096}
	for _, next := range []uint64{30, 195} { // into a sealed segment; inside the active one
		dir := t.TempDir()
		io := openBackend(t, "syscall")
		l := mustOpen(t, dir, io, cfg)
		fillLog(t, l, 200)
		keep := l.segmentsBelow(next)
		target := l.segs[keep-1]
		pos, err := l.positionOf(target, next)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.writeDurableMarkOf(durableMark{ActiveBase: target.base, VouchedBytes: pos, NextOffset: next, Batch: l.batch}); err != nil {
			t.Fatal(err)
		}
		l.abandon()
		l2, err := OpenLog(dir, io, cfg)
		if err != nil {
			t.Fatalf("next %d: recovery after a cut-short truncation: %v", next, err)
		}
		if err := l2.TruncateTo(next); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, l2, 0); uint64(len(got)) != next || l2.NextOffset() != next {
			t.Fatalf("next %d: %d records after finishing the truncation", next, len(got))
		}
		l2.Close()
	}
}

// TestReadLengthPastSegmentEnd: a damaged length field in a sealed
// segment (trusted through its index) must fail the read, not spin.
func TestReadLengthPastSegmentEnd(t *testing.T) {
	dir := t.TempDir()
	io := openBackend(t, "syscall")
	cfg := LogConfig{SegmentBytes: 4096, BatchBytesMax: 4096}
	l := mustOpen(t, dir, io, cfg)
	fillLog(t, l, 120)
	l.Close()
	mutateFile(t, filepath.Join(dir, segmentName(0)), func(b []byte) []byte { b[1] = 0x40; return b }) // length += 16 KiB
	l = mustOpen(t, dir, io, cfg)
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		_, err := l.Read(0, 1<<20, func(Frame) bool { return true })
		done <- err
	}()
	select {
	case err := <-done:
		var ce *CorruptionError
		if !errors.As(err, &ce) {
			t.Fatalf("Read: %v, want a CorruptionError", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read spins on a length past the segment end")
	}
}

// countingBackend counts Sync calls.
type countingBackend struct {
	ring.Backend
	syncs int
}

func (c *countingBackend) Sync(fd int) error {
	c.syncs++
	return c.Backend.Sync(fd)
}

// TestActiveSyncerSkipsIdleLogs: a checkpoint fsyncs a partition only when
// something was written since its last sync.
func TestActiveSyncerSkipsIdleLogs(t *testing.T) {
	cb := &countingBackend{Backend: openBackend(t, "syscall")}
	l := mustOpen(t, t.TempDir(), cb, LogConfig{})
	defer l.Close()
	run := func() int {
		before := cb.syncs
		if err := l.ActiveSyncer()(); err != nil {
			t.Fatal(err)
		}
		return cb.syncs - before
	}
	if _, _, err := l.AppendBatch([]Record{messageRecord(0)}, false); err != nil {
		t.Fatal(err)
	}
	if n := run(); n != 1 {
		t.Fatalf("after an unsynced append: %d syncs, want 1", n)
	}
	if n := run(); n != 0 {
		t.Fatalf("idle log: %d syncs, want 0", n)
	}
	if _, _, err := l.AppendBatch([]Record{messageRecord(1)}, true); err != nil {
		t.Fatal(err)
	}
	if n := run(); n != 0 {
		t.Fatalf("after a synced append: %d syncs, want 0", n)
	}
	if _, _, err := l.AppendBatch([]Record{messageRecord(2)}, false); err != nil {
		t.Fatal(err)
	}
	if n := run(); n != 1 {
		t.Fatalf("after another unsynced append: %d syncs, want 1", n)
	}
}

func TestRemoveGently(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{0, 100, removeStepBytes, 3*removeStepBytes + 12345} {
		path := filepath.Join(dir, fmt.Sprint("seg-", size, ".tmp"))
		if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := removeGently(vfs.Default, path); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("size %d: file still there: %v", size, err)
		}
	}
	if err := removeGently(vfs.Default, filepath.Join(dir, "missing.tmp")); err == nil {
		t.Fatal("removing a missing file: no error")
	}
}

// TestDropInterrupted: a crash in DropSegmentsBefore after a segment was
// renamed out of the log (index removed, segment now .tmp, directory
// synced) but before it was freed leaves a log that opens at the next
// segment, with the leftover removed.
func TestDropInterrupted(t *testing.T) {
	dir := t.TempDir()
	io := openBackend(t, ring.KindSyscall)
	cfg := LogConfig{SegmentBytes: 4 << 10, BatchBytesMax: 4 << 10}
	l := mustOpen(t, dir, io, cfg)
	rec := []Record{{Type: RecordMessage, Payload: make([]byte, 1000)}}
	for range 12 {
		if _, _, err := l.AppendBatch(rec, true); err != nil {
			t.Fatal(err)
		}
	}
	l.mu.RLock()
	first, second := l.segs[0].base, l.segs[1].base
	l.mu.RUnlock()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// What DropSegmentsBefore had done when the crash came.
	if err := os.Remove(filepath.Join(dir, indexName(first))); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, segmentName(first)), filepath.Join(dir, segmentName(first)+".tmp")); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpen(t, dir, io, cfg)
	defer l2.Close()
	if l2.StartOffset() != second || l2.NextOffset() != 12 {
		t.Fatalf("after the interrupted drop: offsets %d..%d, want %d..12", l2.StartOffset(), l2.NextOffset(), second)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Fatalf("leftover not removed: %v", left)
	}
}

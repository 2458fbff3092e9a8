package logstore

import (
	"bytes"
	"os"
	"sync"
	"testing"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestSealedFilesBounded: a log of many sealed segments holds at most the
// cache's bound of descriptors for them, while readers (concurrent ones
// too) still read every record, after a restart as well, and a truncation
// into an evicted sealed segment makes it active again with its file.
func TestSealedFilesBounded(t *testing.T) {
	const bound = 3
	SetSealedFilesMax(bound)
	defer SetSealedFilesMax(SealedFilesMaxDefault)
	io := openBackend(t, "syscall")
	dir := t.TempDir()
	cfg := LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 512, BatchBytesMax: 4 << 10, MarkIntervalBytes: 8 << 10}
	before := openFDs(t)
	l := mustOpen(t, dir, io, cfg)
	const n = 2000
	for off := uint64(0); off < n; off += 10 {
		recs := make([]Record, 10)
		for i := range recs {
			recs[i] = messageRecord(off + uint64(i))
		}
		if _, _, err := l.AppendBatch(recs, false); err != nil {
			t.Fatal(err)
		}
	}
	if segs := len(l.segs); segs < 20 {
		t.Fatalf("only %d segments: the test needs many sealed ones", segs)
	}
	check := func(l *Log, what string) {
		var wg sync.WaitGroup
		for r := 0; r < 4; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := readAll(t, l, 0)
				if len(got) != n {
					t.Errorf("%s: read %d records, want %d", what, len(got), n)
				}
				for off, p := range got {
					if !bytes.Equal(p, payloadFor(off)) {
						t.Errorf("%s: record %d differs", what, off)
						return
					}
				}
			}()
		}
		wg.Wait()
		// The active segment and at most bound sealed ones are open.
		if open, _, _ := SealedFilesStats(); open > bound {
			t.Fatalf("%s: %d sealed files open, bound %d", what, open, bound)
		}
		if got := openFDs(t) - before; got > bound+1+2 { // + the active segment, + slack for the runtime
			t.Fatalf("%s: %d descriptors held for %d segments", what, got, len(l.segs))
		}
	}
	check(l, "written")
	if _, opens, evictions := SealedFilesStats(); opens == 0 || evictions == 0 {
		t.Fatalf("the cache never reopened or evicted (opens %d, evictions %d)", opens, evictions)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, io, cfg)
	check(l, "reopened")
	// Truncate into the first (long evicted) sealed segment.
	if err := l.TruncateTo(5); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.AppendBatch([]Record{messageRecord(5)}, true); err != nil {
		t.Fatalf("append after truncating into a sealed segment: %v", err)
	}
	if got := readAll(t, l, 0); len(got) != 6 {
		t.Fatalf("after truncation: %d records, want 6", len(got))
	}
	l.Close()
}

// TestCheckpointSyncerAfterEviction: a checkpoint's fsync of the segment
// that was active at capture still works after that segment was sealed
// and the cache closed its file (it once failed with EBADF: a storage
// fault from a healthy disk).
func TestCheckpointSyncerAfterEviction(t *testing.T) {
	SetSealedFilesMax(1)
	defer SetSealedFilesMax(SealedFilesMaxDefault)
	l := mustOpen(t, t.TempDir(), openBackend(t, "syscall"),
		LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 512, BatchBytesMax: 4 << 10, MarkIntervalBytes: 8 << 10})
	defer l.Close()
	appendN := func(from, n uint64) {
		for off := from; off < from+n; off++ {
			if _, _, err := l.AppendBatch([]Record{messageRecord(off)}, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(0, 5)
	syncer := l.ActiveSyncer() // the checkpoint captured now; its fsync runs later
	appendN(5, 300)            // rolls past that segment, many times
	readAll(t, l, 0)           // reads every sealed segment: the cache evicts the first
	if err := syncer(); err != nil {
		t.Fatalf("the checkpoint's fsync after the segment was sealed and evicted: %v", err)
	}
}

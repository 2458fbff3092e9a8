package logstore

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"keel/engine/record"
	"keel/engine/vfs"
	"keel/ring"
)

// timedLog is a log of n messages where record o has timestamp ts(o),
// in small segments, one record per batch.
func timedLog(t *testing.T, dir string, n uint64, ts func(uint64) int64) *Log {
	t.Helper()
	l := mustOpen(t, dir, openBackend(t, ring.KindSyscall), LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 1 << 10})
	for o := range n {
		p := record.AppendMessage(nil, ts(o), nil, payloadFor(o)[:min(100, len(payloadFor(o)))])
		if _, _, err := l.AppendBatch([]Record{{Type: RecordMessage, Payload: p}}, false); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// firstAtOrAfter is OffsetForTime by brute force.
func firstAtOrAfter(start, n uint64, ts func(uint64) int64, at int64) (uint64, bool) {
	for o := start; o < n; o++ {
		if ts(o) >= at {
			return o, true
		}
	}
	return 0, false
}

func TestOffsetForTime(t *testing.T) {
	const n = 600
	cases := []struct {
		name string
		ts   func(uint64) int64
	}{
		{"increasing", func(o uint64) int64 { return 1000 + 10*int64(o) }},
		{"equal runs", func(o uint64) int64 { return 1000 + 100*int64(o/50) }},
		// A leader change whose clock is behind: time steps back once.
		{"steps back", func(o uint64) int64 {
			if o >= 300 {
				return 1000 + 10*int64(o) - 2500
			}
			return 1000 + 10*int64(o)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := timedLog(t, dir, n, tc.ts)
			if got := len(l.Segments()); got < 5 {
				t.Fatalf("%d segments, want several", got)
			}
			check := func(l *Log, start uint64) {
				t.Helper()
				for at := int64(900); at < 1000+10*n+50; at += 7 {
					want, wantOK := firstAtOrAfter(start, n, tc.ts, at)
					got, ok, err := l.OffsetForTime(at)
					if err != nil || ok != wantOK || ok && got != want {
						t.Fatalf("OffsetForTime(%d) = %d, %v, %v; want %d, %v", at, got, ok, err, want, wantOK)
					}
				}
			}
			check(l, 0)
			// The time index survives a reopen (sealed segments from their
			// index files, the active one from its scan).
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = mustOpen(t, dir, openBackend(t, ring.KindSyscall), LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 1 << 10})
			defer l.Close()
			check(l, 0)
			if _, _, err := l.AdvanceStart(123); err != nil {
				t.Fatal(err)
			}
			check(l, 123)
		})
	}
}

func TestOldIndexFileRebuilt(t *testing.T) {
	dir := t.TempDir()
	ts := func(o uint64) int64 { return 5000 + int64(o) }
	l := timedLog(t, dir, 200, ts)
	segs := l.Segments()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite the first index file in format 0 (no timestamps).
	path := filepath.Join(dir, indexName(segs[0].Base))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fr, _, err := record.DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	old := append([]byte(nil), fr.Payload[:24]...)
	binary.LittleEndian.PutUint32(old[20:24], 0)
	for q := fr.Payload[indexFileHeaderBytes:]; len(q) > 0; q = q[indexFileEntryBytes:] {
		old = append(old, q[:8]...)
	}
	if err := os.WriteFile(path, record.AppendFrame(nil, Frame{Type: record.TypeIndex, Flags: record.FlagBatchEnd, Offset: segs[0].Base, Payload: old}), 0o644); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, openBackend(t, ring.KindSyscall), LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 1 << 10})
	defer l.Close()
	if got := l.Segments()[0].MaxTimestampMs; got != ts(segs[0].Next-1) {
		t.Fatalf("first segment's newest timestamp after the rebuild: %d, want %d", got, ts(segs[0].Next-1))
	}
	if info, err := readIndexFile(vfs.Default, path, segs[0].Base, 256); err != nil || info.index.maxTs != ts(segs[0].Next-1) {
		t.Fatalf("index file not rewritten in the current format: %v", err)
	}
}

func TestAdvanceStart(t *testing.T) {
	dir := t.TempDir()
	l := timedLog(t, dir, 500, func(o uint64) int64 { return int64(o) })
	segs := l.Segments()
	cut := segs[2].Base + 3 // inside the third segment
	moved, d, err := l.AdvanceStart(cut)
	if err != nil || moved != cut {
		t.Fatalf("AdvanceStart(%d) moved %d, %v", cut, moved, err)
	}
	if d.Len() != 2 || d.Bytes() != segs[0].Bytes+segs[1].Bytes {
		t.Fatalf("detached %d segments of %d bytes, want 2 of %d", d.Len(), d.Bytes(), segs[0].Bytes+segs[1].Bytes)
	}
	// Reads below the start begin at it, also with the files still there.
	got := readAll(t, l, 0)
	if _, ok := got[cut]; !ok || len(got) != int(500-cut) {
		t.Fatalf("read %d records from 0, want %d from %d", len(got), 500-cut, cut)
	}
	// Never down; a second call detaches nothing more.
	if moved, d2, err := l.AdvanceStart(5); err != nil || moved != 0 || d2.Len() != 0 {
		t.Fatalf("AdvanceStart down: moved %d, detached %d, %v", moved, d2.Len(), err)
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, s := range segs[:2] {
		if _, err := os.Stat(filepath.Join(dir, segmentName(s.Base))); !os.IsNotExist(err) {
			t.Fatalf("segment %d still on disk: %v", s.Base, err)
		}
	}
	// Past the end: clamped to it.
	if moved, _, err := l.AdvanceStart(1 << 40); err != nil || moved != 500-cut || l.StartOffset() != 500 {
		t.Fatalf("AdvanceStart past the end: moved %d, start %d, %v", moved, l.StartOffset(), err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// After a reopen the start is the durable mark's (Close wrote it).
	l = mustOpen(t, dir, openBackend(t, ring.KindSyscall), LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 1 << 10})
	defer l.Close()
	if l.StartOffset() != 500 || l.NextOffset() != 500 {
		t.Fatalf("after reopen: start %d, next %d; want 500, 500", l.StartOffset(), l.NextOffset())
	}
}

func TestReadAcrossRemovedSegment(t *testing.T) {
	dir := t.TempDir()
	l := timedLog(t, dir, 300, func(o uint64) int64 { return int64(o) })
	defer l.Close()
	segs := l.Segments()
	// A reader in the first segment while it is detached and removed
	// goes on from the new start instead of failing.
	var offsets []uint64
	removed := false
	_, err := l.Read(0, 1<<20, func(fr Frame) bool {
		offsets = append(offsets, fr.Offset)
		if !removed {
			removed = true
			_, d, err := l.AdvanceStart(segs[1].Next)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Remove(); err != nil {
				t.Fatal(err)
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("read across a removed segment: %v", err)
	}
	if last := offsets[len(offsets)-1]; last != 299 {
		t.Fatalf("read ended at %d, want 299", last)
	}
	for i := 1; i < len(offsets); i++ {
		if offsets[i] <= offsets[i-1] {
			t.Fatalf("offsets out of order: %d after %d", offsets[i], offsets[i-1])
		}
	}
}

// TruncateTo below the start (the start moved past a state checkpoint's
// end after it was taken) leaves an empty log at that offset, also when a
// crash cut the reset short at each of its steps.
func TestTruncateBelowStart(t *testing.T) {
	cfg := LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 1 << 10}
	for _, crash := range []string{"none", "after the first mark", "segments gone", "new segment, old mark"} {
		t.Run(crash, func(t *testing.T) {
			dir := t.TempDir()
			l := timedLog(t, dir, 300, func(o uint64) int64 { return int64(o) })
			segs := l.Segments()
			if _, _, err := l.AdvanceStart(segs[3].Base + 2); err != nil {
				t.Fatal(err)
			}
			next := segs[1].Base + 5 // below the start
			switch crash {
			case "none":
				if err := l.TruncateTo(next); err != nil {
					t.Fatal(err)
				}
				l.Close()
			default:
				// Stop the process at the step: the mark as resetEmptyAt
				// writes it first, then the files as the step left them.
				l.appendMu.Lock()
				if err := l.writeDurableMarkOf(durableMark{ActiveBase: min(l.active().base, next), NextOffset: next, Batch: l.batch, StartOffset: next}); err != nil {
					t.Fatal(err)
				}
				l.appendMu.Unlock()
				l.mu.Lock()
				l.closeFiles()
				l.mu.Unlock()
				if crash != "after the first mark" {
					for _, s := range segs {
						os.Remove(filepath.Join(dir, segmentName(s.Base)))
						os.Remove(filepath.Join(dir, indexName(s.Base)))
					}
				}
				if crash == "new segment, old mark" {
					if err := os.WriteFile(filepath.Join(dir, segmentName(next)), nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			l = mustOpen(t, dir, openBackend(t, ring.KindSyscall), cfg)
			defer l.Close()
			if err := l.TruncateTo(next); err != nil { // what recovery does again
				t.Fatal(err)
			}
			if l.StartOffset() != next || l.NextOffset() != next {
				t.Fatalf("after reset: start %d, end %d; want %d, %d", l.StartOffset(), l.NextOffset(), next, next)
			}
			p := record.AppendMessage(nil, 1, nil, []byte("again"))
			if first, _, err := l.AppendBatch([]Record{{Type: RecordMessage, Payload: p}}, true); err != nil || first != next {
				t.Fatalf("append after reset: first %d, %v", first, err)
			}
			if got := readAll(t, l, 0); len(got) != 1 {
				t.Fatalf("read %d records after reset, want 1", len(got))
			}
		})
	}
}

func TestReadOne(t *testing.T) {
	l := timedLog(t, t.TempDir(), 300, func(o uint64) int64 { return int64(o) })
	defer l.Close()
	if _, _, err := l.AdvanceStart(50); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		offset uint64
		found  bool
	}{{0, false}, {49, false}, {50, true}, {123, true}, {299, true}, {300, false}, {1 << 40, false}} {
		var got uint64
		var ts int64
		found, err := l.ReadOne(tc.offset, func(fr Frame) { got, ts = fr.Offset, frameTime(fr) })
		if err != nil || found != tc.found || found && (got != tc.offset || ts != int64(tc.offset)) {
			t.Fatalf("ReadOne(%d) = %v (offset %d, time %d), %v; want found %v", tc.offset, found, got, ts, err, tc.found)
		}
	}
}

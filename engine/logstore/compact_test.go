package logstore

import (
	"os"
	"path/filepath"
	"testing"

	"keel/engine/record"
	"keel/ring"
)

// TestCompact: dropped records become holes; every kept record reads back
// at its offset, before and after a reopen (from the index file, and
// from a scan when the index file is gone); readers, time lookups and
// point reads skip the holes; a second compaction merges runs.
func TestCompact(t *testing.T) {
	cfg := LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 1 << 10}
	dir := t.TempDir()
	const n = 600
	l := timedLog(t, dir, n, func(o uint64) int64 { return int64(o) })
	before := l.Bytes()
	dropOdd := func(fr Frame) (bool, bool) { return fr.Offset%2 == 1, false }
	st, err := l.Compact(400, nil, dropOdd)
	if err != nil {
		t.Fatal(err)
	}
	if st.Segments == 0 || st.Removed == 0 || st.BytesAfter >= st.BytesBefore || l.Bytes() >= before {
		t.Fatalf("compaction did nothing: %+v, %d bytes before, %d after", st, before, l.Bytes())
	}
	check := func(l *Log, how string) {
		t.Helper()
		got := map[uint64]bool{}
		next, err := l.Read(0, 1<<30, func(fr Frame) bool {
			got[fr.Offset] = true
			return true
		})
		if err != nil || next != n {
			t.Fatalf("%s: read to %d, %v", how, next, err)
		}
		segs := l.Segments()
		compactedEnd := uint64(0)
		for _, s := range segs {
			if s.Next <= 400 {
				compactedEnd = s.Next
			}
		}
		for o := uint64(0); o < n; o++ {
			want := o >= compactedEnd || o%2 == 0
			if got[o] != want {
				t.Fatalf("%s: offset %d read %v, want %v (compacted below %d)", how, o, got[o], want, compactedEnd)
			}
			found, err := l.ReadOne(o, func(Frame) {})
			if err != nil || found != want {
				t.Fatalf("%s: ReadOne(%d) = %v, %v", how, o, found, err)
			}
		}
		// The first record at or after an odd time inside the compacted
		// range is the next even one.
		if off, ok, err := l.OffsetForTime(101); err != nil || !ok || off != 102 {
			t.Fatalf("%s: OffsetForTime(101) = %d %v %v", how, off, ok, err)
		}
		if l.NextOffset() != n {
			t.Fatalf("%s: end %d", how, l.NextOffset())
		}
	}
	check(l, "compacted")
	// Again: nothing more to gain from odd offsets; dropping every
	// multiple of 4 too merges with the runs.
	if _, err := l.Compact(400, nil, func(fr Frame) (bool, bool) { return fr.Offset%4 == 2, false }); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = mustOpen(t, dir, openBackend(t, ring.KindSyscall), cfg)
	got := readKept(t, l)
	for o := range got {
		if o < 300 && o%4 != 0 {
			t.Fatalf("offset %d survived two compactions", o)
		}
	}
	l.Close()
	// Without index files, recovery scans the compacted segments.
	idx, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	for _, f := range idx {
		os.Remove(f)
	}
	l = mustOpen(t, dir, openBackend(t, ring.KindSyscall), cfg)
	defer l.Close()
	if l.NextOffset() != n || len(readKept(t, l)) != len(got) {
		t.Fatalf("after a rescan: end %d, %d records; want %d, %d", l.NextOffset(), len(readKept(t, l)), n, len(got))
	}
	// Appends go on at the end.
	p := record.AppendMessage(nil, 1, nil, []byte("after"))
	if first, _, err := l.AppendBatch([]Record{{Type: RecordMessage, Payload: p}}, true); err != nil || first != n {
		t.Fatalf("append after compaction: %d %v", first, err)
	}
}

// A leftover of a compaction cut short by a crash is removed at open.
func TestCompactLeftoverRemoved(t *testing.T) {
	dir := t.TempDir()
	l := timedLog(t, dir, 100, func(o uint64) int64 { return int64(o) })
	segs := l.Segments()
	l.Close()
	tmp := filepath.Join(dir, segmentName(segs[0].Base)) + ".compact.tmp"
	if err := os.WriteFile(tmp, []byte("half a rewrite"), 0o644); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, openBackend(t, ring.KindSyscall), LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 1 << 10})
	defer l.Close()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("leftover still there: %v", err)
	}
	if len(readKept(t, l)) != 100 {
		t.Fatal("records lost")
	}
}

// readKept reads every record of a log that may have holes.
func readKept(t *testing.T, l *Log) map[uint64][]byte {
	t.Helper()
	out := map[uint64][]byte{}
	last := int64(-1)
	if _, err := l.Read(0, 1<<30, func(fr Frame) bool {
		if int64(fr.Offset) <= last {
			t.Fatalf("offset %d after %d", fr.Offset, last)
		}
		last = int64(fr.Offset)
		out[fr.Offset] = append([]byte(nil), fr.Payload...)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

package logstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"keel/engine/record"
	"keel/engine/vfs"
	"keel/ring"
)

func TestLogAppendReadReopen(t *testing.T) {
	cases := []struct {
		name     string
		cfg      LogConfig
		batches  int
		perBatch int
	}{
		{"one segment", LogConfig{}, 20, 5},
		{"many small segments", LogConfig{SegmentBytes: 4096, IndexIntervalBytes: 256, BatchBytesMax: 4096}, 200, 7},
		{"frequent checkpoints", LogConfig{SegmentBytes: 8192, MarkIntervalBytes: 100, BatchBytesMax: 8192}, 100, 3},
	}
	for _, kind := range backendKinds(t) {
		for _, tc := range cases {
			t.Run(string(kind)+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				io := openBackend(t, kind)
				l := mustOpen(t, dir, io, tc.cfg)
				next := uint64(0)
				for b := 0; b < tc.batches; b++ {
					recs := make([]Record, tc.perBatch)
					for i := range recs {
						recs[i] = messageRecord(next + uint64(i))
					}
					first, _, err := l.AppendBatch(recs, b%2 == 0)
					if err != nil {
						t.Fatalf("AppendBatch: %v", err)
					}
					if first != next {
						t.Fatalf("first offset %d, want %d", first, next)
					}
					next += uint64(tc.perBatch)
				}
				check := func(l *Log) {
					t.Helper()
					if l.NextOffset() != next {
						t.Fatalf("NextOffset %d, want %d", l.NextOffset(), next)
					}
					for _, from := range []uint64{0, 1, next / 3, next - 1} {
						got := readAll(t, l, from)
						if uint64(len(got)) != next-from {
							t.Fatalf("from %d: read %d records, want %d", from, len(got), next-from)
						}
						for off, p := range got {
							if !bytes.Equal(p, payloadFor(off)) {
								t.Fatalf("offset %d: payload differs", off)
							}
						}
					}
				}
				check(l)
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l2 := mustOpen(t, dir, io, tc.cfg)
				defer l2.Close()
				if r := l2.Recovery(); r.CutBytes != 0 || !r.MarkFound {
					t.Fatalf("clean reopen: %+v", r)
				}
				check(l2)
				// Appends continue densely after a reopen.
				if first, _, err := l2.AppendBatch([]Record{messageRecord(next)}, true); err != nil || first != next {
					t.Fatalf("append after reopen: first %d err %v, want %d", first, err, next)
				}
			})
		}
	}
}

func TestLogReadBudget(t *testing.T) {
	l := mustOpen(t, t.TempDir(), openBackend(t, "syscall"), LogConfig{})
	defer l.Close()
	recs := []Record{
		{Type: RecordMessage, Payload: bytes.Repeat([]byte{1}, 100)},
		{Type: RecordMessage, Payload: bytes.Repeat([]byte{2}, 100)},
		{Type: RecordMessage, Payload: bytes.Repeat([]byte{3}, 300)},
	}
	if _, _, err := l.AppendBatch(recs, true); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		from, wantNext uint64
		budget         int
		wantCount      int
	}{
		{0, 1, 50, 1},   // a record larger than the budget still comes alone
		{0, 1, 100, 1},  // exactly the budget
		{0, 2, 250, 2},  // the third would exceed it
		{0, 3, 1000, 3}, // everything
		{2, 3, 10, 1},
		{3, 3, 10, 0}, // at the end
		{9, 9, 10, 0}, // past the end
	}
	for _, tc := range cases {
		count := 0
		next, err := l.Read(tc.from, tc.budget, func(Frame) bool { count++; return true })
		if err != nil || next != tc.wantNext || count != tc.wantCount {
			t.Errorf("Read(%d, %d) = next %d, %d records, %v; want next %d, %d records",
				tc.from, tc.budget, next, count, err, tc.wantNext, tc.wantCount)
		}
	}
	// A callback that stops after one record still accounts for it.
	next, err := l.Read(0, 1000, func(Frame) bool { return false })
	if err != nil || next != 1 {
		t.Fatalf("stop after one: next %d, err %v; want 1", next, err)
	}
}

func TestLogLargeRecordsAcrossReadChunks(t *testing.T) {
	l := mustOpen(t, t.TempDir(), openBackend(t, "syscall"), LogConfig{})
	defer l.Close()
	var recs []Record
	for i := 0; i < 5; i++ {
		recs = append(recs, Record{Type: RecordMessage, Payload: bytes.Repeat([]byte{byte(i + 1)}, 3*readChunkBytes/2+i)})
	}
	if _, _, err := l.AppendBatch(recs, true); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, l, 0)
	for i, r := range recs {
		if !bytes.Equal(got[uint64(i)], r.Payload) {
			t.Fatalf("record %d differs after read", i)
		}
	}
}

func TestLogRejects(t *testing.T) {
	l := mustOpen(t, t.TempDir(), openBackend(t, "syscall"), LogConfig{SegmentBytes: 8192, BatchBytesMax: 4096})
	cases := []struct {
		name string
		recs []Record
		want error
	}{
		{"empty batch", nil, ErrEmptyBatch},
		{"internal type", []Record{{Type: record.TypeDurableMark}}, ErrRecordType},
		{"zero type", []Record{{Type: 0}}, ErrRecordType},
		{"too large", []Record{{Type: RecordMessage, Payload: make([]byte, 5000)}}, ErrBatchTooLarge},
	}
	for _, tc := range cases {
		if _, _, err := l.AppendBatch(tc.recs, true); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.AppendBatch([]Record{messageRecord(0)}, true); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

func TestLogConfigValidate(t *testing.T) {
	bad := []LogConfig{
		{SegmentBytes: 100},
		{SegmentBytes: 2 << 30},
		{IndexIntervalBytes: 1},
		{MarkIntervalBytes: -1},
		{SegmentBytes: 1 << 20, BatchBytesMax: 2 << 20},
	}
	for _, cfg := range bad {
		if _, err := OpenLog(t.TempDir(), openBackend(t, "syscall"), cfg); err == nil {
			t.Errorf("OpenLog accepted %+v", cfg)
		}
	}
}

// TestSealedIndexRebuilt removes and damages index files: the log rebuilds
// them by scanning and reads the same records.
func TestSealedIndexRebuilt(t *testing.T) {
	dir := t.TempDir()
	io := openBackend(t, "syscall")
	cfg := LogConfig{SegmentBytes: 4096, IndexIntervalBytes: 128, BatchBytesMax: 4096}
	l := mustOpen(t, dir, io, cfg)
	for off := uint64(0); off < 300; off++ {
		if _, _, err := l.AppendBatch([]Record{messageRecord(off)}, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "*"+indexSuffix))
	if len(idx) < 3 {
		t.Fatalf("want several sealed segments, got %d index files", len(idx))
	}
	if err := os.Remove(idx[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(idx[1], []byte("garbage garbage garbage garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpen(t, dir, io, cfg)
	defer l2.Close()
	got := readAll(t, l2, 0)
	if len(got) != 300 {
		t.Fatalf("read %d records after index rebuild, want 300", len(got))
	}
	for off, p := range got {
		if !bytes.Equal(p, payloadFor(off)) {
			t.Fatalf("offset %d differs", off)
		}
	}
	if _, err := readIndexFile(vfs.Default, idx[0], 0, cfg.IndexIntervalBytes); err != nil {
		t.Fatalf("index file not rewritten: %v", err)
	}
}

func TestWidenBatch(t *testing.T) {
	cases := []struct {
		hint uint64
		low  uint32
		want uint64
	}{
		{0, 0, 0},
		{0, 5, 5},
		{10, 12, 12},
		{1<<32 - 2, 3, 1<<32 + 3},         // wrapped past the hint
		{1<<32 + 3, 1<<32 - 2, 1<<32 - 2}, // just below a wrap
		{5 << 32, 7, 5<<32 + 7},
	}
	for _, tc := range cases {
		if got := widenBatch(tc.hint, tc.low); got != tc.want {
			t.Errorf("widenBatch(%d, %d) = %d, want %d", tc.hint, tc.low, got, tc.want)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	cases := []struct{ key, value string }{{"", ""}, {"k", ""}, {"", "v"}, {"user-42", `{"a":1}`}}
	for _, tc := range cases {
		p := record.AppendMessage(nil, 1700000000123, []byte(tc.key), []byte(tc.value))
		if len(p) != record.MessagePayloadBytes([]byte(tc.key), []byte(tc.value)) {
			t.Fatalf("payload size %d", len(p))
		}
		m, err := record.DecodeMessage(9, p)
		if err != nil || m.Offset != 9 || m.TimestampMs != 1700000000123 || string(m.Key) != tc.key || string(m.Value) != tc.value {
			t.Fatalf("round trip %+v: got %+v, %v", tc, m, err)
		}
	}
	if _, err := record.DecodeMessage(0, []byte{1, 2, 3}); err == nil {
		t.Fatal("short payload accepted")
	}
	bad := record.AppendMessage(nil, 1, []byte("key"), nil)
	bad[8] = 200 // key length past the payload
	if _, err := record.DecodeMessage(0, bad); err == nil {
		t.Fatal("key length past the payload accepted")
	}
}

// TestWriteBehind: unsynced appends start their writeback every
// WriteBehindBytes, a synced append or a roll restarts the count, and a
// negative setting turns it off.
func TestWriteBehind(t *testing.T) {
	rec := []Record{{Type: RecordMessage, Payload: make([]byte, 1000)}}
	for _, tc := range []struct {
		name        string
		behind      int64
		appends     int
		wantStarted bool
	}{
		{"below the threshold", 64 << 10, 10, false},
		{"past the threshold", 4 << 10, 10, true},
		{"off", -1, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustOpen(t, t.TempDir(), openBackend(t, ring.KindSyscall), LogConfig{WriteBehindBytes: tc.behind})
			defer l.Close()
			for range tc.appends {
				if _, _, err := l.AppendBatch(rec, false); err != nil {
					t.Fatal(err)
				}
			}
			size := l.active().size
			started := l.writeBehindFrom > 0
			if started != tc.wantStarted || l.writeBehindFrom > size || tc.wantStarted && size-l.writeBehindFrom >= tc.behind {
				t.Fatalf("writeback started up to %d of %d bytes (want started: %v)", l.writeBehindFrom, size, tc.wantStarted)
			}
			if _, _, err := l.AppendBatch(rec, true); err != nil {
				t.Fatal(err)
			}
			if l.writeBehindFrom != l.active().size {
				t.Fatalf("after a synced append writeback starts at %d, want %d", l.writeBehindFrom, l.active().size)
			}
		})
	}
}

// TestWriteBehindRefused: a write-behind hint the kernel refuses is
// counted and tried again with the next append; the append succeeds and
// the log takes more writes (it is not a storage fault).
func TestWriteBehindRefused(t *testing.T) {
	l := mustOpen(t, t.TempDir(), openBackend(t, ring.KindSyscall), LogConfig{WriteBehindBytes: 4 << 10})
	defer l.Close()
	rec := []Record{{Type: RecordMessage, Payload: make([]byte, 1000)}}
	refuse := true
	startWriteback = func(fd int, off, n int64) error {
		if refuse {
			return syscall.ENOMEM
		}
		return ring.StartWriteback(fd, off, n)
	}
	defer func() { startWriteback = ring.StartWriteback }()
	for range 10 {
		if _, _, err := l.AppendBatch(rec, false); err != nil {
			t.Fatalf("append while the hint is refused: %v", err)
		}
	}
	if l.WriteBehindFailures() == 0 || l.writeBehindFrom != 0 {
		t.Fatalf("refused hints: %d counted, writeback started up to %d", l.WriteBehindFailures(), l.writeBehindFrom)
	}
	refuse = false
	failures := l.WriteBehindFailures()
	if _, _, err := l.AppendBatch(rec, false); err != nil {
		t.Fatal(err)
	}
	if l.writeBehindFrom != l.active().size || l.WriteBehindFailures() != failures {
		t.Fatalf("after the kernel accepts again: writeback started up to %d of %d, failures %d -> %d",
			l.writeBehindFrom, l.active().size, failures, l.WriteBehindFailures())
	}
}

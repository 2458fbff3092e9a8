package logstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"keel/engine/record"
)

// TestRecoveryTableExhaustive checks every cell of the decision table
// against the rules stated in prose: a valid frame is always kept; anything
// else inside fsynced bytes refuses; the end of the tail ends; a bad or
// short frame in the tail is a torn write and cut, unless a later batch
// follows it, which proves it was fsynced once.
func TestRecoveryTableExhaustive(t *testing.T) {
	rule := func(r region, s frameState, newer bool) verdict {
		switch {
		case s == stateValid:
			return verdictContinue
		case r == regionVouched:
			return verdictRefuse
		case s == stateEOF:
			return verdictEnd
		case newer:
			return verdictRefuse
		default:
			return verdictCut
		}
	}
	cells := 0
	for r := region(0); r < regionCount; r++ {
		for s := frameState(0); s < stateCount; s++ {
			for _, newer := range []bool{false, true} {
				cells++
				if got, want := classify(r, s, newer), rule(r, s, newer); got != want {
					t.Errorf("classify(%s, %s, newer=%v) = %s, want %s", r, s, newer, got, want)
				}
			}
		}
	}
	if cells != int(regionCount)*int(stateCount)*2 {
		t.Fatalf("enumerated %d cells", cells)
	}
}

// abandon closes the log's files without syncing or checkpointing: what a
// crash leaves behind (minus the page cache, which the tests mutate).
func (l *Log) abandon() {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.closed = true
	l.closeFiles()
}

// crashScenario builds a log with `acked` synced batches of 3 records and
// then one unsynced batch of 3 records, and abandons it. With vouchAll the
// log is closed and reopened after the synced batches, so a checkpoint
// vouches for them.
type crashScenario struct {
	dir        string
	active     string // path of the active segment
	ackedEnd   int64  // active segment bytes when the last synced batch finished
	batchStart []int64
	acked      uint64 // records acknowledged
}

func buildScenario(t *testing.T, ackedBatches int, vouchAll bool) crashScenario {
	t.Helper()
	dir := t.TempDir()
	io := openBackend(t, "syscall")
	l := mustOpen(t, dir, io, LogConfig{})
	sc := crashScenario{dir: dir}
	for b := 0; b < ackedBatches; b++ {
		sc.batchStart = append(sc.batchStart, l.active().size)
		recs := []Record{messageRecord(sc.acked), messageRecord(sc.acked + 1), messageRecord(sc.acked + 2)}
		if _, _, err := l.AppendBatch(recs, true); err != nil {
			t.Fatal(err)
		}
		sc.acked += 3
	}
	if vouchAll {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l = mustOpen(t, dir, io, LogConfig{})
	}
	sc.ackedEnd = l.active().size
	sc.batchStart = append(sc.batchStart, sc.ackedEnd)
	recs := []Record{messageRecord(sc.acked), messageRecord(sc.acked + 1), messageRecord(sc.acked + 2)}
	if _, _, err := l.AppendBatch(recs, false); err != nil {
		t.Fatal(err)
	}
	sc.active = l.active().path
	l.abandon()
	return sc
}

func mutateFile(t *testing.T, path string, f func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRecoveryScenarios(t *testing.T) {
	type outcome int
	const (
		keepAll     outcome = iota // nothing cut: all records, including the unsynced batch
		cutToAcked                 // the unsynced batch is cut, every acked record kept
		refuseStart                // CorruptionError
	)
	cases := []struct {
		name     string
		batches  int
		vouchAll bool
		mutate   func(sc crashScenario, b []byte) []byte
		want     outcome
	}{
		{"no damage", 4, false, func(sc crashScenario, b []byte) []byte { return b }, keepAll},
		{"last batch cut mid-frame", 4, false, func(sc crashScenario, b []byte) []byte {
			return b[:sc.ackedEnd+30]
		}, cutToAcked},
		{"last batch cut inside a header", 4, false, func(sc crashScenario, b []byte) []byte {
			return b[:sc.ackedEnd+5]
		}, cutToAcked},
		{"first page of last batch never written", 4, false, func(sc crashScenario, b []byte) []byte {
			clear(b[sc.ackedEnd : sc.ackedEnd+40])
			return b
		}, cutToAcked},
		{"last batch garbage", 4, false, func(sc crashScenario, b []byte) []byte {
			for i := sc.ackedEnd; i < int64(len(b)); i++ {
				b[i] = byte(i*13 + 1)
			}
			return b
		}, cutToAcked},
		{"zeros after the last batch", 4, false, func(sc crashScenario, b []byte) []byte {
			return append(b, make([]byte, 4096)...)
		}, keepAll},
		{"acked batch damaged, later batches valid", 4, false, func(sc crashScenario, b []byte) []byte {
			b[sc.batchStart[1]+record.HeaderBytes] ^= 0xff
			return b
		}, refuseStart},
		{"first batch damaged, later batches valid", 4, false, func(sc crashScenario, b []byte) []byte {
			b[record.HeaderBytes] ^= 0xff
			return b
		}, refuseStart},
		{"only batch damaged at its first frame", 0, false, func(sc crashScenario, b []byte) []byte {
			b[record.HeaderBytes] ^= 0xff
			return b
		}, cutToAcked},
		{"vouched record damaged", 4, true, func(sc crashScenario, b []byte) []byte {
			b[sc.batchStart[3]+record.HeaderBytes] ^= 0x01
			return b
		}, refuseStart},
		{"file shorter than vouched", 4, true, func(sc crashScenario, b []byte) []byte {
			return b[:sc.ackedEnd-8]
		}, refuseStart},
		{"vouched data, unsynced batch torn", 4, true, func(sc crashScenario, b []byte) []byte {
			return b[:sc.ackedEnd+50]
		}, cutToAcked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := buildScenario(t, tc.batches, tc.vouchAll)
			mutateFile(t, sc.active, func(b []byte) []byte { return tc.mutate(sc, b) })
			l, err := OpenLog(sc.dir, openBackend(t, "syscall"), LogConfig{})
			if tc.want == refuseStart {
				var ce *CorruptionError
				if !errors.As(err, &ce) {
					t.Fatalf("OpenLog: got %v, want a CorruptionError", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenLog: %v", err)
			}
			defer l.Close()
			want := sc.acked
			if tc.want == keepAll {
				want += 3
			}
			if l.NextOffset() != want {
				t.Fatalf("NextOffset %d, want %d (report %+v)", l.NextOffset(), want, l.Recovery())
			}
			got := readAll(t, l, 0)
			for off := uint64(0); off < want; off++ {
				if !bytes.Equal(got[off], payloadFor(off)) {
					t.Fatalf("offset %d lost or changed", off)
				}
			}
			if tc.want == cutToAcked {
				st, err := os.Stat(sc.active)
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() != sc.ackedEnd || l.Recovery().CutBytes == 0 {
					t.Fatalf("file is %d bytes after cut, want %d (report %+v)", st.Size(), sc.ackedEnd, l.Recovery())
				}
			}
			// The recovered log takes appends at the next offset and reopens cleanly.
			if first, _, err := l.AppendBatch([]Record{messageRecord(want)}, true); err != nil || first != want {
				t.Fatalf("append after recovery: %d, %v", first, err)
			}
			l.abandon()
			l2 := mustOpen(t, sc.dir, openBackend(t, "syscall"), LogConfig{})
			defer l2.Close()
			if l2.NextOffset() != want+1 || l2.Recovery().CutBytes != 0 {
				t.Fatalf("second recovery: next %d report %+v", l2.NextOffset(), l2.Recovery())
			}
		})
	}
}

func TestRecoveryRefusesDamagedMetadata(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(t *testing.T, dir string)
	}{
		{"checkpoint garbage", func(t *testing.T, dir string) {
			mutateFile(t, filepath.Join(dir, durableMarkFileName), func(b []byte) []byte { b[30] ^= 1; return b })
		}},
		{"active segment named by checkpoint missing", func(t *testing.T, dir string) {
			segs, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
			if err := os.Remove(segs[len(segs)-1]); err != nil {
				t.Fatal(err)
			}
		}},
		{"all segments missing", func(t *testing.T, dir string) {
			segs, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
			for _, s := range segs {
				os.Remove(s)
			}
		}},
		{"sealed segment damaged without index", func(t *testing.T, dir string) {
			segs, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
			os.Remove(filepath.Join(dir, indexName(0)))
			mutateFile(t, segs[0], func(b []byte) []byte { b[100] ^= 1; return b })
		}},
		{"sealed segment missing from the middle", func(t *testing.T, dir string) {
			segs, _ := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
			os.Remove(segs[1])
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			io := openBackend(t, "syscall")
			cfg := LogConfig{SegmentBytes: 4096, BatchBytesMax: 4096}
			l := mustOpen(t, dir, io, cfg)
			for off := uint64(0); off < 120; off++ {
				if _, _, err := l.AppendBatch([]Record{messageRecord(off)}, true); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			tc.mutate(t, dir)
			_, err := OpenLog(dir, io, cfg)
			var ce *CorruptionError
			if !errors.As(err, &ce) {
				t.Fatalf("OpenLog: got %v, want a CorruptionError", err)
			}
		})
	}
}

// TestReadNeverServesCorruption damages a sealed segment whose index is
// intact (so recovery does not scan it): reads must fail, not serve it.
func TestReadNeverServesCorruption(t *testing.T) {
	dir := t.TempDir()
	io := openBackend(t, "syscall")
	cfg := LogConfig{SegmentBytes: 4096, BatchBytesMax: 4096}
	l := mustOpen(t, dir, io, cfg)
	for off := uint64(0); off < 120; off++ {
		if _, _, err := l.AppendBatch([]Record{messageRecord(off)}, true); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	mutateFile(t, filepath.Join(dir, segmentName(0)), func(b []byte) []byte { b[record.HeaderBytes+1] ^= 1; return b })
	l = mustOpen(t, dir, io, cfg)
	defer l.Close()
	served := 0
	_, err := l.Read(0, 1<<20, func(Frame) bool { served++; return true })
	var ce *CorruptionError
	if !errors.As(err, &ce) || served != 0 {
		t.Fatalf("Read over damaged record: served %d, err %v; want a CorruptionError and nothing served", served, err)
	}
}

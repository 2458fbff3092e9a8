package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"keel/ring"
)

// TestWriterConcurrentAppends has many goroutines append through one Writer:
// every append gets its own consecutive offsets, nothing is lost or
// duplicated, and batching actually happens.
func TestWriterConcurrentAppends(t *testing.T) {
	const goroutines, perGoroutine = 32, 40
	for _, kind := range backendKinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			dir := t.TempDir()
			io := openBackend(t, kind)
			l := mustOpen(t, dir, io, LogConfig{SegmentBytes: 64 << 10, BatchBytesMax: 16 << 10})
			w := NewWriter(l)
			var mu sync.Mutex
			written := map[uint64]string{}
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < perGoroutine; i++ {
						n := 1 + i%3
						recs := make([]Record, n)
						for k := range recs {
							recs[k] = Record{Type: RecordMessage, Payload: []byte(fmt.Sprintf("g%d-i%d-k%d", g, i, k))}
						}
						res, err := w.Append(recs)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						for k := range recs {
							if prev, dup := written[res.First+uint64(k)]; dup {
								t.Errorf("offset %d given twice (%s and %s)", res.First+uint64(k), prev, recs[k].Payload)
							}
							written[res.First+uint64(k)] = string(recs[k].Payload)
						}
						mu.Unlock()
					}
				}(g)
			}
			wg.Wait()
			w.Close()
			batches, records := w.Stats()
			if records != uint64(len(written)) || batches == 0 {
				t.Fatalf("stats: %d batches, %d records; wrote %d", batches, records, len(written))
			}
			t.Logf("%d records in %d batches (mean %.1f per fsync)", records, batches, float64(records)/float64(batches))
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2 := mustOpen(t, dir, io, LogConfig{SegmentBytes: 64 << 10, BatchBytesMax: 16 << 10})
			defer l2.Close()
			got := readAll(t, l2, 0)
			if len(got) != len(written) {
				t.Fatalf("read %d records, wrote %d", len(got), len(written))
			}
			for off, p := range written {
				if string(got[off]) != p {
					t.Fatalf("offset %d: read %q, wrote %q", off, got[off], p)
				}
			}
		})
	}
}

func TestWriterRejectsAndCloses(t *testing.T) {
	l := mustOpen(t, t.TempDir(), openBackend(t, "syscall"), LogConfig{SegmentBytes: 8192, BatchBytesMax: 4096})
	defer l.Close()
	w := NewWriter(l)
	if _, err := w.Append(nil); !errors.Is(err, ErrEmptyBatch) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := w.Append([]Record{{Type: RecordMessage, Payload: make([]byte, 5000)}}); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if _, err := w.Append([]Record{messageRecord(0)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w.Close() // idempotent
	if _, err := w.Append([]Record{messageRecord(1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

// faultyBackend fails every operation after the first okOps with err.
type faultyBackend struct {
	ring.Backend
	okOps atomic.Int64
	err   error
}

func (f *faultyBackend) WriteAt(fd int, off int64, bufs [][]byte, sync bool) error {
	if f.okOps.Add(-1) < 0 {
		return &ring.FaultError{Op: "write", Err: f.err}
	}
	return f.Backend.WriteAt(fd, off, bufs, sync)
}

func (f *faultyBackend) Sync(fd int) error {
	if f.okOps.Add(-1) < 0 {
		return &ring.FaultError{Op: "fdatasync", Err: f.err}
	}
	return f.Backend.Sync(fd)
}

// TestWriterStorageFaultIsSticky injects EIO: the failing append and every
// later one fail with that fault, nothing after the fault is acknowledged,
// and what was acknowledged before it survives a reopen.
func TestWriterStorageFaultIsSticky(t *testing.T) {
	dir := t.TempDir()
	fb := &faultyBackend{Backend: openBackend(t, "syscall"), err: unix.EIO}
	fb.okOps.Store(5)
	l := mustOpen(t, dir, fb, LogConfig{})
	w := NewWriter(l)
	acked := 0
	var firstErr error
	for i := 0; i < 20; i++ {
		_, err := w.Append([]Record{messageRecord(uint64(acked))})
		if err == nil {
			if firstErr != nil {
				t.Fatalf("append %d succeeded after a storage fault", i)
			}
			acked++
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		if !errors.Is(err, unix.EIO) {
			t.Fatalf("append %d: %v, want the EIO fault", i, err)
		}
	}
	if acked != 5 || firstErr == nil {
		t.Fatalf("acked %d appends before the fault (want 5), fault %v", acked, firstErr)
	}
	w.Close()
	l.abandon()
	l2 := mustOpen(t, dir, openBackend(t, "syscall"), LogConfig{})
	defer l2.Close()
	got := readAll(t, l2, 0)
	for off := uint64(0); off < uint64(acked); off++ {
		if !bytes.Equal(got[off], payloadFor(off)) {
			t.Fatalf("acknowledged offset %d lost", off)
		}
	}
}

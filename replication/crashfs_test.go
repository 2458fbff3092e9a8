package replication

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel/engine"
	"keel/engine/vfs/vfstest"
	"keel/ring"
)

// TestCrashKeepsAcknowledgedWrites runs a node (state machine, partitions
// and WAL) on a vfstest.CrashFS and crashes it at random moments while
// producers write to old and new topics and checkpoints and WAL truncation
// run often: the files go back to what a power loss may leave (unsynced
// writes undone or kept at random, names not fsynced in their directory
// gone). After each crash the node must open, and every write it
// acknowledged must be there at its offset, with the offsets of each
// partition dense. This is what the durability contract promises; it
// exercises every fsync of data and of names on the write path.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	const (
		cycles    = 20
		producers = 6
	)
	dir := t.TempDir()
	stash := t.TempDir()
	base, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	acked := map[string]map[uint64]string{} // topic → offset → value
	var mu sync.Mutex
	total := 0
	for cycle := range cycles {
		cfs, err := vfstest.NewCrashFS(base, stash)
		if err != nil {
			t.Fatal(err)
		}
		store, blob, err := engine.OpenStore(engine.StoreConfig{Dir: filepath.Join(dir, "state"), FS: cfs}, cfs)
		if err != nil {
			t.Fatalf("cycle %d: open store after a crash: %v", cycle, err)
		}
		n, err := Open(Config{WALDir: filepath.Join(dir, "wal"), IO: cfs, FS: cfs, Store: store, StoreBlob: blob,
			CheckpointBytes: 32 << 10, EntryBytesMax: 16 << 10, WALSegmentBytes: 64 << 10})
		if err != nil {
			t.Fatalf("cycle %d: open node after a crash: %v", cycle, err)
		}
		n.Start()
		if !n.WaitServing(time.Now().Add(5 * time.Second)) {
			t.Fatalf("cycle %d: not serving after a crash", cycle)
		}
		checkAcked(t, cycle, store, acked)

		// Write until the crash: to two long-lived topics and to a new
		// topic per producer and cycle (new directories on every cycle).
		// The crash comes after a random number of acknowledged writes (the
		// moment in between is the scheduler's): no wall-clock sleep.
		crashAfter := 20 + rng.IntN(400)
		reached := make(chan struct{})
		var reachedOnce sync.Once
		cycleAcked := 0
		var crashing atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				topics := []string{"old-a", "old-b", fmt.Sprintf("new-%d-%d", cycle, p)}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					topic := topics[i%len(topics)]
					value := fmt.Sprintf("c%d-p%d-%d", cycle, p, i)
					out, err := n.Propose(produceCmd(topic, "", value), time.Now().Add(2*time.Second))
					if err != nil || out.Err != nil {
						if !crashing.Load() {
							t.Errorf("cycle %d: a write failed before the crash: %v %v", cycle, err, out.Err)
						}
						return // the crash: storage faults from here on
					}
					mu.Lock()
					if acked[topic] == nil {
						acked[topic] = map[uint64]string{}
					}
					acked[topic][out.Offset] = value
					total++
					if cycleAcked++; cycleAcked >= crashAfter {
						reachedOnce.Do(func() { close(reached) })
					}
					mu.Unlock()
				}
			}()
		}
		select {
		case <-reached:
		case <-time.After(10 * time.Second):
			mu.Lock()
			t.Fatalf("cycle %d: %d writes acknowledged in 10 s, want %d", cycle, cycleAcked, crashAfter)
		}
		crashing.Store(true)
		rep, err := cfs.Crash(rng)
		if err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		_ = n.Close() // it met the crash: errors are expected
		_ = store.Close()
		t.Logf("cycle %d: crash after %d writes: %+v; %d acknowledged so far", cycle, crashAfter, rep, total)
	}
	if total == 0 {
		t.Fatal("no write was acknowledged")
	}
	// A last open checks the last crash.
	cfs, err := vfstest.NewCrashFS(base, stash)
	if err != nil {
		t.Fatal(err)
	}
	store, blob, err := engine.OpenStore(engine.StoreConfig{Dir: filepath.Join(dir, "state"), FS: cfs}, cfs)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	n, err := Open(Config{WALDir: filepath.Join(dir, "wal"), IO: cfs, FS: cfs, Store: store, StoreBlob: blob,
		EntryBytesMax: 16 << 10, WALSegmentBytes: 64 << 10})
	if err != nil {
		t.Fatalf("open after the last crash: %v", err)
	}
	n.Start()
	defer n.Close()
	if !n.WaitServing(time.Now().Add(5 * time.Second)) {
		t.Fatal("not serving after the last crash")
	}
	checkAcked(t, cycles, store, acked)
}

// checkAcked fails unless every acknowledged write is at its offset and
// each partition's offsets are dense from its start.
func checkAcked(t *testing.T, cycle int, s *engine.Store, acked map[string]map[uint64]string) {
	t.Helper()
	for topic, byOffset := range acked {
		if _, ok := s.Topic(topic); !ok {
			t.Fatalf("cycle %d: topic %s with %d acknowledged writes is gone", cycle, topic, len(byOffset))
		}
		vals := readValues(t, s, topic)
		for off, want := range byOffset {
			if off >= uint64(len(vals)) || vals[off] != want {
				got := "<past the end>"
				if off < uint64(len(vals)) {
					got = vals[off]
				}
				t.Fatalf("cycle %d: %s offset %d: %q, acknowledged %q (log holds %d)", cycle, topic, off, got, want, len(vals))
			}
		}
	}
}

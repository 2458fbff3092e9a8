package replication

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"keel/engine"
	"keel/engine/logstore"
	"keel/engine/record"
	"keel/engine/vfs"
	"keel/ring"
)

type testNode struct {
	n     *Node
	store *engine.Store
}

func openNode(t *testing.T, dir string, cfg Config) testNode {
	t.Helper()
	return openNodeWith(t, dir, cfg, false)
}

// openNodeWith opens a node; with appenderAlone, its appends go through
// the appender goroutine although it is alone (as a cluster member's do).
func openNodeWith(t *testing.T, dir string, cfg Config, appenderAlone bool) testNode {
	t.Helper()
	io, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { io.Close() })
	store, blob, err := engine.OpenStore(engine.StoreConfig{Dir: filepath.Join(dir, "state")}, io)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	cfg.WALDir, cfg.IO, cfg.Store, cfg.StoreBlob = filepath.Join(dir, "wal"), io, store, blob
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	n.appendAloneAsync = appenderAlone
	n.Start()
	waitReady(t, n)
	return testNode{n: n, store: store}
}

func waitReady(t *testing.T, n *Node) {
	t.Helper()
	if !n.WaitServing(time.Now().Add(5*time.Second)) || !n.Status().Ready {
		t.Fatalf("node not ready: %+v", n.Status())
	}
}

// openNodeIO opens and starts a node whose I/O backend wrap wraps (to
// inject faults or delays); the caller closes the node and the store.
func openNodeIO(t *testing.T, dir string, cfg Config, wrap func(ring.Backend) ring.Backend) (*Node, *engine.Store) {
	t.Helper()
	base, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	io := wrap(base)
	store, blob, err := engine.OpenStore(engine.StoreConfig{Dir: filepath.Join(dir, "state")}, io)
	if err != nil {
		t.Fatal(err)
	}
	cfg.WALDir, cfg.IO, cfg.Store, cfg.StoreBlob = filepath.Join(dir, "wal"), io, store, blob
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	waitReady(t, n)
	return n, store
}

func (tn testNode) close(t *testing.T) {
	t.Helper()
	if err := tn.n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tn.store.Close(); err != nil {
		t.Fatal(err)
	}
}

func produceCmd(topic, idem, value string) *engine.Command {
	return &engine.Command{Kind: engine.CmdProduce, Topic: topic, Partition: 0, AutoCreatePartitions: 1,
		IdempotencyKey: []byte(idem), Messages: []engine.MessageIn{{Value: []byte(value)}}}
}

func propose(t *testing.T, n *Node, c *engine.Command) Outcome {
	t.Helper()
	out, err := n.Propose(c, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatalf("Propose: %v", err)
	}
	if out.Err != nil {
		t.Fatalf("command failed: %v", out.Err)
	}
	return out
}

func readValues(t *testing.T, s *engine.Store, topic string) []string {
	t.Helper()
	tp, ok := s.Topic(topic)
	if !ok {
		t.Fatalf("no topic %s", topic)
	}
	var vals []string
	l := tp.Partitions[0].Log
	for from := uint64(0); from < l.NextOffset(); {
		next, err := l.Read(from, 1<<20, func(fr logstore.Frame) bool {
			m, err := record.DecodeMessage(fr.Offset, fr.Payload)
			if err != nil {
				t.Fatal(err)
			}
			vals = append(vals, string(m.Value))
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		from = next
	}
	return vals
}

// TestNodeConcurrentProduce: concurrent proposals all apply, durable, with
// dense distinct offsets, and share fsyncs.
func TestNodeConcurrentProduce(t *testing.T) {
	for _, appender := range []bool{false, true} {
		t.Run(fmt.Sprintf("appender=%v", appender), func(t *testing.T) { testNodeConcurrentProduce(t, appender) })
	}
}

func testNodeConcurrentProduce(t *testing.T, appender bool) {
	tn := openNodeWith(t, t.TempDir(), Config{}, appender)
	defer tn.close(t)
	const writers, each = 16, 50
	var mu sync.Mutex
	seen := map[uint64]string{}
	batches := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				out, err := tn.n.Propose(produceCmd("t", "", v), time.Now().Add(5*time.Second))
				if err != nil || out.Err != nil || !out.Durable || out.Batch == 0 {
					t.Errorf("propose: %+v %v", out, err)
					return
				}
				mu.Lock()
				if prev, dup := seen[out.Offset]; dup {
					t.Errorf("offset %d given to %s and %s", out.Offset, prev, v)
				}
				seen[out.Offset] = v
				batches[out.Batch] = true
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	vals := readValues(t, tn.store, "t")
	if len(vals) != writers*each {
		t.Fatalf("%d records stored, want %d", len(vals), writers*each)
	}
	for off, v := range seen {
		if vals[off] != v {
			t.Fatalf("offset %d holds %q, want %q", off, vals[off], v)
		}
	}
	t.Logf("%d writes in %d group commits", writers*each, len(batches))
	if len(batches) >= writers*each {
		t.Fatalf("no group commit: %d batches for %d writes", len(batches), writers*each)
	}
}

// TestNodeRecoversFromWAL stops without a final checkpoint (as a crash
// would) after some checkpoints, and checks that reopening replays the WAL
// onto the checkpointed state: same records, idempotency keys kept,
// offsets continuing.
func TestNodeRecoversFromWAL(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		appender bool // through the appender goroutine, as a cluster member
	}{
		{"no checkpoint", Config{CheckpointBytes: 1 << 40}, false},
		{"checkpoint every 2000 bytes", Config{CheckpointBytes: 2000}, false},
		{"checkpoint every 2000 bytes, appender", Config{CheckpointBytes: 2000}, true},
		// Small WAL segments: checkpoints drop (rename, shrink, unlink)
		// sealed segments while writes go on.
		{"small WAL segments", Config{CheckpointBytes: 2000, WALSegmentBytes: 8 << 10, EntryBytesMax: 4 << 10}, false},
		{"small WAL segments, appender", Config{CheckpointBytes: 2000, WALSegmentBytes: 8 << 10, EntryBytesMax: 4 << 10}, true},
	} {
		cfg := tc.cfg
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tn := openNodeWith(t, dir, cfg, tc.appender)
			var want []string
			for i := 0; i < 200; i++ {
				v := fmt.Sprintf("v%d", i)
				propose(t, tn.n, produceCmd("t", fmt.Sprintf("k%d", i), v))
				want = append(want, v)
			}
			tn.n.skipFinalCheckpoint = true
			st := tn.n.Status()
			tn.close(t)
			t.Logf("checkpoints before the crash: %d, WAL records %d..%d", st.Checkpoints, st.WALStart, st.WALNext)
			if cfg.WALSegmentBytes != 0 && st.WALStart == 0 {
				t.Fatalf("no WAL segment was dropped: WAL records %d..%d", st.WALStart, st.WALNext)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, "wal", "*.tmp")); len(leftovers) != 0 {
				t.Fatalf("dropped segments left behind: %v", leftovers)
			}

			tn2 := openNode(t, dir, cfg)
			defer tn2.close(t)
			if got := readValues(t, tn2.store, "t"); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after recovery: %d records, want %d", len(got), len(want))
			}
			dup := propose(t, tn2.n, produceCmd("t", "k7", "again"))
			if !dup.Duplicate || dup.Offset != 7 {
				t.Fatalf("idempotent retry after restart: %+v", dup.Result)
			}
			next := propose(t, tn2.n, produceCmd("t", "", "new"))
			if next.Offset != 200 {
				t.Fatalf("next offset %d, want 200", next.Offset)
			}
		})
	}
}

func TestNodeProposeErrors(t *testing.T) {
	tn := openNode(t, t.TempDir(), Config{EntryBytesMax: 1024, QueueMax: 1})
	big := produceCmd("t", "", string(make([]byte, 2000)))
	if _, err := tn.n.Propose(big, time.Now().Add(time.Second)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized command: %v", err)
	}
	out, err := tn.n.Propose(&engine.Command{Kind: engine.CmdCommit, Topic: "none", Group: "g"}, time.Now().Add(time.Second))
	if err != nil || !errors.Is(out.Err, engine.ErrUnknownTopic) {
		t.Fatalf("commit to unknown topic: %+v %v", out, err)
	}
	tn.close(t)
	if _, err := tn.n.Propose(produceCmd("t", "", "x"), time.Now().Add(time.Second)); !errors.Is(err, ErrStopped) {
		t.Fatalf("after close: %v", err)
	}
}

// TestRocketMarker: a WAL written in rocket mode keeps its marker until a
// durable node has vouched for it, and data survives the switch.
func TestRocketMarker(t *testing.T) {
	dir := t.TempDir()
	tn := openNode(t, dir, Config{Rocket: true})
	out := propose(t, tn.n, produceCmd("t", "", "fast"))
	if out.Durable || out.Batch != 0 {
		t.Fatalf("rocket outcome: %+v", out)
	}
	if !walMarkedUnordered(vfs.Default, filepath.Join(dir, "wal")) {
		t.Fatal("rocket mode left no marker")
	}
	tn.n.skipFinalCheckpoint = true
	tn.close(t)
	tn2 := openNode(t, dir, Config{})
	defer tn2.close(t)
	if walMarkedUnordered(vfs.Default, filepath.Join(dir, "wal")) {
		t.Fatal("durable node kept the rocket marker")
	}
	if got := readValues(t, tn2.store, "t"); fmt.Sprint(got) != "[fast]" {
		t.Fatalf("after switching off rocket: %v", got)
	}
	if st := tn2.n.Status(); st.LastSyncedBatch == 0 || !st.Serving {
		t.Fatalf("status after restart: %+v", st)
	}
}

// failAfter fails every write once fail is set (syncs still work, so
// only the node's own rule can keep a checkpoint from being written).
type failAfter struct {
	ring.Backend
	fail atomic.Bool
}

func (f *failAfter) WriteAt(fd int, off int64, bufs [][]byte, sync bool) error {
	if f.fail.Load() {
		return &ring.FaultError{Op: "write", Err: syscall.EIO}
	}
	return f.Backend.WriteAt(fd, off, bufs, sync)
}

// slowSync delays every synced write by delay, as a slow disk would.
type slowSync struct {
	ring.Backend
	delay atomic.Int64 // nanoseconds
}

func (s *slowSync) WriteAt(fd int, off int64, bufs [][]byte, sync bool) error {
	if sync {
		time.Sleep(time.Duration(s.delay.Load()))
	}
	return s.Backend.WriteAt(fd, off, bufs, sync)
}

// TestProposeDeadlines: with a disk slower than some deadlines, every
// Propose returns either its own command's outcome or ErrTimeout (never
// another request's outcome, as a reused waiter could deliver), timed-out
// writes may still land, and a stalled loop never holds a proposer past
// its deadline by more than scheduling slack.
func TestProposeDeadlines(t *testing.T) {
	var slow *slowSync
	n, store := openNodeIO(t, t.TempDir(), Config{}, func(b ring.Backend) ring.Backend { slow = &slowSync{Backend: b}; return slow })
	defer func() { n.Close(); store.Close() }()

	// A stalled disk: the proposer comes back at its deadline.
	slow.delay.Store(int64(300 * time.Millisecond))
	start := time.Now()
	_, err := n.Propose(produceCmd("t", "", "stalled"), start.Add(20*time.Millisecond))
	if waited := time.Since(start); !errors.Is(err, ErrTimeout) || waited > 200*time.Millisecond {
		t.Fatalf("stalled propose: %v after %v, want ErrTimeout at about 20ms", err, waited)
	}

	// Deadlines around the sync time: a mix of answers and timeouts.
	slow.delay.Store(int64(2 * time.Millisecond))
	propose(t, n, produceCmd("t", "", "after the stall")) // waits out the stalled sync
	const writers, each = 8, 60
	var mu sync.Mutex
	acked := map[uint64]string{}
	var timeouts atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v := fmt.Sprintf("w%d-%d", w, i)
				deadline := time.Now().Add(time.Duration(500+(w*each+i)*37%5000) * time.Microsecond)
				out, err := n.Propose(produceCmd("t", "", v), deadline)
				switch {
				case errors.Is(err, ErrTimeout):
					timeouts.Add(1)
				case err != nil || out.Err != nil:
					t.Errorf("propose %s: %v %v", v, err, out.Err)
					return
				default:
					mu.Lock()
					if prev, dup := acked[out.Offset]; dup {
						t.Errorf("offset %d acked to %s and %s", out.Offset, prev, v)
					}
					acked[out.Offset] = v
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	slow.delay.Store(0)
	propose(t, n, produceCmd("t", "", "last")) // everything before it is applied
	vals := readValues(t, store, "t")
	for off, v := range acked {
		if off >= uint64(len(vals)) || vals[off] != v {
			t.Fatalf("offset %d acked for %q but holds %q", off, v, vals[min(off, uint64(len(vals)-1))])
		}
	}
	t.Logf("%d acked, %d timed out, %d stored", len(acked), timeouts.Load(), len(vals))
	if len(acked) == 0 || timeouts.Load() == 0 {
		t.Fatalf("want both answers and timeouts: %d acked, %d timed out", len(acked), timeouts.Load())
	}
}

// TestSingleVoterLeadsWithoutATick: a single voter campaigns as soon as
// its loop starts, fresh or restarted: with a tick interval of an hour no
// election timeout can ever pass, and the node must still serve.
func TestSingleVoterLeadsWithoutATick(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 2; round++ { // fresh, then restarted
		tn := openNode(t, dir, Config{TickInterval: time.Hour})
		if !tn.n.WaitServing(time.Now().Add(5 * time.Second)) {
			t.Fatalf("round %d: not serving without an election timeout: %+v", round, tn.n.Status())
		}
		if err := tn.n.Close(); err != nil {
			t.Fatal(err)
		}
		tn.store.Close()
	}
}

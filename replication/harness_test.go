package replication

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"keel/engine"
	"keel/ring"
)

// harness drives one node's loop by hand, on a fake clock: no loop
// goroutine runs and nothing sleeps. A test enqueues proposals, then runs
// turns (run, tick) and reads the answers; what happens between two calls
// is fixed by the calls alone. (The waiters' deadline reaper still runs on
// the real clock; harness deadlines are far away.)
type harness struct {
	t     *testing.T
	dir   string
	n     *Node
	store *engine.Store
	clock time.Time

	stopped bool
}

// harnessDeadline is far enough that no reaper ever answers a proposal.
const harnessDeadline = time.Hour

// newHarness opens a node on dir (fresh or not) without starting its
// goroutine, and runs its first turn (begin: apply, campaign, publish).
func newHarness(t *testing.T, dir string, cfg Config, wrap func(ring.Backend) ring.Backend) *harness {
	t.Helper()
	base, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	io := base
	if wrap != nil {
		io = wrap(io)
	}
	store, blob, err := engine.OpenStore(engine.StoreConfig{Dir: filepath.Join(dir, "state")}, io)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	h := &harness{t: t, dir: dir, store: store, clock: time.Unix(1_800_000_000, 0)}
	t.Cleanup(func() { // stop (unless the test did), then close the backend
		if !h.stopped {
			h.stop()
		}
		base.Close()
	})
	cfg.WALDir, cfg.IO, cfg.Store, cfg.StoreBlob = filepath.Join(dir, "wal"), io, store, blob
	cfg.Clock = func() time.Time { return h.clock }
	if h.n, err = Open(cfg); err != nil {
		t.Fatalf("Open: %v", err)
	}
	h.n.begin()
	return h
}

// propose enqueues c as a client would, without waiting.
func (h *harness) propose(c *engine.Command) *waiter {
	h.t.Helper()
	w, err := h.n.enqueue(c, time.Now().Add(harnessDeadline))
	if err != nil {
		h.t.Fatalf("enqueue: %v", err)
	}
	return w
}

// run takes everything queued, as the loop would, until the queue is
// empty, and finishes a background checkpoint the turns started.
func (h *harness) run() {
	for {
		select {
		case w := <-h.n.queueIfLeader():
			h.n.turn(loopEvent{kind: eventPropose, proposal: w})
			continue
		case r := <-h.n.reads:
			h.n.turn(loopEvent{kind: eventRead, read: r})
			continue
		case req := <-h.n.confs:
			h.n.turn(loopEvent{kind: eventConf, conf: req})
			continue
		default:
		}
		break
	}
	h.settleCheckpoint()
}

// advance moves the fake clock by d and ticks once.
func (h *harness) advance(d time.Duration) {
	h.clock = h.clock.Add(d)
	h.n.turn(loopEvent{kind: eventTick})
	h.settleCheckpoint()
}

// settleCheckpoint waits for a background checkpoint the last turn
// started (its write runs on its own goroutine) and hands its result to
// the loop, as the loop's select would.
func (h *harness) settleCheckpoint() {
	if h.n.ckptRunning {
		h.n.turn(loopEvent{kind: eventCheckpointDone, err: <-h.n.ckptDone})
	}
}

// answer returns w's outcome, failing when the loop has not answered it.
func (h *harness) answer(w *waiter) (Outcome, error) {
	h.t.Helper()
	select {
	case <-w.done:
		return w.out, w.err
	default:
		h.t.Fatalf("proposal %d not answered", w.id)
		return Outcome{}, nil
	}
}

// stop stops the node as Close does and closes the store.
func (h *harness) stop() {
	h.stopped = true
	for h.n.appendQ != nil && h.n.appendInflight > 0 && h.n.Fault() == nil { // held appends: written now
		jobs := h.writeHeld()
		if len(jobs) == 0 {
			h.t.Fatalf("%d appends in flight, none held", h.n.appendInflight)
		}
		h.deliver(jobs)
	}
	h.n.closing.Store(true)
	h.n.drainAndStop()
	h.n.waiters.close(ErrStopped)
	if err := h.n.wal.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.store.Close()
}

// TestHarnessServesAtBegin: a single voter serves after its first turn,
// fresh and restarted, with no tick at all.
func TestHarnessServesAtBegin(t *testing.T) {
	dir := t.TempDir()
	for round := range 2 {
		h := newHarness(t, dir, Config{}, nil)
		if st := h.n.Status(); !st.Serving || !st.Ready || st.Role != "leader" {
			t.Fatalf("round %d: after begin: %+v", round, st)
		}
		w := h.propose(produceCmd("t", "", "v"))
		h.run()
		if out, err := h.answer(w); err != nil || out.Err != nil || out.Offset != uint64(round) || !out.Durable {
			t.Fatalf("round %d: produce: %+v %v", round, out, err)
		}
		h.stop()
	}
}

// TestHarnessGroupCommit: proposals queued before a turn share one entry
// and one WAL batch; the entry carries the fake clock's time.
func TestHarnessGroupCommit(t *testing.T) {
	h := newHarness(t, t.TempDir(), Config{}, nil)
	defer h.stop()
	var ws []*waiter
	for _, v := range []string{"a", "b", "c"} {
		ws = append(ws, h.propose(produceCmd("t", "", v)))
	}
	h.run()
	var batch uint64
	for i, w := range ws {
		out, err := h.answer(w)
		if err != nil || out.Err != nil || out.Offset != uint64(i) {
			t.Fatalf("proposal %d: %+v %v", i, out, err)
		}
		if i > 0 && out.Batch != batch {
			t.Fatalf("proposal %d in batch %d, the first in %d: want one group commit", i, out.Batch, batch)
		}
		batch = out.Batch
		if out.TimeMs != h.clock.UnixMilli() {
			t.Fatalf("entry time %d, want the leader clock's %d", out.TimeMs, h.clock.UnixMilli())
		}
	}
}

// TestNoCheckpointAfterFault: once a storage fault stopped the node, no
// checkpoint is written, however often the interval comes round.
func TestNoCheckpointAfterFault(t *testing.T) {
	dir := t.TempDir()
	var fb *failAfter
	const interval = time.Minute
	h := newHarness(t, dir, Config{CheckpointInterval: interval},
		func(b ring.Backend) ring.Backend { fb = &failAfter{Backend: b}; return fb })
	h.propose(produceCmd("t", "", "before"))
	h.run()
	h.advance(interval) // the interval passed with work to do: a checkpoint
	ckpt := filepath.Join(dir, "state", "state.ckpt")
	st1, err := os.Stat(ckpt)
	if err != nil || h.n.Status().Checkpoints != 1 {
		t.Fatalf("no checkpoint before the fault: %v, %d written", err, h.n.Status().Checkpoints)
	}
	h.propose(produceCmd("t", "", "not yet checkpointed")) // the next interval has work to do
	h.run()
	fb.fail.Store(true)
	w := h.propose(produceCmd("t", "", "after"))
	h.run()
	if _, err := h.answer(w); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write after the fault: %v, want EIO", err)
	}
	// A proposal registered after the fault gets the fault too, not a
	// deadline: the waiters are closed.
	if err := h.n.waiters.add(&waiter{id: 1, done: make(chan struct{}, 1)}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("registering a waiter after the fault: %v, want EIO", err)
	}
	h.advance(interval)
	h.advance(interval)
	st2, err := os.Stat(ckpt)
	if err != nil || !st2.ModTime().Equal(st1.ModTime()) || h.n.Status().Checkpoints != 1 || h.n.Status().Ready {
		t.Fatalf("checkpoint changed after a fault (%v -> %v, %v, %d written) or node still ready",
			st1.ModTime(), st2.ModTime(), err, h.n.Status().Checkpoints)
	}
	h.n.skipFinalCheckpoint = true
	h.stop()
}

// TestCheckpointInterval: a checkpoint is taken when the interval has
// passed on the leader's clock with WAL written since the last one, and not
// before; a restart replays only what followed it.
func TestCheckpointInterval(t *testing.T) {
	dir := t.TempDir()
	const interval = 30 * time.Second
	h := newHarness(t, dir, Config{CheckpointInterval: interval}, nil)
	h.propose(produceCmd("t", "", "one"))
	h.run()
	h.advance(interval - time.Second)
	if c := h.n.Status().Checkpoints; c != 0 {
		t.Fatalf("%d checkpoints before the interval passed", c)
	}
	h.advance(time.Second)
	if c := h.n.Status().Checkpoints; c != 1 {
		t.Fatalf("%d checkpoints once the interval passed, want 1", c)
	}
	h.advance(interval) // nothing written since: no checkpoint
	if c := h.n.Status().Checkpoints; c != 1 {
		t.Fatalf("%d checkpoints with nothing written, want 1", c)
	}
	// The interval has long passed: the next write is checkpointed at once.
	h.propose(produceCmd("t", "", "two"))
	h.run()
	if c := h.n.Status().Checkpoints; c != 2 {
		t.Fatalf("%d checkpoints after a write past the interval, want 2", c)
	}
	h.propose(produceCmd("t", "", "three"))
	h.run()
	h.n.skipFinalCheckpoint = true // stop as a crash would
	h.stop()
	h = newHarness(t, dir, Config{CheckpointInterval: interval}, nil)
	defer h.stop()
	if _, replayed := h.n.Recovery(); replayed == 0 || replayed > 2 {
		t.Fatalf("replayed %d entries: want only those after the last checkpoint", replayed)
	}
	if vals := readValues(t, h.store, "t"); len(vals) != 3 || vals[2] != "three" {
		t.Fatalf("after restart: %v", vals)
	}
}

// TestWaitServingEndsOnFault: a storage fault before the node ever served
// ends WaitServing (false) instead of holding every request to its
// timeout.
func TestWaitServingEndsOnFault(t *testing.T) {
	h := newHarness(t, t.TempDir(), Config{}, nil)
	h.n.serving = false // as before the first serve
	h.n.servingC = make(chan struct{})
	ret := make(chan bool, 1)
	go func() { ret <- h.n.WaitServing(time.Now().Add(time.Hour)) }()
	h.n.setFault(errors.New("disk gone"))
	select {
	case ok := <-ret:
		if ok {
			t.Fatal("WaitServing reported serving after a fault")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitServing still waiting 10 s after a fault")
	}
	var fault *ring.FaultError
	if err := h.n.Fault(); !errors.As(err, &fault) {
		t.Fatalf("the fault is not a storage fault: %v", err)
	}
	h.n.skipFinalCheckpoint = true
}

// holdAppends gives the harness's node an appender that writes only when
// the test says (writeHeld) and hands back only when it says (deliver):
// the steps the appender goroutine runs, one at a time.
func (h *harness) holdAppends() {
	h.n.appendQ = make(chan *appendJob, appendInflightMax)
	h.n.appendDone = make(chan []*appendJob, appendInflightMax)
	h.n.appenderExited = make(chan struct{})
	close(h.n.appenderExited) // there is no goroutine to wait for
	h.n.appendAloneAsync = true
}

// writeHeld writes every job handed over so far, as the appender would,
// without handing them back.
func (h *harness) writeHeld() []*appendJob {
	var jobs []*appendJob
	for {
		select {
		case j := <-h.n.appendQ:
			jobs = append(jobs, j)
			continue
		default:
		}
		break
	}
	if len(jobs) > 0 {
		var buf []byte
		h.n.writeJobs(jobs, &buf)
	}
	return jobs
}

// deliver hands written jobs back to the loop.
func (h *harness) deliver(jobs []*appendJob) {
	if len(jobs) > 0 {
		h.n.turn(loopEvent{kind: eventAppended, appended: jobs})
	}
}

// TestCheckpointWithAppendInFlight: a state checkpoint captured while an
// append is written but not yet handed back replays that append after a
// crash (its entries lie after the WAL position the loop last confirmed,
// not after the WAL's end at capture); proposals wait while the leader's
// own append is in flight, and are taken together once it is back.
func TestCheckpointWithAppendInFlight(t *testing.T) {
	dir := t.TempDir()
	const interval = time.Minute
	h := newHarness(t, dir, Config{CheckpointInterval: interval}, nil)
	h.holdAppends()

	a := h.propose(produceCmd("t", "", "a"))
	h.run()
	if h.n.appendInflight != 1 {
		t.Fatalf("%d appends in flight, want 1", h.n.appendInflight)
	}
	b1 := h.propose(produceCmd("t", "", "b1"))
	b2 := h.propose(produceCmd("t", "", "b2"))
	h.run()
	if len(h.n.queue) != 2 {
		t.Fatalf("%d proposals queued while the append is in flight, want 2 (taken after it)", len(h.n.queue))
	}
	h.deliver(h.writeHeld())
	if out, err := h.answer(a); err != nil || out.Err != nil || out.Offset != 0 {
		t.Fatalf("a: %+v %v", out, err)
	}
	h.run() // b1 and b2: one entry, one append
	if h.n.appendInflight != 1 {
		t.Fatalf("%d appends in flight for b1 and b2, want 1", h.n.appendInflight)
	}
	written := h.writeHeld() // on disk, not yet handed back
	h.advance(interval)      // a checkpoint falls due now
	if h.n.Status().Checkpoints != 1 {
		t.Fatalf("%d checkpoints, want 1", h.n.Status().Checkpoints)
	}
	h.deliver(written)
	for i, w := range []*waiter{b1, b2} {
		if out, err := h.answer(w); err != nil || out.Err != nil || out.Offset != uint64(i+1) {
			t.Fatalf("b%d: %+v %v", i+1, out, err)
		}
	}
	h.n.skipFinalCheckpoint = true // a crash: the checkpoint above is the last
	h.stop()

	h2 := newHarness(t, dir, Config{CheckpointInterval: interval}, nil)
	if got := readValues(t, h2.store, "t"); fmt.Sprint(got) != "[a b1 b2]" {
		t.Fatalf("after the crash: %q, want [a b1 b2]", got)
	}
}

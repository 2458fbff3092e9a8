package replication

import (
	"container/heap"
	"sync"
	"time"

	"keel/engine"
)

// Outcome is what a proposer learns about its command.
type Outcome struct {
	engine.Result
	Batch   uint64 // WAL group commit that made it durable (0 in rocket mode)
	Durable bool   // fsynced before it was applied

	// Stage times, for timing=1.
	Enqueued   time.Time // when Propose queued the command
	QueueUs    int64     // enqueued → taken into a proposal, microseconds
	SyncWaitUs int64     // proposed → written and fsynced
	ApplyUs    int64     // fsynced → applied
}

// waiter is one request waiting for its command to be applied. Waiters
// are pooled: the done channel (capacity 1, one send per use) and the
// command buffer are reused.
//
// Whoever takes the waiter out of the waiters set answers it, with one
// send on done: the loop (applied, failed) or the reaper (deadline
// passed). The proposer waits on done alone, with no select and no timer
// of its own: a two-case select cost about 5% of a produce's server CPU,
// and arming and stopping a runtime timer per request another 4%.
type waiter struct {
	id        uint64
	done      chan struct{}
	deadline  int64 // nanoseconds after waiters.base (monotonic); the reaper answers ErrTimeout after it
	heapIdx   int   // position in waiters.byDeadline while waiting
	data      []byte
	out       Outcome
	err       error
	enqueued  time.Time
	proposed  time.Time
	persisted time.Time
}

// waiterDataKeepBytes is the largest command buffer a pooled waiter keeps:
// enough for an NDJSON batch of 1000 small messages, small enough that a
// pool of them stays far below the RSS budget.
const waiterDataKeepBytes = 256 << 10

func (n *Node) getWaiter() *waiter {
	if w, ok := n.waiterPool.Get().(*waiter); ok {
		return w
	}
	return &waiter{done: make(chan struct{}, 1)}
}

// putWaiter returns a waiter to the pool: one the loop (or a stop)
// answered, or one that was never queued. A waiter the reaper answered may
// still be held by the loop and is never pooled.
func (n *Node) putWaiter(w *waiter) {
	data := w.data[:0]
	if cap(data) > waiterDataKeepBytes {
		data = nil
	}
	w.id, w.data, w.out, w.err, w.deadline, w.heapIdx = 0, data, Outcome{}, nil, 0, -1
	w.enqueued, w.proposed, w.persisted = time.Time{}, time.Time{}, time.Time{}
	n.waiterPool.Put(w)
}

// waiters maps request ids to waiters and keeps them in a min-heap by
// deadline. The loop delivers; the reaper goroutine answers the ones whose
// deadline passes first, and a late delivery then finds nobody.
type waiters struct {
	mu         sync.Mutex
	m          map[uint64]*waiter
	byDeadline []*waiter     // min-heap on deadline
	kick       chan struct{} // capacity 1: look at the earliest deadline again
	closedErr  error         // set by close: add refuses with it
	quit       chan struct{} // closed by close: the reaper returns
	// base anchors deadlines on the monotonic clock: a stepped wall clock
	// must not time requests out early or late.
	base time.Time
}

func newWaiters() *waiters {
	return &waiters{m: map[uint64]*waiter{}, kick: make(chan struct{}, 1), quit: make(chan struct{}), base: time.Now()}
}

// since returns t as a deadline value (nanoseconds after base).
func (ws *waiters) since(t time.Time) int64 { return int64(t.Sub(ws.base)) }

// add registers w; after close it refuses with close's error (the node
// stopped, or a storage fault stopped it).
func (ws *waiters) add(w *waiter) error {
	ws.mu.Lock()
	if err := ws.closedErr; err != nil {
		ws.mu.Unlock()
		return err
	}
	ws.m[w.id] = w
	ws.push(w)
	first := w.heapIdx == 0
	ws.mu.Unlock()
	if first {
		ws.wake()
	}
	return nil
}

// wake tells the reaper to look at the earliest deadline again.
func (ws *waiters) wake() {
	select {
	case ws.kick <- struct{}{}:
	default: // a kick is already pending
	}
}

// take removes and returns the waiter for id, if it is still waiting.
func (ws *waiters) take(id uint64) (*waiter, bool) {
	ws.mu.Lock()
	w, ok := ws.m[id]
	if ok {
		delete(ws.m, id)
		ws.remove(w)
	}
	ws.mu.Unlock()
	return w, ok
}

// close completes every waiter with err, refuses later adds with it
// (nobody would ever answer them) and stops the reaper. The first close's
// error stays.
func (ws *waiters) close(err error) {
	ws.mu.Lock()
	if ws.closedErr == nil {
		ws.closedErr = err
		close(ws.quit)
	}
	all := ws.m
	ws.m = map[uint64]*waiter{}
	clear(ws.byDeadline)
	ws.byDeadline = ws.byDeadline[:0]
	ws.mu.Unlock()
	for _, w := range all {
		w.err = err
		w.done <- struct{}{}
	}
}

func (ws *waiters) len() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.m)
}

// reap answers ErrTimeout to every waiter whose deadline has passed,
// sleeping until the earliest deadline in between, until the set is
// closed.
// One timer serves every request. With equal timeouts a new waiter never
// becomes the earliest while others wait, so the timer is re-armed about
// once per oldest request, not once per request.
func (ws *waiters) reap() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []*waiter
	for {
		now := ws.since(time.Now())
		next, waiting := int64(0), false
		ws.mu.Lock()
		for len(ws.byDeadline) > 0 {
			w := ws.byDeadline[0]
			if w.deadline > now {
				next, waiting = w.deadline, true
				break
			}
			ws.remove(w)
			delete(ws.m, w.id)
			due = append(due, w)
		}
		ws.mu.Unlock()
		for i, w := range due {
			w.err = ErrTimeout
			w.done <- struct{}{}
			due[i] = nil
		}
		due = due[:0]
		wait := time.Hour
		if waiting {
			wait = time.Duration(next - now)
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-ws.kick:
		case <-ws.quit:
			return
		}
	}
}

// deadlineHeap is container/heap's view of byDeadline; heapIdx follows
// each waiter so that take removes it in O(log n).
type deadlineHeap []*waiter

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *deadlineHeap) Push(x any) {
	w := x.(*waiter)
	w.heapIdx = len(*h)
	*h = append(*h, w)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.heapIdx = -1
	return w
}

func (ws *waiters) push(w *waiter) { heap.Push((*deadlineHeap)(&ws.byDeadline), w) }

func (ws *waiters) remove(w *waiter) { heap.Remove((*deadlineHeap)(&ws.byDeadline), w.heapIdx) }

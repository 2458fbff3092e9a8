package replication

import (
	"sync"
	"sync/atomic"
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
// are pooled: the done channel (capacity 1, one send per use), the timer
// and the command buffer are reused.
//
// Whoever takes the waiter out of the waiters map answers it, with one
// send on done: the loop (applied, failed) or the timer (deadline passed).
// The proposer waits on done alone, with no select: a two-case select
// costs about 5% of a produce's server CPU, a plain receive a fraction.
type waiter struct {
	id        uint64
	done      chan struct{}
	timer     *time.Timer   // AfterFunc: expire armedID; made on first use
	armedID   atomic.Uint64 // the id the timer expires (read on the timer's goroutine)
	data      []byte        // the encoded command; copied into an entry by the loop
	out       Outcome
	err       error
	enqueued  time.Time
	proposed  time.Time
	persisted time.Time
}

// expire answers w with ErrTimeout if nobody answered it yet. It runs on
// the timer's goroutine; the id it takes is the one w had when the timer
// was armed (a waiter whose timer may have fired is never pooled again).
func (ws *waiters) expire(id uint64) {
	if w, ok := ws.take(id); ok {
		w.err = ErrTimeout
		w.done <- struct{}{}
	}
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

// putWaiter returns a waiter to the pool: one that was answered and whose
// timer was stopped before it fired, or one that was never queued.
func (n *Node) putWaiter(w *waiter) {
	data := w.data[:0]
	if cap(data) > waiterDataKeepBytes {
		data = nil
	}
	w.id, w.data, w.out, w.err = 0, data, Outcome{}, nil
	w.enqueued, w.proposed, w.persisted = time.Time{}, time.Time{}, time.Time{}
	n.waiterPool.Put(w)
}

// waiters maps request ids to waiters. The loop delivers; a request that
// times out removes itself, and a late delivery then finds nobody.
type waiters struct {
	mu sync.Mutex
	m  map[uint64]*waiter
}

func (ws *waiters) add(w *waiter) {
	ws.mu.Lock()
	ws.m[w.id] = w
	ws.mu.Unlock()
}

// take removes and returns the waiter for id, if it is still waiting.
func (ws *waiters) take(id uint64) (*waiter, bool) {
	ws.mu.Lock()
	w, ok := ws.m[id]
	if ok {
		delete(ws.m, id)
	}
	ws.mu.Unlock()
	return w, ok
}

// failAll completes every waiter with err.
func (ws *waiters) failAll(err error) {
	ws.mu.Lock()
	all := ws.m
	ws.m = map[uint64]*waiter{}
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

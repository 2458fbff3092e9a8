package replication

import (
	"sync"
	"time"

	"keel/engine"
)

// Outcome is what a proposer learns about its command.
type Outcome struct {
	engine.Result
	Batch   uint64 // WAL group commit that made it durable (0 in rocket mode)
	Durable bool   // fsynced before it was applied

	// Stage times in microseconds, for timing=1.
	QueueUs    int64 // enqueued → taken into a proposal
	SyncWaitUs int64 // proposed → written and fsynced
	ApplyUs    int64 // fsynced → applied
}

// waiter is one request waiting for its command to be applied. Waiters
// are pooled: the done channel (capacity 1, one send per use), the timer
// and the command buffer are reused.
type waiter struct {
	id        uint64
	done      chan struct{}
	timer     *time.Timer
	data      []byte // the encoded command; copied into an entry by the loop
	out       Outcome
	err       error
	enqueued  time.Time
	proposed  time.Time
	persisted time.Time
}

var waiterPool = sync.Pool{New: func() any { return &waiter{done: make(chan struct{}, 1)} }}

// waiterDataKeepBytes is the largest command buffer a pooled waiter keeps:
// enough for an NDJSON batch of 1000 small messages, small enough that a
// pool of them stays far below the RSS budget.
const waiterDataKeepBytes = 256 << 10

func getWaiter() *waiter { return waiterPool.Get().(*waiter) }

// putWaiter returns an answered (or never queued) waiter to the pool.
func putWaiter(w *waiter) {
	data := w.data[:0]
	if cap(data) > waiterDataKeepBytes {
		data = nil
	}
	*w = waiter{done: w.done, timer: w.timer, data: data}
	waiterPool.Put(w)
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

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

// waiter is one request waiting for its command to be applied.
type waiter struct {
	id        uint64
	done      chan struct{}
	out       Outcome
	err       error
	enqueued  time.Time
	proposed  time.Time
	persisted time.Time
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
		close(w.done)
	}
}

func (ws *waiters) len() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.m)
}

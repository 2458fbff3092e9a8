package replication

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// checkHeap fails when byDeadline is not a min-heap or an index is stale.
func checkHeap(t *testing.T, ws *waiters) {
	t.Helper()
	h := ws.byDeadline
	for i, w := range h {
		if w.heapIdx != i {
			t.Fatalf("waiter %d at %d says %d", w.id, i, w.heapIdx)
		}
		if i > 0 && h[(i-1)/2].deadline > w.deadline {
			t.Fatalf("heap order broken at %d", i)
		}
	}
	if len(h) != len(ws.m) {
		t.Fatalf("heap holds %d, map %d", len(h), len(ws.m))
	}
}

// TestWaitersDeadlines: the reaper answers ErrTimeout to every waiter
// nobody took, never before its deadline, and never to one that was taken.
func TestWaitersDeadlines(t *testing.T) {
	ws := newWaiters()
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	all := make([]*waiter, 400)
	for i := range all {
		w := &waiter{id: uint64(i + 1), done: make(chan struct{}, 1)}
		w.deadline = ws.since(start.Add(time.Duration(1+rng.IntN(60)) * time.Millisecond))
		if ws.add(w) != nil {
			t.Fatal("add refused on an open set")
		}
		all[i] = w
	}
	checkHeap(t, ws)
	taken := map[uint64]bool{}
	for _, i := range rng.Perm(len(all))[:150] {
		if _, ok := ws.take(all[i].id); !ok {
			t.Fatalf("take %d: not found", all[i].id)
		}
		taken[all[i].id] = true
		checkHeap(t, ws)
	}
	reaped := make(chan struct{})
	go func() { ws.reap(); close(reaped) }()
	for _, w := range all {
		if taken[w.id] {
			continue
		}
		select {
		case <-w.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("waiter %d never expired", w.id)
		}
		if !errors.Is(w.err, ErrTimeout) {
			t.Fatalf("waiter %d answered %v", w.id, w.err)
		}
		if now := ws.since(time.Now()); now < w.deadline {
			t.Fatalf("waiter %d expired %v early", w.id, time.Duration(w.deadline-now))
		}
	}
	for _, w := range all {
		if taken[w.id] && len(w.done) != 0 {
			t.Fatalf("taken waiter %d was answered too", w.id)
		}
	}
	checkHeap(t, ws)
	// A new earliest deadline wakes the reaper from its long sleep.
	w := &waiter{id: 1000, done: make(chan struct{}, 1), deadline: ws.since(time.Now().Add(5 * time.Millisecond))}
	if err := ws.add(w); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
	case <-time.After(2 * time.Second):
		t.Fatal("a new deadline did not wake the reaper")
	}
	pending := &waiter{id: 1001, done: make(chan struct{}, 1), deadline: ws.since(time.Now().Add(time.Hour))}
	if err := ws.add(pending); err != nil {
		t.Fatal(err)
	}
	ws.close(ErrStopped)
	<-reaped // close stops the reaper
	if <-pending.done; !errors.Is(pending.err, ErrStopped) {
		t.Fatalf("a waiter pending at close got %v", pending.err)
	}
	ws.close(errors.New("later")) // the first error stays
	if err := ws.add(&waiter{id: 1002, done: make(chan struct{}, 1)}); !errors.Is(err, ErrStopped) {
		t.Fatalf("add after close: %v, want ErrStopped", err)
	}
}

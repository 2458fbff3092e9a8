package netio

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func TestQueueFIFOAndFull(t *testing.T) {
	q := NewQueue[int](4)
	capacity := len(q.shards) * len(q.shards[0].slot)
	pushed := 0
	for i := 0; i < 10*capacity; i++ {
		if q.Push(i) {
			pushed++
		}
	}
	if pushed != capacity {
		t.Fatalf("pushed %d into a queue of %d", pushed, capacity)
	}
	var got []int
	q.Drain(1<<30, func(v int) { got = append(got, v) })
	if len(got) != capacity {
		t.Fatalf("drained %d of %d", len(got), capacity)
	}
	if q.Drain(10, func(int) {}) != 0 {
		t.Fatal("drained from an empty queue")
	}
	// Reusable after a full lap.
	if !q.Push(7) || q.Drain(1, func(v int) { got = append(got[:0], v) }) != 1 || got[0] != 7 {
		t.Fatalf("second lap: %v", got)
	}
}

// TestQueueConcurrent: many producers, one consumer; every pushed value
// comes out exactly once.
func TestQueueConcurrent(t *testing.T) {
	const producers, each = 8, 20000
	q := NewQueue[uint64](256)
	var wg sync.WaitGroup
	var rejected atomic.Int64
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for !q.Push(uint64(p)<<32 | uint64(i)) {
					rejected.Add(1)
					runtime.Gosched()
				}
			}
		}(p)
	}
	seen := make([][]bool, producers)
	for p := range seen {
		seen[p] = make([]bool, each)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	total := 0
	for total < producers*each {
		n := q.Drain(1024, func(v uint64) {
			p, i := int(v>>32), int(v&0xffffffff)
			if seen[p][i] {
				t.Errorf("producer %d item %d taken twice", p, i)
			}
			seen[p][i] = true
		})
		total += n
		if n == 0 {
			q.Wait(done)
		}
	}
	if total != producers*each {
		t.Fatalf("took %d of %d", total, producers*each)
	}
	t.Logf("%d pushes met a full shard and retried", rejected.Load())
}

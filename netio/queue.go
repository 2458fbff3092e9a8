package netio

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
)

// Queue is a bounded multi-producer, single-consumer queue, split into
// shards (one per GOMAXPROCS) so that producers on different cores rarely
// touch the same cache lines. Each shard is a ring of sequence-numbered
// slots (Vyukov's bounded queue): a producer claims a slot with one CAS, a
// consumer takes it with plain loads and stores. Push never blocks; a full
// shard reports false, and the caller answers "overloaded".
//
// Order is FIFO within a shard, not across shards.
type Queue[T any] struct {
	shards   []shard[T]
	sleeping atomic.Bool   // the consumer is (about to be) waiting on bell
	bell     chan struct{} // capacity 1: rung when a push finds the consumer sleeping
}

type shard[T any] struct {
	_    [64]byte
	tail atomic.Uint64 // next position producers claim
	_    [56]byte
	head uint64 // next position the consumer takes (consumer only)
	mask uint64
	slot []slot[T]
}

type slot[T any] struct {
	seq atomic.Uint64 // == position: free for it; == position+1: holds its value
	val T
}

// NewQueue returns a queue holding at least capacity items in all, spread
// over one shard per GOMAXPROCS (each rounded up to a power of two).
func NewQueue[T any](capacity int) *Queue[T] {
	n := runtime.GOMAXPROCS(0)
	per := 1
	for per*n < capacity {
		per <<= 1
	}
	q := &Queue[T]{shards: make([]shard[T], n), bell: make(chan struct{}, 1)}
	for i := range q.shards {
		s := &q.shards[i]
		s.mask = uint64(per - 1)
		s.slot = make([]slot[T], per)
		for j := range s.slot {
			s.slot[j].seq.Store(uint64(j))
		}
	}
	return q
}

// Push adds v and rings the bell; false means the shard is full.
func (q *Queue[T]) Push(v T) bool {
	s := &q.shards[rand.Uint32()%uint32(len(q.shards))]
	for {
		pos := s.tail.Load()
		sl := &s.slot[pos&s.mask]
		switch seq := sl.seq.Load(); {
		case seq == pos:
			if s.tail.CompareAndSwap(pos, pos+1) {
				sl.val = v
				sl.seq.Store(pos + 1)
				if q.sleeping.Load() && q.sleeping.CompareAndSwap(true, false) {
					q.bell <- struct{}{} // capacity 1 and one ringer per sleep: never blocks
				}
				return true
			}
		case seq < pos:
			return false // the slot a lap behind is not taken yet: full
		}
	}
}

// Wait blocks the consumer until a push may have happened or cancel is
// closed. It announces the sleep first and then looks again, so a push
// that raced with it is never missed (the eventcount pattern).
func (q *Queue[T]) Wait(cancel <-chan struct{}) {
	q.sleeping.Store(true)
	if !q.empty() {
		if q.sleeping.CompareAndSwap(true, false) {
			return
		}
		<-q.bell // a producer already claimed the ring: take it
		return
	}
	select {
	case <-q.bell:
	case <-cancel:
		if !q.sleeping.CompareAndSwap(true, false) {
			<-q.bell
		}
	}
}

// empty reports whether no shard holds a finished item.
func (q *Queue[T]) empty() bool {
	for i := range q.shards {
		s := &q.shards[i]
		if s.slot[s.head&s.mask].seq.Load() == s.head+1 {
			return false
		}
	}
	return true
}

// Drain takes up to max items, calling fn for each, and returns how many
// it took. Only one goroutine may drain.
func (q *Queue[T]) Drain(max int, fn func(T)) int {
	taken := 0
	for i := range q.shards {
		s := &q.shards[i]
		for taken < max {
			sl := &s.slot[s.head&s.mask]
			if sl.seq.Load() != s.head+1 {
				break // empty, or the producer has not finished writing
			}
			v := sl.val
			var zero T
			sl.val = zero
			sl.seq.Store(s.head + s.mask + 1)
			s.head++
			fn(v)
			taken++
		}
	}
	return taken
}

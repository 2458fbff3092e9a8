package netio

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// The request path: many handler goroutines hand items to one loop
// goroutine, which takes everything waiting at once. These benchmarks
// compare Queue with a plain buffered channel doing the same job.

func BenchmarkHandoffQueue(b *testing.B) {
	q := NewQueue[*int](16384)
	var taken atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			if q.Drain(1<<20, func(*int) { taken.Add(1) }) == 0 {
				select {
				case <-stop:
					return
				default:
				}
				q.Wait(stop)
			}
		}
	}()
	v := new(int)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for !q.Push(v) {
				runtime.Gosched() // full: the request path answers 503 instead
			}
		}
	})
	for taken.Load() < int64(b.N) {
	}
	b.StopTimer()
	close(stop)
}

func BenchmarkHandoffChannel(b *testing.B) {
	ch := make(chan *int, 16384)
	var taken atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				taken.Add(1)
				for more := true; more; {
					select {
					case <-ch:
						taken.Add(1)
					default:
						more = false
					}
				}
			case <-stop:
				return
			}
		}
	}()
	v := new(int)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ch <- v
		}
	})
	for taken.Load() < int64(b.N) {
	}
	b.StopTimer()
	close(stop)
}

package logstore

import (
	"fmt"
	"sync"
	"sync/atomic"

	"keel/engine/record"
)

// Writer is a group-commit front for a Log, for the engine's own tests:
// the crash test (many goroutines appending to one log while it is killed)
// and BenchmarkWriterAppend (make bench-engine: how the log store scales
// with group commit). The product's group commit is replication's loop,
// which takes every waiting command into one Raft entry and one WAL batch.
//
// Concurrent Append calls that wait at the same time are written by one
// flush loop as one batch, with one write and one fdatasync, and each
// returns once its records are durable.
//
// The flush loop takes everything queued while the previous fsync ran, so
// batches grow with load and latency stays near one fsync (the model of
// pebble's LogWriter and of every group-commit WAL).
type Writer struct {
	log *Log

	mu      sync.Mutex
	queue   []*pendingAppend // waiting for the next flush
	closing bool

	wake    chan struct{} // capacity 1: "the queue is not empty"
	stopped chan struct{}

	batches atomic.Uint64 // flushes done
	records atomic.Uint64 // records made durable
}

// Appended is where a Writer.Append landed.
type Appended struct {
	First uint64 // offset of the first record
	Batch uint64 // group commit that carried it
}

type pendingAppend struct {
	recs  []Record
	bytes int
	res   Appended
	err   error
	done  chan struct{}
}

var pendingPool = sync.Pool{New: func() any { return &pendingAppend{done: make(chan struct{}, 1)} }}

// NewWriter starts the flush loop for log. The Writer must be the only
// appender to log.
func NewWriter(log *Log) *Writer {
	w := &Writer{log: log, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go w.flushLoop()
	return w
}

// Append appends recs as consecutive records and returns once they are
// durable. The records of one call are never split across batches.
func (w *Writer) Append(recs []Record) (Appended, error) {
	if len(recs) == 0 {
		return Appended{}, ErrEmptyBatch
	}
	size := 0
	for _, r := range recs {
		size += record.FrameBytes(len(r.Payload))
	}
	if size > w.log.cfg.BatchBytesMax {
		return Appended{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBatchTooLarge, size, w.log.cfg.BatchBytesMax)
	}
	p := pendingPool.Get().(*pendingAppend)
	p.recs, p.bytes = recs, size
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		pendingPool.Put(p)
		return Appended{}, ErrClosed
	}
	w.queue = append(w.queue, p)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-p.done
	res, err := p.res, p.err
	*p = pendingAppend{done: p.done}
	pendingPool.Put(p)
	return res, err
}

// Stats returns how many batches were flushed and how many records they
// carried; records/batches is the mean group-commit size.
func (w *Writer) Stats() (batches, records uint64) {
	return w.batches.Load(), w.records.Load()
}

// Close stops accepting appends, makes everything queued durable, and
// stops the flush loop. It does not close the Log.
func (w *Writer) Close() {
	w.mu.Lock()
	already := w.closing
	w.closing = true
	w.mu.Unlock()
	if !already {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	<-w.stopped
}

func (w *Writer) flushLoop() {
	defer close(w.stopped)
	var spare []*pendingAppend
	var recs []Record
	for range w.wake {
		w.mu.Lock()
		queue, closing := w.queue, w.closing
		w.queue = spare[:0]
		w.mu.Unlock()
		for rest := queue; len(rest) > 0; {
			n := w.batchPrefix(rest)
			recs = w.flush(rest[:n], recs[:0])
			rest = rest[n:]
		}
		clear(queue) // drop references to completed appends
		spare = queue[:0]
		if closing {
			w.mu.Lock()
			empty := len(w.queue) == 0
			w.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// batchPrefix returns how many queued appends fit in one batch (at least one).
func (w *Writer) batchPrefix(queue []*pendingAppend) int {
	total := 0
	for i, p := range queue {
		if i > 0 && total+p.bytes > w.log.cfg.BatchBytesMax {
			return i
		}
		total += p.bytes
	}
	return len(queue)
}

// flush writes one batch and completes its waiters.
func (w *Writer) flush(batch []*pendingAppend, recs []Record) []Record {
	for _, p := range batch {
		recs = append(recs, p.recs...)
	}
	first, id, err := w.log.AppendBatch(recs, true)
	if err == nil {
		w.batches.Add(1)
		w.records.Add(uint64(len(recs)))
	}
	for _, p := range batch {
		p.res, p.err = Appended{First: first, Batch: id}, err
		first += uint64(len(p.recs))
		p.done <- struct{}{}
	}
	clear(recs)
	return recs
}

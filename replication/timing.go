package replication

import (
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// loopTimings are recorded by the loop goroutine and read by /metrics: the
// duration of each WAL write+fdatasync and how many requests each one
// carried (the group-commit size).
type loopTimings struct {
	mu           sync.Mutex
	fsyncUs      *hdrhistogram.Histogram
	groupSize    *hdrhistogram.Histogram
	checkpointUs *hdrhistogram.Histogram
	fsyncSum     int64
	groupSum     int64
	ckptSum      int64
}

func newLoopTimings() *loopTimings {
	return &loopTimings{
		fsyncUs:      hdrhistogram.New(1, 100_000_000, 3),
		groupSize:    hdrhistogram.New(1, 10_000_000, 3),
		checkpointUs: hdrhistogram.New(1, 1_000_000_000, 3),
	}
}

// recordCheckpoint notes how long a state checkpoint took (in the
// background: capture on the loop, then fsyncs and file writes).
func (t *loopTimings) recordCheckpoint(us int64) {
	us = max(us, 1)
	t.mu.Lock()
	_ = t.checkpointUs.RecordValue(us)
	t.ckptSum += us
	t.mu.Unlock()
}

func (t *loopTimings) recordFsync(us int64, requests int) {
	us = max(us, 1)
	t.mu.Lock()
	_ = t.fsyncUs.RecordValue(us)
	t.fsyncSum += us
	if requests > 0 {
		_ = t.groupSize.RecordValue(int64(requests))
		t.groupSum += int64(requests)
	}
	t.mu.Unlock()
}

// Timings are copies of the loop's histograms.
type Timings struct {
	FsyncUs, GroupSize, CheckpointUs      *hdrhistogram.Histogram
	FsyncSumUs, GroupSum, CheckpointSumUs int64
}

// Timings returns copies of the fsync-duration and group-commit-size
// histograms.
func (n *Node) Timings() Timings {
	t := n.timings
	t.mu.Lock()
	defer t.mu.Unlock()
	return Timings{
		FsyncUs:         hdrhistogram.Import(t.fsyncUs.Export()),
		GroupSize:       hdrhistogram.Import(t.groupSize.Export()),
		CheckpointUs:    hdrhistogram.Import(t.checkpointUs.Export()),
		FsyncSumUs:      t.fsyncSum,
		GroupSum:        t.groupSum,
		CheckpointSumUs: t.ckptSum,
	}
}

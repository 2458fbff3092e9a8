package httpfront

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Server-side latencies are kept in HDR histograms (microseconds, 1 µs to
// 100 s, 3 significant digits). hdrhistogram is not goroutine-safe, so
// each histogram is split into shards with a lock each; a recording takes
// a random free shard, and reporting merges the shards.
const (
	histMinUs  = 1
	histMaxUs  = 100_000_000
	histDigits = 3
)

// reportedQuantiles are the percentiles /metrics exposes, as Prometheus
// quantile labels.
var reportedQuantiles = []struct {
	label      string
	percentile float64
}{{"0.5", 50}, {"0.99", 99}, {"0.999", 99.9}, {"0.9999", 99.99}, {"0.99999", 99.999}}

type histShard struct {
	mu sync.Mutex
	h  []*hdrhistogram.Histogram
	_  [32]byte // keep shards on separate cache lines
}

// shardedHists is a group of histograms recorded together (one value for
// each per call), safe for concurrent recording: one lock per recording
// covers every histogram of the group.
type shardedHists struct {
	shards []histShard
	sums   []atomic.Int64
}

func newShardedHists(width int) *shardedHists {
	n := runtime.GOMAXPROCS(0)
	s := &shardedHists{shards: make([]histShard, n), sums: make([]atomic.Int64, width)}
	for i := range s.shards {
		for range width {
			s.shards[i].h = append(s.shards[i].h, hdrhistogram.New(histMinUs, histMaxUs, histDigits))
		}
	}
	return s
}

// record adds one value in microseconds to each histogram of the group
// (clamped into the trackable range); it takes a random free shard.
func (s *shardedHists) record(us ...int64) {
	for i := range us {
		us[i] = min(max(us[i], histMinUs), histMaxUs)
		s.sums[i].Add(us[i])
	}
	n := uint32(len(s.shards))
	start := rand.Uint32() % n
	for i := uint32(0); i < n; i++ {
		sh := &s.shards[(start+i)%n]
		if sh.mu.TryLock() {
			sh.recordLocked(us)
			sh.mu.Unlock()
			return
		}
	}
	sh := &s.shards[start]
	sh.mu.Lock()
	sh.recordLocked(us)
	sh.mu.Unlock()
}

func (sh *histShard) recordLocked(us []int64) {
	for i, v := range us {
		_ = sh.h[i].RecordValue(v)
	}
}

// snapshot merges the shards of histogram i into a new histogram.
func (s *shardedHists) snapshot(i int) *hdrhistogram.Histogram {
	out := hdrhistogram.New(histMinUs, histMaxUs, histDigits)
	for j := range s.shards {
		sh := &s.shards[j]
		sh.mu.Lock()
		out.Merge(sh.h[i])
		sh.mu.Unlock()
	}
	return out
}

// sum returns the sum of every value recorded in histogram i.
func (s *shardedHists) sum(i int) int64 { return s.sums[i].Load() }

// writeSummary writes h as a Prometheus summary with the reported
// quantiles, _count and _sum.
func (w *promWriter) writeSummary(name, help string, h *hdrhistogram.Histogram, sum int64) {
	w.help(name, "summary", help)
	for _, q := range reportedQuantiles {
		var v int64
		if h.TotalCount() > 0 {
			v = h.ValueAtQuantile(q.percentile)
		}
		w.sample(name, []string{"quantile", q.label}, uint64(v))
	}
	w.sample(name+"_count", nil, uint64(h.TotalCount()))
	w.sample(name+"_sum", nil, uint64(max(sum, 0)))
}

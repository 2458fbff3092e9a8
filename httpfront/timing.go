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
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards on separate cache lines
}

// shardedHist is a histogram safe for concurrent recording.
type shardedHist struct {
	shards []histShard
	sum    atomic.Int64
}

func newShardedHist() *shardedHist {
	n := runtime.GOMAXPROCS(0)
	s := &shardedHist{shards: make([]histShard, n)}
	for i := range s.shards {
		s.shards[i].h = hdrhistogram.New(histMinUs, histMaxUs, histDigits)
	}
	return s
}

// record adds one value in microseconds (clamped into the trackable range).
func (s *shardedHist) record(us int64) {
	us = min(max(us, histMinUs), histMaxUs)
	s.sum.Add(us)
	n := uint32(len(s.shards))
	start := rand.Uint32() % n
	for i := uint32(0); i < n; i++ {
		sh := &s.shards[(start+i)%n]
		if sh.mu.TryLock() {
			_ = sh.h.RecordValue(us)
			sh.mu.Unlock()
			return
		}
	}
	sh := &s.shards[start]
	sh.mu.Lock()
	_ = sh.h.RecordValue(us)
	sh.mu.Unlock()
}

// snapshot merges the shards into a new histogram.
func (s *shardedHist) snapshot() *hdrhistogram.Histogram {
	out := hdrhistogram.New(histMinUs, histMaxUs, histDigits)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		out.Merge(sh.h)
		sh.mu.Unlock()
	}
	return out
}

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

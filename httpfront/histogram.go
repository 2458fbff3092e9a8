package httpfront

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Prometheus histograms in seconds, beside the HDR quantile summaries:
// bucket counts add up across nodes (quantiles do not), so a dashboard
// can compute a cluster's percentiles with histogram_quantile().

// latencyBucketsSeconds are the upper bounds of every _seconds histogram:
// Prometheus's default buckets, extended down to 100 µs (a durable
// produce takes about 1 ms here).
var latencyBucketsSeconds = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

const latencyBuckets = len(latencyBucketsSeconds)

// durationHistogram counts durations into latencyBucketsSeconds, lock
// free.
type durationHistogram struct {
	counts [latencyBuckets + 1]atomic.Uint64 // the last: above every bound
	sumNs  atomic.Uint64
}

func (h *durationHistogram) record(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(latencyBucketsSeconds) && s > latencyBucketsSeconds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(max(d, 0)))
}

// writeHistogram writes one labelled series of a histogram: cumulative
// _bucket samples, _sum (seconds) and _count. cumulative(i) is the count
// at or below bound i.
func (w *promWriter) writeHistogram(name string, labels []string, cumulative func(i int) uint64, total uint64, sumSeconds float64) {
	for i, b := range latencyBucketsSeconds {
		w.sample(name+"_bucket", append(labels[:len(labels):len(labels)], "le", strconv.FormatFloat(b, 'g', -1, 64)), cumulative(i))
	}
	w.sample(name+"_bucket", append(labels[:len(labels):len(labels)], "le", "+Inf"), total)
	w.sampleFloatLabels(name+"_sum", labels, sumSeconds)
	w.sample(name+"_count", labels, total)
}

func (w *promWriter) writeDurationHistogram(name string, labels []string, h *durationHistogram) {
	var counts [latencyBuckets + 1]uint64
	var total uint64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	w.writeHistogram(name, labels, func(i int) uint64 {
		var c uint64
		for _, n := range counts[:i+1] {
			c += n
		}
		return c
	}, total, float64(h.sumNs.Load())/1e9)
}

// writeHDRHistogram writes an HDR histogram of microseconds as a
// Prometheus histogram in seconds. A bucket's count is exact up to HDR's
// precision (3 significant digits) at its bound.
func (w *promWriter) writeHDRHistogram(name string, labels []string, h *hdrhistogram.Histogram, sumUs int64) {
	bars := h.Distribution()
	w.writeHistogram(name, labels, func(i int) uint64 {
		boundUs := int64(latencyBucketsSeconds[i] * 1e6)
		var c int64
		for _, b := range bars {
			if b.To <= boundUs {
				c += b.Count
			}
		}
		return uint64(c)
	}, uint64(h.TotalCount()), float64(sumUs)/1e6)
}

// sampleFloatLabels writes a labelled sample with a fractional value.
func (w *promWriter) sampleFloatLabels(name string, labels []string, v float64) {
	w.sample(name, labels, 0)
	w.b = w.b[:len(w.b)-2] // the "0\n" just written
	w.b = strconv.AppendFloat(w.b, v, 'g', -1, 64)
	w.b = append(w.b, '\n')
}

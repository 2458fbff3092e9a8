package logstore

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"keel/ring"
)

// BenchmarkWriterAppend measures group commit: appends/s and the p99 of
// append-until-durable for 64-byte records at several concurrencies, on each
// I/O backend. Run with: make bench-engine (or go test -run '^$'
// -bench WriterAppend ./engine/ with the Makefile's GOFLAGS).
func BenchmarkWriterAppend(b *testing.B) {
	for _, kind := range backendKinds(b) {
		for _, conc := range []int{1, 16, 128} {
			b.Run(fmt.Sprintf("%s/conc=%d", kind, conc), func(b *testing.B) {
				benchAppend(b, kind, conc, 64)
			})
		}
	}
}

func benchAppend(b *testing.B, kind ring.Kind, conc, size int) {
	l := mustOpen(b, b.TempDir(), openBackend(b, kind), LogConfig{})
	defer l.Close()
	w := NewWriter(l)
	defer w.Close()
	payload := make([]byte, size)
	// One histogram per goroutine (hdrhistogram is not goroutine-safe),
	// merged for reporting.
	hists := make([]*hdrhistogram.Histogram, conc)
	for i := range hists {
		hists[i] = hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	}
	per := (b.N + conc - 1) / conc
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func(h *hdrhistogram.Histogram) {
			defer wg.Done()
			rec := []Record{{Type: RecordMessage, Payload: payload}}
			for i := 0; i < per; i++ {
				t0 := time.Now()
				if _, err := w.Append(rec); err != nil {
					b.Error(err)
					return
				}
				_ = h.RecordValue(time.Since(t0).Microseconds())
			}
		}(hists[g])
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	for _, h := range hists {
		all.Merge(h)
	}
	batches, records := w.Stats()
	b.ReportMetric(float64(per*conc)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(float64(all.ValueAtQuantile(50)), "p50-µs")
	b.ReportMetric(float64(all.ValueAtQuantile(99)), "p99-µs")
	b.ReportMetric(float64(records)/float64(max(batches, 1)), "recs/fsync")
}

package httpfront

import (
	"strings"
	"sync"
	"testing"
)

func TestShardedHist(t *testing.T) {
	h := newShardedHist()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := int64(1); v <= 1000; v++ {
				h.record(v)
			}
		}()
	}
	wg.Wait()
	s := h.snapshot()
	if s.TotalCount() != 8000 || h.sum.Load() != 8*500500 {
		t.Fatalf("count %d sum %d", s.TotalCount(), h.sum.Load())
	}
	cases := []struct {
		p    float64
		want int64
	}{{50, 500}, {99, 990}, {100, 1000}}
	for _, c := range cases {
		if got := s.ValueAtQuantile(c.p); got < c.want-1 || got > c.want+1 {
			t.Errorf("p%v = %d, want about %d", c.p, got, c.want)
		}
	}
	h.record(-5) // clamped, not lost
	if h.snapshot().TotalCount() != 8001 {
		t.Fatal("out-of-range value dropped")
	}
	var w promWriter
	w.writeSummary("x_us", "help", s, 42)
	for _, want := range []string{`x_us{quantile="0.5"} 50`, `x_us{quantile="0.99999"} 1000`, "x_us_count 8000", "x_us_sum 42"} {
		if !strings.Contains(string(w.b), want) {
			t.Errorf("summary lacks %q:\n%s", want, w.b)
		}
	}
}

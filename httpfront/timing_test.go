package httpfront

import (
	"strings"
	"sync"
	"testing"
)

func TestShardedHists(t *testing.T) {
	h := newShardedHists(2)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := int64(1); v <= 1000; v++ {
				h.record(v, 2*v)
			}
		}()
	}
	wg.Wait()
	s := h.snapshot(0)
	if s.TotalCount() != 8000 || h.sum(0) != 8*500500 {
		t.Fatalf("count %d sum %d", s.TotalCount(), h.sum(0))
	}
	if s2 := h.snapshot(1); s2.TotalCount() != 8000 || h.sum(1) != 2*8*500500 || s2.Max() < 1999 {
		t.Fatalf("second histogram: count %d sum %d max %d", s2.TotalCount(), h.sum(1), s2.Max())
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
	h.record(-5, 1) // clamped, not lost
	if h.snapshot(0).TotalCount() != 8001 {
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

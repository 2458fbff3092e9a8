package bench

import (
	"net"
	"testing"
	"time"
)

func startNoop(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ServeNoop(ln)
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String()
}

func noopRequest(int, int) Request {
	return Request{Method: "GET", Path: "/x", Check: func(status int, _ []byte) (bool, int) { return status == 200, 2 }}
}

func TestRunModes(t *testing.T) {
	url := startNoop(t)
	cases := []struct {
		name        string
		load        Load
		minRequests int64
		maxRequests int64
	}{
		{"closed loop", Load{Connections: 4, Duration: 300 * time.Millisecond}, 10, 1 << 40},
		{"total cap", Load{Connections: 4, Duration: 10 * time.Second, Total: 25}, 25, 25},
		{"constant rate", Load{Connections: 4, Duration: time.Second, Rate: 200}, 150, 230},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.load
			l.Target, l.Next = url, noopRequest
			r, err := Run(l)
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests < tc.minRequests || r.Requests > tc.maxRequests || r.Errors != 0 || r.Messages != 2*r.Requests {
				t.Fatalf("requests %d (want %d..%d), errors %d (%s), messages %d", r.Requests, tc.minRequests, tc.maxRequests, r.Errors, r.FirstError, r.Messages)
			}
			if r.Latency.TotalCount() != r.Requests {
				t.Fatalf("latency samples %d for %d requests", r.Latency.TotalCount(), r.Requests)
			}
		})
	}
}

// TestCoordinatedOmission: against a server that stalls, constant-rate
// latency is measured from the intended send time, so requests queued
// behind the stall show it.
func TestCoordinatedOmission(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stallUntil := time.Now().Add(300 * time.Millisecond)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					time.Sleep(time.Until(stallUntil))
					c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
				}
			}()
		}
	}()
	r, err := Run(Load{Target: "http://" + ln.Addr().String(), Connections: 1, Duration: 600 * time.Millisecond, Rate: 100, Next: noopRequest})
	if err != nil {
		t.Fatal(err)
	}
	// About 30 requests were due during the 300 ms stall; the median of
	// all ~60 must reflect the waiting, not just one slow request.
	if p90 := r.Latency.ValueAtQuantile(90); p90 < 100_000 {
		t.Fatalf("p90 %d µs: latency is not measured from the intended send time", p90)
	}
}

func TestConsumeCheck(t *testing.T) {
	cases := []struct {
		body   string
		status int
		ok     bool
		n      int
	}{
		{`{"messages":[{"value":"\"count\":5"}],"count":1000,"next_offset":5}`, 200, true, 1000},
		{`{"messages":[],"count":0,"next_offset":5}`, 200, false, 0},
		{`{"ok":false}`, 404, false, 0},
	}
	for _, c := range cases {
		if ok, n := consumeCheck(c.status, []byte(c.body)); ok != c.ok || n != c.n {
			t.Errorf("consumeCheck(%s) = %v %d", c.body, ok, n)
		}
	}
}

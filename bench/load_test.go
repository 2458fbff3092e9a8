package bench

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
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

func TestServerMicros(t *testing.T) {
	cases := []struct {
		body string
		us   int64
		ok   bool
	}{
		{`{"ok":true,"offset":3,"server_us":1234}`, 1234, true},
		{`{"ok":true,"server_us":0}`, 0, true},
		{`{"ok":true,"value":"\"server_us\":9","server_us":77}`, 77, true},
		{`{"ok":true,"offset":3}`, 0, false},
		{`{"server_us":}`, 0, false},
		{`{"server_us":"12"}`, 0, false},
	}
	for _, c := range cases {
		if us, ok := serverMicros([]byte(c.body)); us != c.us || ok != c.ok {
			t.Errorf("serverMicros(%s) = %d %v, want %d %v", c.body, us, ok, c.us, c.ok)
		}
	}
}

// TestServerLatencyRecorded: answers that carry server_us fill
// Result.ServerLatency and the report's server table; others leave it
// empty.
func TestServerLatencyRecorded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go fasthttp.Serve(ln, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true,"durable":true,"server_us":1500}`) })
	timed := func(int, int) Request {
		return Request{Method: "POST", Path: "/p", Check: durableCheck(1), ServerTiming: true}
	}
	r, err := Run(Load{Target: "http://" + ln.Addr().String(), Connections: 2, Duration: time.Second, Total: 20, Next: timed})
	if err != nil {
		t.Fatal(err)
	}
	if r.ServerLatency.TotalCount() != 20 || r.ServerLatency.Max() < 1490 || r.ServerLatency.Max() > 1510 {
		t.Fatalf("server latency: %d samples, max %d µs", r.ServerLatency.TotalCount(), r.ServerLatency.Max())
	}
	row := rowOf(Scenario{Name: "timed"}, Load{Connections: 2}, r)
	var md strings.Builder
	Report{Rows: []Row{row}}.WriteMarkdown(&md)
	if row.ServerLatencyMs == nil || !strings.Contains(md.String(), "| timed | closed-loop | 1.50 |") {
		t.Fatalf("report lacks the server row:\n%s", md.String())
	}
	untimed := startNoop(t)
	r2, err := Run(Load{Target: untimed, Connections: 1, Duration: time.Second, Total: 5, Next: noopRequest})
	if err != nil {
		t.Fatal(err)
	}
	if rowOf(Scenario{}, Load{}, r2).ServerLatencyMs != nil {
		t.Fatal("a server latency row without server_us answers")
	}
}

func TestDiskRun(t *testing.T) {
	d, err := DiskRun{Dir: t.TempDir(), Duration: 200 * time.Millisecond}.Run()
	if err != nil {
		t.Fatal(err)
	}
	q := d.LatencyMs
	if d.Syncs < 1 || q.P50 <= 0 || q.P50 > q.P99 || q.P99 > q.Max {
		t.Fatalf("disk run: %+v", d)
	}
	if entries, _ := os.ReadDir(d.Dir); len(entries) != 0 {
		t.Fatalf("probe file left behind: %v", entries)
	}
	if _, err := (DiskRun{Dir: t.TempDir(), Duration: 2 * time.Minute}).Run(); err == nil {
		t.Fatal("a two-minute probe: no error")
	}
}

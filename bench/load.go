package bench

import (
	"bytes"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Limits every run respects.
const (
	DurationMax    = 10 * time.Minute
	ConnectionsMax = 4096
	requestTimeout = 30 * time.Second
)

// Request is one HTTP request a scenario sends. Check reports whether an
// answer counts as a success and how many messages it carried.
type Request struct {
	Method string
	Path   string // with query
	Body   []byte
	Check  func(status int, body []byte) (ok bool, messages int)
	// ServerTiming: the answer carries "server_us" (produce with
	// timing=1); successful answers record it into Result.ServerLatency.
	ServerTiming bool
}

// Load describes one run against one server.
type Load struct {
	Target      string // base URL, e.g. http://127.0.0.1:1109
	Token       string
	Connections int
	Duration    time.Duration
	Rate        float64 // requests per second over all connections; 0 = closed loop
	Total       int64   // stop after this many requests (0 = only the duration bounds the run)
	Next        func(worker, i int) Request
	Progress    func(done time.Duration)
}

// Result is what a run measured. Latencies are in microseconds.
type Result struct {
	Requests int64
	Errors   int64
	Messages int64
	Elapsed  time.Duration
	Latency  *hdrhistogram.Histogram
	// ServerLatency holds what the server said it spent on each answer
	// (server_us), for requests with ServerTiming; empty otherwise.
	ServerLatency *hdrhistogram.Histogram
	FirstError    string
}

// RequestsPerSec and MessagesPerSec are rates over the run.
func (r Result) RequestsPerSec() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }
func (r Result) MessagesPerSec() float64 { return float64(r.Messages) / r.Elapsed.Seconds() }

// Run sends the load and returns what it measured. Each connection has
// its own worker goroutine and histogram (hdrhistogram is not
// goroutine-safe); they are merged at the end.
func Run(l Load) (Result, error) {
	if l.Connections < 1 || l.Connections > ConnectionsMax {
		return Result{}, fmt.Errorf("bench: connections %d outside 1..%d", l.Connections, ConnectionsMax)
	}
	if l.Duration <= 0 || l.Duration > DurationMax {
		return Result{}, fmt.Errorf("bench: duration %v outside (0, %v]", l.Duration, DurationMax)
	}
	u, err := url.Parse(l.Target)
	if err != nil || u.Host == "" {
		return Result{}, fmt.Errorf("bench: target %q is not a URL", l.Target)
	}
	client := &fasthttp.HostClient{Addr: u.Host, MaxConns: l.Connections, ReadTimeout: requestTimeout,
		WriteTimeout: requestTimeout, MaxIdleConnDuration: time.Minute}
	workers := make([]*worker, l.Connections)
	start := time.Now()
	deadline := start.Add(l.Duration)
	var wg sync.WaitGroup
	var stop atomic.Bool
	var sent atomic.Int64
	for i := range workers {
		w := &worker{id: i, load: &l, client: client, hist: newLatencyHist(), serverHist: newLatencyHist(), sent: &sent}
		if l.Rate > 0 {
			// Each worker sends every conns/rate; workers are staggered.
			w.interval = time.Duration(float64(l.Connections) / l.Rate * float64(time.Second))
			w.next = start.Add(time.Duration(i) * w.interval / time.Duration(l.Connections))
		}
		workers[i] = w
		wg.Add(1)
		go func() { defer wg.Done(); w.run(deadline, &stop) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-ticker.C:
			if l.Progress != nil {
				l.Progress(time.Since(start))
			}
			if time.Now().After(deadline.Add(requestTimeout)) {
				stop.Store(true) // a stuck server cannot hold the run forever
			}
		}
	}
	res := Result{Elapsed: time.Since(start), Latency: newLatencyHist(), ServerLatency: newLatencyHist()}
	for _, w := range workers {
		res.Requests += w.requests
		res.Errors += w.errors
		res.Messages += w.messages
		res.Latency.Merge(w.hist)
		res.ServerLatency.Merge(w.serverHist)
		if res.FirstError == "" {
			res.FirstError = w.firstError
		}
	}
	return res, nil
}

func newLatencyHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 120_000_000, 3) }

type worker struct {
	id         int
	load       *Load
	client     *fasthttp.HostClient
	hist       *hdrhistogram.Histogram
	serverHist *hdrhistogram.Histogram // server_us of answers that carry it
	interval   time.Duration           // constant rate: time between intended sends
	next       time.Time               // constant rate: this worker's next intended send
	requests   int64
	errors     int64
	messages   int64
	firstError string
	sent       *atomic.Int64 // requests started by all workers, for Load.Total
}

func (w *worker) run(deadline time.Time, stop *atomic.Bool) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for i := 0; !stop.Load(); i++ {
		intended := time.Now()
		if w.interval > 0 {
			intended = w.next
			w.next = w.next.Add(w.interval)
			if wait := time.Until(intended); wait > 0 {
				time.Sleep(wait)
			}
		}
		if !intended.Before(deadline) {
			return
		}
		if w.load.Total > 0 && w.sent.Add(1) > w.load.Total {
			return
		}
		r := w.load.Next(w.id, i)
		req.Reset()
		req.Header.SetMethod(r.Method)
		req.SetRequestURI(w.load.Target + r.Path)
		if w.load.Token != "" {
			req.Header.Set("Authorization", "Bearer "+w.load.Token)
		}
		req.SetBody(r.Body)
		err := w.client.DoTimeout(req, resp, requestTimeout)
		// Latency from the intended send time: a slow answer delays the
		// requests behind it, and that wait is counted (no coordinated
		// omission).
		_ = w.hist.RecordValue(max(time.Since(intended).Microseconds(), 1))
		w.requests++
		ok, msgs := err == nil, 0
		if ok && r.Check != nil {
			ok, msgs = r.Check(resp.StatusCode(), resp.Body())
		}
		if !ok {
			w.errors++
			if w.firstError == "" {
				if err != nil {
					w.firstError = err.Error()
				} else {
					w.firstError = fmt.Sprintf("%d %s", resp.StatusCode(), truncate(resp.Body(), 200))
				}
			}
			continue
		}
		w.messages += int64(msgs)
		if r.ServerTiming {
			if us, ok := serverMicros(resp.Body()); ok {
				_ = w.serverHist.RecordValue(max(us, 1))
			}
		}
	}
}

var serverUsKey = []byte(`"server_us":`)

// serverMicros finds "server_us":N in a produce answer with timing=1.
func serverMicros(body []byte) (int64, bool) { return intAfter(body, serverUsKey) }

// intAfter reads the non-negative integer that follows the last key in
// body (the answers' own fields come after any message content).
func intAfter(body, key []byte) (int64, bool) {
	i := bytes.LastIndex(body, key)
	if i < 0 {
		return 0, false
	}
	var n int64
	digits := 0
	for _, c := range body[i+len(key):] {
		if c < '0' || c > '9' || digits == 18 {
			break
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return n, digits > 0
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

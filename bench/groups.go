package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// StreamResult is Server-Sent Events delivery measured under produce load:
// how long a message takes from the moment its produce is sent to the
// moment a connected stream receives it (issue 13's target: under 5 ms
// at the median at 10,000 produces/s).
type StreamResult struct {
	Streams          int     `json:"streams"`
	ProduceRate      float64 `json:"produce_rate"`
	Produced         int64   `json:"produced"`
	ProducedPerSec   float64 `json:"produced_per_s"`
	Delivered        int64   `json:"delivered"` // events received, all streams together
	DeliveryP50Ms    float64 `json:"delivery_p50_ms"`
	DeliveryP99Ms    float64 `json:"delivery_p99_ms"`
	DeliveryMaxMs    float64 `json:"delivery_max_ms"`
	ProduceP50Ms     float64 `json:"produce_p50_ms"`
	ProduceP99Ms     float64 `json:"produce_p99_ms"`
	SessionTimeoutMs int     `json:"session_timeout_ms"`
	RebalanceSec     float64 `json:"rebalance_s"` // a member's last heartbeat → every partition owned by the others
}

// StreamRun starts binary on a fresh data directory, opens Streams event
// streams on one partition, produces durable 64 B messages at Rate for
// Duration (each carrying its send time), and records each event's
// delivery time. It then times a rebalance: three members share six
// partitions, one stops sending heartbeats, and the run waits until the
// two others own every partition.
type StreamRun struct {
	Binary   string
	Port     int
	Streams  int
	Rate     float64
	Duration time.Duration
	Progress *Progress
}

// Run performs the measurement. The server is always stopped on return.
func (r StreamRun) Run() (*StreamResult, error) {
	data, err := os.MkdirTemp("", "keel-bench-stream")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(data)
	target := fmt.Sprintf("http://127.0.0.1:%d", r.Port)
	c := NewClient(target, "dev")
	cmd := exec.Command(r.Binary, "serve", "--port", fmt.Sprint(r.Port), "--data", data, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := c.WaitReady(time.Minute); err != nil {
		return nil, err
	}
	const topic = "bench-stream"
	if err := c.CreateTopic(topic, 1); err != nil {
		return nil, err
	}
	res := &StreamResult{Streams: r.Streams, ProduceRate: r.Rate}
	hist := hdrhistogram.New(1, 60_000_000, 3) // microseconds
	var mu sync.Mutex
	var wg sync.WaitGroup
	var bodies []interface{ Close() error }
	for range r.Streams {
		req, _ := http.NewRequest("GET", target+"/broker/stream/"+topic+"/bench/0", nil)
		req.Header.Set("Authorization", "Bearer dev")
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			return nil, fmt.Errorf("bench: stream: %s", resp.Status)
		}
		bodies = append(bodies, resp.Body)
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := hdrhistogram.New(1, 60_000_000, 3)
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				now := time.Now().UnixNano()
				var m struct{ Value string }
				if json.Unmarshal([]byte(data), &m) != nil {
					continue
				}
				sent, err := strconv.ParseInt(strings.TrimRight(m.Value, "x"), 10, 64)
				if err != nil {
					continue
				}
				local.RecordValue(max(1, (now-sent)/1000))
			}
			mu.Lock()
			hist.Merge(local)
			mu.Unlock()
		}()
	}
	load, err := Run(Load{Target: target, Token: "dev", Connections: 32, Duration: r.Duration, Rate: r.Rate,
		Next: func(int, int) Request {
			v := strconv.FormatInt(time.Now().UnixNano(), 10)
			body := []byte(v + strings.Repeat("x", max(0, 64-len(v))))
			return Request{Method: "POST", Path: "/broker/topics/" + topic + "/produce?partition=0", Body: body, Check: durableCheck(1)}
		},
		Progress: func(done time.Duration) {
			if r.Progress != nil {
				r.Progress.Update("stream: produce with streams open", done, r.Duration)
			}
		}})
	if err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond) // the last events in flight
	for _, b := range bodies {
		b.Close()
	}
	wg.Wait()
	if load.Errors > 0 {
		return nil, fmt.Errorf("bench: stream: %d produce errors: %s", load.Errors, load.FirstError)
	}
	res.Produced, res.ProducedPerSec = load.Requests, load.RequestsPerSec()
	res.Delivered = hist.TotalCount()
	q := quantilesMs(hist)
	res.DeliveryP50Ms, res.DeliveryP99Ms, res.DeliveryMaxMs = q.P50, q.P99, q.Max
	pq := quantilesMs(load.Latency)
	res.ProduceP50Ms, res.ProduceP99Ms = pq.P50, pq.P99
	if want := load.Requests * int64(r.Streams); res.Delivered != want {
		return res, fmt.Errorf("bench: stream: %d events delivered, want %d (%d produced × %d streams)", res.Delivered, want, load.Requests, r.Streams)
	}
	res.SessionTimeoutMs = 3000
	res.RebalanceSec, err = timeRebalance(c, res.SessionTimeoutMs)
	return res, err
}

// timeRebalance joins three members to a group over a 6-partition topic,
// keeps two sending heartbeats, stops the third and returns the seconds
// from its last heartbeat until the two own every partition.
func timeRebalance(c *Client, sessionMs int) (float64, error) {
	const topic = "bench-rebalance"
	if err := c.CreateTopic(topic, 6); err != nil {
		return 0, err
	}
	gens := map[string]int64{}
	join := func(id string) error {
		status, b, err := c.do("POST", "/broker/groups/bench/join", []byte(fmt.Sprintf(`{"topic":%q,"member_id":%q,"session_timeout_ms":%d}`, topic, id, sessionMs)))
		if err != nil || status != 200 {
			return fmt.Errorf("bench: join: %d %v %s", status, err, truncate(b, 200))
		}
		var a struct{ Generation int64 }
		json.Unmarshal(b, &a)
		gens[id] = a.Generation
		return nil
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := join(id); err != nil {
			return 0, err
		}
	}
	heartbeat := func(id string) error {
		status, _, err := c.do("POST", "/broker/groups/bench/heartbeat", []byte(fmt.Sprintf(`{"member_id":%q,"generation":%d}`, id, gens[id])))
		if err == nil && status == 409 {
			return join(id)
		}
		return err
	}
	for _, id := range []string{"a", "b", "c"} { // everyone on the last generation
		if err := heartbeat(id); err != nil {
			return 0, err
		}
	}
	if err := heartbeat("c"); err != nil { // its last
		return 0, err
	}
	lastC := time.Now()
	deadline := lastC.Add(time.Duration(sessionMs)*time.Millisecond + 30*time.Second)
	for time.Now().Before(deadline) {
		for _, id := range []string{"a", "b"} {
			if err := heartbeat(id); err != nil {
				return 0, err
			}
		}
		status, b, err := c.do("GET", "/broker/groups/bench", nil)
		if err == nil && status == 200 {
			var g struct {
				Members []struct {
					Assignments []struct{ Partitions []int }
				}
			}
			json.Unmarshal(b, &g)
			owned := 0
			for _, m := range g.Members {
				for _, a := range m.Assignments {
					owned += len(a.Partitions)
				}
			}
			if len(g.Members) == 2 && owned == 6 {
				return time.Since(lastC).Seconds(), nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("bench: the group did not rebalance within the session timeout + 30 s")
}

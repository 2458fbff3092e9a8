package httpfront

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a log destination for several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// promSeries returns the value of each sample of name (labels as written).
func promSeries(metrics, name string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func TestSecondsHistogramsAndErrorLogs(t *testing.T) {
	logs := &lockedBuffer{}
	ts := startServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"h","partitions":1}`), 200, "")
	for i := range 5 {
		ts.expect(ts.do("POST", "/broker/topics/h/produce?partition=0", fmt.Sprint(i)), 200, "")
	}
	ts.expect(ts.do("GET", "/broker/consume/h/g/7", ""), 404, "unknown_partition")
	m := string(ts.do("GET", "/metrics", "").body)
	for _, want := range []string{"# TYPE keel_http_request_duration_seconds histogram", "# TYPE keel_produce_stage_seconds histogram", "# TYPE keel_fsync_seconds histogram"} {
		if !strings.Contains(m, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}
	buckets := promSeries(m, `keel_http_request_duration_seconds_bucket{route="produce",`)
	if len(buckets) != latencyBuckets+1 {
		t.Fatalf("%d produce buckets: %v", len(buckets), buckets)
	}
	prev := 0.0
	for _, b := range latencyBucketsSeconds {
		v := buckets[fmt.Sprintf(`keel_http_request_duration_seconds_bucket{route="produce",le="%s"}`, strconv.FormatFloat(b, 'g', -1, 64))]
		if v < prev {
			t.Fatalf("buckets not cumulative at %g: %v", b, buckets)
		}
		prev = v
	}
	inf := buckets[`keel_http_request_duration_seconds_bucket{route="produce",le="+Inf"}`]
	count := promSeries(m, `keel_http_request_duration_seconds_count{route="produce"}`)[`keel_http_request_duration_seconds_count{route="produce"}`]
	sum := promSeries(m, `keel_http_request_duration_seconds_sum{route="produce"}`)[`keel_http_request_duration_seconds_sum{route="produce"}`]
	if inf != 5 || count != 5 || sum <= 0 || sum > 5*10 {
		t.Fatalf("produce: +Inf %v, count %v, sum %v s", inf, count, sum)
	}
	if c := promSeries(m, `keel_produce_stage_seconds_count{stage="server"}`)[`keel_produce_stage_seconds_count{stage="server"}`]; c != 5 {
		t.Fatalf("produce stage server count %v, want 5", c)
	}
	if c := promSeries(m, "keel_fsync_seconds_count")["keel_fsync_seconds_count"]; c < 1 {
		t.Fatalf("fsync count %v", c)
	}
	// The refused request's log line names its route and code.
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "request error" {
			continue
		}
		if rec["route"] == "consume" && rec["code"] == "unknown_partition" && rec["status"] == float64(404) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no request error line with route and code in:\n%s", logs.String())
	}
}

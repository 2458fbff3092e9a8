package httpfront

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"keel/engine"
	"keel/engine/logstore"
	"keel/replication"
)

// startSmallSegments runs a server whose partitions roll every 4 KiB.
func startSmallSegments(t *testing.T) *testServer {
	return startServerIO(t, engine.StoreConfig{Partition: logstore.LogConfig{SegmentBytes: 4 << 10, BatchBytesMax: 4 << 10}},
		replication.Config{}, nil, nil)
}

func (ts *testServer) produceN(topic string, partition, n int) {
	ts.t.Helper()
	for i := range n {
		r := ts.do("POST", fmt.Sprintf("/broker/topics/%s/produce?partition=%d", topic, partition), fmt.Sprintf("%03d-%s", i, strings.Repeat("v", 90)))
		ts.expect(r, 200, "")
	}
}

func TestDeleteBeforeContract(t *testing.T) {
	ts := startSmallSegments(t)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"d","partitions":2}`), 200, "")
	ts.produceN("d", 0, 200)
	cases := []struct {
		body    string
		status  int
		code    string
		deleted float64
	}{
		{`{"topic":"d","partition":0,"before_offset":50}`, 200, "", 50},
		{`{"topic":"d","partition":0,"before_offset":20}`, 200, "", 0}, // never down
		{`{"topic":"d","partition":0,"before_offset":120}`, 200, "", 70},
		{`{"topic":"d","partition":1,"before_offset":120}`, 200, "", 0}, // empty partition: clamped to its end
		{`{"topic":"d","partition":0}`, 400, "missing_fields", 0},
		{`{"topic":"d","before_offset":1}`, 400, "missing_fields", 0},
		{`{"topic":"d","partition":-1,"before_offset":1}`, 400, "invalid_partition", 0},
		{`{"topic":"d","partition":0,"before_offset":"9"}`, 400, "invalid_offset", 0},
		{`{"topic":"d","partition":0,"before_offset":-3}`, 400, "invalid_offset", 0},
		{`{"topic":"nope","partition":0,"before_offset":1}`, 404, "unknown_topic", 0},
		{`{"topic":"d","partition":2,"before_offset":1}`, 404, "unknown_partition", 0},
		{`{"topic":"bad/name","partition":0,"before_offset":1}`, 400, "invalid_topic", 0},
		{`not json`, 400, "invalid_json", 0},
	}
	var freed float64
	for _, tc := range cases {
		r := ts.do("POST", "/broker/delete-before", tc.body)
		ts.expect(r, tc.status, tc.code)
		if tc.status == 200 {
			if r.num("deleted_count") != tc.deleted || r.json["ok"] != true {
				t.Fatalf("%s: %s", tc.body, r.body)
			}
			freed += r.num("freed_bytes")
		}
	}
	if freed == 0 {
		t.Fatal("no bytes freed after deleting 120 of 200 records in 4 KiB segments")
	}
	// Reads below the start begin at it; an explicit offset too.
	for _, q := range []string{"", "?offset=0", "?offset=-1"} {
		r := ts.do("GET", "/broker/consume/d/g/0"+q, "")
		msgs := r.json["messages"].([]any)
		if len(msgs) == 0 || msgs[0].(map[string]any)["offset"].(float64) != 120 {
			t.Fatalf("consume%s after delete-before 120: %s", q, r.body)
		}
	}
	r := ts.do("GET", "/broker/topics/d", "")
	p0 := r.json["partition_info"].([]any)[0].(map[string]any)
	if p0["log_start_offset"].(float64) != 120 || p0["log_end_offset"].(float64) != 200 {
		t.Fatalf("describe after delete-before: %s", r.body)
	}
	// Scope: deleting data is an admin's.
	r = ts.do("POST", "/broker/delete-before", `{"topic":"d","partition":0,"before_offset":150}`, "Authorization", "Bearer writetok")
	ts.expect(r, 403, "forbidden")
}

func TestRetentionContract(t *testing.T) {
	ts := startSmallSegments(t)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"r","partitions":2}`), 200, "")
	cases := []struct {
		body       string
		status     int
		code       string
		ttl, size  bool
		p0, p1     string // expected policies as "ttl/max"
		defaultPol string
	}{
		{`{"topic":"r","partition":0,"ttl_ms":60000}`, 200, "", true, false, "60000/0", "0/0", ""},
		{`{"topic":"r","max_bytes":104857600}`, 200, "", false, true, "60000/104857600", "0/104857600", ""},
		{`{"topic":"r","partition":1,"ttl_ms":1000,"max_bytes":0}`, 200, "", true, true, "60000/104857600", "1000/0", ""},
		{`{"topic":"*","ttl_ms":0}`, 200, "", true, false, "0/104857600", "0/0", ""},
		{`{"topic":"r"}`, 400, "missing_fields", false, false, "", "", ""},
		{`{"ttl_ms":5}`, 400, "missing_fields", false, false, "", "", ""},
		{`{"topic":"r","ttl_ms":-5}`, 400, "invalid_ttl_ms", false, false, "", "", ""},
		{`{"topic":"r","max_bytes":"5"}`, 400, "invalid_max_bytes", false, false, "", "", ""},
		{`{"topic":"r","ttl_ms":9223372036854775808}`, 400, "invalid_ttl_ms", false, false, "", "", ""},
		{`{"topic":"r","partition":2,"ttl_ms":5}`, 404, "unknown_partition", false, false, "", "", ""},
		{`{"topic":"nope","ttl_ms":5}`, 404, "unknown_topic", false, false, "", "", ""},
		{`{"topic":"*","partition":0,"ttl_ms":5}`, 400, "invalid_partition", false, false, "", "", ""},
	}
	policy := func(p map[string]any) string {
		pol := p["retention"].(map[string]any)
		return fmt.Sprintf("%.0f/%.0f", pol["ttl_ms"], pol["max_bytes"])
	}
	for _, tc := range cases {
		r := ts.do("POST", "/broker/retention", tc.body)
		ts.expect(r, tc.status, tc.code)
		if tc.status != 200 {
			continue
		}
		if r.json["ttl_applied"] != tc.ttl || r.json["size_applied"] != tc.size {
			t.Fatalf("%s: %s", tc.body, r.body)
		}
		d := ts.do("GET", "/broker/topics/r", "")
		parts := d.json["partition_info"].([]any)
		if got0, got1 := policy(parts[0].(map[string]any)), policy(parts[1].(map[string]any)); got0 != tc.p0 || got1 != tc.p1 {
			t.Fatalf("%s: policies %s, %s; want %s, %s", tc.body, got0, got1, tc.p0, tc.p1)
		}
	}
	// "*" reaches topics created later.
	ts.expect(ts.do("POST", "/broker/retention", `{"topic":"*","ttl_ms":7000}`), 200, "")
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"later","partitions":1}`), 200, "")
	if got := policy(ts.do("GET", "/broker/topics/later", "").json); got != "7000/0" {
		t.Fatalf("new topic's policy %s, want 7000/0", got)
	}
}

// Records past their TTL are never served, before any sweep runs.
func TestTTLFilterOnRead(t *testing.T) {
	ts := startSmallSegments(t)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"x","partitions":1}`), 200, "")
	ts.produceN("x", 0, 30)
	time.Sleep(300 * time.Millisecond)
	ts.expect(ts.do("POST", "/broker/retention", `{"topic":"x","ttl_ms":200}`), 200, "")
	r := ts.do("GET", "/broker/consume/x/g/0?offset=0", "")
	if r.num("count") != 0 || r.num("next_offset") != 30 {
		t.Fatalf("consume of expired records: %s", r.body)
	}
	ts.produceN("x", 0, 3)
	r = ts.do("GET", "/broker/consume/x/g/0?offset=-1", "")
	if r.num("count") != 3 || r.json["messages"].([]any)[0].(map[string]any)["offset"].(float64) != 30 {
		t.Fatalf("consume after fresh writes: %s", r.body)
	}
	// Clearing the TTL serves them again (nothing was deleted yet: the
	// sweep did not run).
	ts.expect(ts.do("POST", "/broker/retention", `{"topic":"x","ttl_ms":0}`), 200, "")
	if r := ts.do("GET", "/broker/consume/x/g/0?offset=0", ""); r.num("count") != 33 {
		t.Fatalf("consume after the TTL was cleared: %s", r.body)
	}
}

func TestOffsetsForTime(t *testing.T) {
	ts := startSmallSegments(t)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"o","partitions":1}`), 200, "")
	ts.produceN("o", 0, 40)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now().UnixMilli()
	time.Sleep(20 * time.Millisecond)
	ts.produceN("o", 0, 40)
	r := ts.do("GET", fmt.Sprintf("/broker/offsets/o/0?timestamp_ms=%d", mid), "")
	if r.num("offset") != 40 || r.json["found"] != true || r.num("log_end_offset") != 80 || r.num("log_start_offset") != 0 {
		t.Fatalf("offsets at %d: %s", mid, r.body)
	}
	if r := ts.do("GET", "/broker/offsets/o/0?timestamp_ms=0", ""); r.num("offset") != 0 || r.json["found"] != true {
		t.Fatalf("offsets at 0: %s", r.body)
	}
	if r := ts.do("GET", fmt.Sprintf("/broker/offsets/o/0?timestamp_ms=%d", time.Now().Add(time.Hour).UnixMilli()), ""); r.num("offset") != 80 || r.json["found"] != false {
		t.Fatalf("offsets in the future: %s", r.body)
	}
	if r := ts.do("GET", "/broker/offsets/o/0", ""); r.num("log_end_offset") != 80 || r.json["offset"] != nil {
		t.Fatalf("offsets without a time: %s", r.body)
	}
	// Consume from a time.
	r = ts.do("GET", fmt.Sprintf("/broker/consume/o/g/0?from_ts_ms=%d&limit=5", mid), "")
	if r.num("count") != 5 || r.json["messages"].([]any)[0].(map[string]any)["offset"].(float64) != 40 {
		t.Fatalf("consume from_ts_ms: %s", r.body)
	}
	for _, c := range []struct{ path, code string }{
		{"/broker/offsets/o/0?timestamp_ms=abc", "invalid_timestamp_ms"},
		{"/broker/consume/o/g/0?from_ts_ms=1.5", "invalid_from_ts_ms"},
		{"/broker/consume/o/g/0?from_ts_ms=1&offset=3", "invalid_offset"},
	} {
		ts.expect(ts.do("GET", c.path, ""), 400, c.code)
	}
	ts.expect(ts.do("GET", "/broker/offsets/o/1", ""), 404, "unknown_partition")
	ts.expect(ts.do("GET", "/broker/offsets/none/0", ""), 404, "unknown_topic")
	ts.expect(ts.do("HEAD", "/broker/offsets/o/0", ""), 200, "")
}

// Expired records skipped one by one (a leader's clock stepped back, so
// they follow a fresh one) use up a read's byte budget; the page must go
// on past them rather than come back empty while a fresh record exists.
func TestTTLSkipsPastBudget(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	ts := startServerWith(t, replication.Config{Clock: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }}, nil)
	setClock := func(c time.Time) { mu.Lock(); clock = c; mu.Unlock() }
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"skew","partitions":1}`), 200, "")
	ts.expect(ts.do("POST", "/broker/topics/skew/produce?partition=0", "fresh-0"), 200, "")
	setClock(time.Now().Add(-10 * time.Hour))
	big := strings.Repeat("o", 30<<10)
	for range 50 { // 1.5 MB of expired records: more than a page's 1 MiB
		ts.expect(ts.do("POST", "/broker/topics/skew/produce?partition=0", big), 200, "")
	}
	setClock(time.Now())
	ts.expect(ts.do("POST", "/broker/topics/skew/produce?partition=0", "fresh-51"), 200, "")
	ts.expect(ts.do("POST", "/broker/retention", `{"topic":"skew","ttl_ms":3600000}`), 200, "")
	r := ts.do("GET", "/broker/consume/skew/g/0?offset=1", "")
	msgs := r.json["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["value"] != "fresh-51" || r.num("next_offset") != 52 {
		t.Fatalf("page after 50 expired records: %.300s", r.body)
	}
}

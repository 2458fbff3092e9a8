package httpfront

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"keel/engine"
	"keel/replication"
	"keel/ring"
)

func TestTopicsContract(t *testing.T) {
	ts := startServer(t, nil)
	cases := []struct {
		body   string
		status int
		code   string
	}{
		{`{"name":"events","partitions":3}`, 200, ""},
		{`{"name":"events","partitions":3}`, 200, ""},
		{`{"name":"events","partitions":4}`, 409, "topic_exists"},
		{`{"name":"dflt"}`, 200, ""},
		{`{"name":"bad/name"}`, 400, "invalid_topic"},
		{`{"name":"."}`, 400, "invalid_topic"},
		{`{"name":"` + strings.Repeat("a", 250) + `"}`, 400, "invalid_topic"},
		{`{"name":"x","partitions":0}`, 400, "invalid_partitions"},
		{`{"name":"x","partitions":1025}`, 400, "invalid_partitions"},
		{`{"name":"x","partitions":"8"}`, 400, "invalid_partitions"},
		{`{"name":"x","partitions":1.5}`, 400, "invalid_partitions"},
		{`{"name":"x","partitions":null}`, 400, "invalid_partitions"},
		{`{"name":"x","partitions":-1}`, 400, "invalid_partitions"},
		{`{"partitions":2}`, 400, "missing_fields"},
		{`{"name":"x"} trailing`, 400, "invalid_json"},
		{`[1]`, 400, "invalid_json"},
		{`{"name":"x","extra":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, 400, "invalid_json"},
		{`{"name":"ok","unknown":{"a":[1,2]}}`, 200, ""},
	}
	for _, tc := range cases {
		r := ts.do("POST", "/broker/topics", tc.body)
		ts.expect(r, tc.status, tc.code)
	}
	r := ts.do("POST", "/broker/topics", `{"name":"events","partitions":3}`)
	if r.json["created"] != false || r.num("partitions") != 3 || r.json["topic"] != "events" {
		t.Fatalf("re-create: %s", r.body)
	}
	if r := ts.do("POST", "/broker/topics", `{"name":"dflt2"}`); r.num("partitions") != 8 || r.json["created"] != true {
		t.Fatalf("default partitions: %s", r.body)
	}
	r = ts.do("GET", "/broker/topics", "")
	if !strings.Contains(string(r.body), `{"name":"events","partitions":3}`) {
		t.Fatalf("list: %s", r.body)
	}
	r = ts.do("GET", "/broker/topics/events", "")
	if r.num("partitions") != 3 || len(r.json["partition_info"].([]any)) != 3 {
		t.Fatalf("describe: %s", r.body)
	}
	ts.expect(ts.do("GET", "/broker/topics/none", ""), 404, "unknown_topic")
}

func TestProduceContract(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 64; c.MaxBatchMessages = 3; c.MaxKeyBytes = 16 })
	ts.do("POST", "/broker/topics", `{"name":"p","partitions":4}`)
	// Explicit partition: dense offsets from 0.
	for i := 0; i < 3; i++ {
		r := ts.do("POST", "/broker/topics/p/produce?partition=2", fmt.Sprint("m", i))
		ts.expect(r, 200, "")
		if r.num("offset") != float64(i) || r.num("partition") != 2 || r.json["durable"] != true || r.json["synced"] != true ||
			r.json["sealed"] != true || r.json["mode"] != "sealed" || r.num("batch_id") == 0 || r.json["duplicate"] != false {
			t.Fatalf("produce %d: %s", i, r.body)
		}
	}
	// Key hash: the same key always lands on the same partition.
	ts.do("POST", "/broker/topics", `{"name":"q","partitions":4}`)
	first := ts.do("POST", "/broker/topics/q/produce?key=user-42", "a").num("partition")
	for i := 0; i < 5; i++ {
		if p := ts.do("POST", "/broker/topics/q/produce?key=user-42", "b").num("partition"); p != first {
			t.Fatalf("key hash moved from %v to %v", first, p)
		}
	}
	// Round-robin without a key visits every partition.
	seen := map[float64]bool{}
	for i := 0; i < 8; i++ {
		seen[ts.do("POST", "/broker/topics/q/produce", "rr").num("partition")] = true
	}
	if len(seen) != 4 {
		t.Fatalf("round-robin visited %d of 4 partitions", len(seen))
	}
	errs := []struct {
		path, body, code string
		status           int
	}{
		{"/broker/topics/p/produce?partition=4", "x", "invalid_partition", 400},
		{"/broker/topics/p/produce?partition=-1", "x", "invalid_partition", 400},
		{"/broker/topics/p/produce?partition=abc", "x", "invalid_partition", 400},
		{"/broker/topics/p/produce", strings.Repeat("x", 65), "message_too_large", 413},
		{"/broker/topics/p/produce?key=" + strings.Repeat("k", 17), "x", "invalid_key", 400},
		{"/broker/topics/p/produce?timeout_ms=x", "x", "invalid_timeout_ms", 400},
		{"/broker/topics/bad%20name/produce", "x", "invalid_topic", 400},
		{"/broker/topics/p/produce-ndjson", "a\nb\nc\nd\n", "batch_too_large", 413},
		{"/broker/topics/p/produce-ndjson", "\n\r\n\n", "empty_batch", 400},
		{"/broker/topics/p/produce-ndjson", "ok\n" + strings.Repeat("y", 65), "message_too_large", 413},
	}
	for _, e := range errs {
		ts.expect(ts.do("POST", e.path, e.body), e.status, e.code)
	}
	// Nothing of a rejected batch was written.
	if r := ts.do("GET", "/broker/consume/p/g/2?offset=3", ""); r.num("count") != 0 {
		t.Fatalf("rejected batches wrote: %s", r.body)
	}
	// Auto-create on produce.
	if r := ts.do("POST", "/broker/topics/fresh/produce", "x"); r.status != 200 {
		t.Fatalf("auto-create: %s", r.body)
	}
	if r := ts.do("GET", "/broker/topics/fresh", ""); r.num("partitions") != 8 {
		t.Fatalf("auto-created topic: %s", r.body)
	}
}

func TestIdempotency(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics", `{"name":"i","partitions":2}`)
	a := ts.do("POST", "/broker/topics/i/produce?partition=1&idempotency_key=k1", "v")
	b := ts.do("POST", "/broker/topics/i/produce?partition=1", "v", "Idempotency-Key", "k1")
	if a.json["duplicate"] != false || b.json["duplicate"] != true || a.num("offset") != b.num("offset") || b.json["durable"] != true {
		t.Fatalf("duplicate by header: %s then %s", a.body, b.body)
	}
	// Server-chosen partition: the key is scoped to the topic.
	c := ts.do("POST", "/broker/topics/i/produce?idempotency_key=k2", "v")
	d := ts.do("POST", "/broker/topics/i/produce?idempotency_key=k2", "v")
	if d.json["duplicate"] != true || c.num("partition") != d.num("partition") || c.num("offset") != d.num("offset") {
		t.Fatalf("topic-scoped key: %s then %s", c.body, d.body)
	}
	n1 := ts.do("POST", "/broker/topics/i/produce-ndjson?partition=0&idempotency_key=b1", "x\ny\nz\n")
	n2 := ts.do("POST", "/broker/topics/i/produce-ndjson?partition=0&idempotency_key=b1", "x\ny\nz\n")
	if n2.json["duplicate"] != true || n1.num("first_offset") != n2.num("first_offset") || n2.num("count") != 3 {
		t.Fatalf("batch key: %s then %s", n1.body, n2.body)
	}
	if r := ts.do("GET", "/broker/consume/i/g/0", ""); r.num("next_offset") != n1.num("first_offset")+3 {
		t.Fatalf("retried batch written twice: %s", r.body)
	}
	// Concurrent retries of one key write once.
	var wg sync.WaitGroup
	offsets := make(chan float64, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			offsets <- ts.do("POST", "/broker/topics/i/produce?partition=0&idempotency_key=race", "r").num("offset")
		}()
	}
	wg.Wait()
	close(offsets)
	var first float64 = -1
	for o := range offsets {
		if first >= 0 && o != first {
			t.Fatalf("concurrent retries got offsets %v and %v", first, o)
		}
		first = o
	}
}

func TestConsumeContract(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics", `{"name":"c","partitions":1}`)
	values := []string{"plain", "quote\" backslash\\ nl\n tab\t ctl\x01", "\xff\xfeinvalid", `<script>&`, "ünïcødé ✓", ""}
	for _, v := range values {
		ts.expect(ts.do("POST", "/broker/topics/c/produce?partition=0&key=k%2Fz", v), 200, "")
	}
	r := ts.do("GET", "/broker/consume/c/g/0", "")
	msgs := r.json["messages"].([]any)
	if r.num("count") != float64(len(values)) || len(msgs) != len(values) || r.num("next_offset") != float64(len(values)) ||
		r.json["committed_offset"] != nil || r.json["truncated"] != false {
		t.Fatalf("consume: %s", r.body)
	}
	for i, m := range msgs {
		mm := m.(map[string]any)
		want := values[i]
		if i == 2 {
			want = "\ufffd\ufffdinvalid" // each invalid byte is replaced
		}
		if mm["value"] != want || mm["key"] != "k/z" || mm["offset"] != float64(i) || mm["partition"] != 0.0 || mm["timestamp_ms"] == nil {
			t.Fatalf("message %d: %v, want value %q", i, mm, want)
		}
	}
	r = ts.do("GET", "/broker/consume/c/g/0?encoding=b64&offset=2&limit=1", "")
	m := r.json["messages"].([]any)[0].(map[string]any)
	raw, _ := base64.StdEncoding.DecodeString(m["value_b64"].(string))
	if string(raw) != values[2] || m["key_b64"] != base64.StdEncoding.EncodeToString([]byte("k/z")) || r.num("next_offset") != 3 {
		t.Fatalf("b64: %s", r.body)
	}
	// Paging by next_offset with a byte budget: no skip, no repeat.
	var got []string
	for off, pages := 0.0, 0; off < float64(len(values)); pages++ {
		r := ts.do("GET", fmt.Sprintf("/broker/consume/c/g/0?offset=%v&limit=4&max_bytes=20", off), "")
		for _, m := range r.json["messages"].([]any) {
			got = append(got, m.(map[string]any)["value"].(string))
		}
		if r.num("count") > 0 && r.num("count") < 4 && r.num("next_offset") < float64(len(values)) && r.json["truncated"] != true {
			t.Fatalf("budget-limited page not marked truncated: %s", r.body)
		}
		off = r.num("next_offset")
		if pages > 20 {
			t.Fatal("paging does not advance")
		}
	}
	if len(got) != len(values) {
		t.Fatalf("paged %d messages, want %d", len(got), len(values))
	}
	// Commit moves the default start to committed+1; consuming never commits.
	ts.expect(ts.do("POST", "/broker/commit", `{"topic":"c","group":"g","partition":0,"offset":2}`), 200, "")
	r = ts.do("GET", "/broker/consume/c/g/0?limit=1", "")
	if r.num("committed_offset") != 2 || r.json["messages"].([]any)[0].(map[string]any)["offset"] != 3.0 {
		t.Fatalf("after commit: %s", r.body)
	}
	if r := ts.do("GET", "/broker/consume/c/other/0?limit=1", ""); r.json["messages"].([]any)[0].(map[string]any)["offset"] != 0.0 {
		t.Fatalf("another group starts at the log start: %s", r.body)
	}
	// Past the end: empty.
	if r := ts.do("GET", "/broker/consume/c/g/0?offset=99", ""); r.num("count") != 0 || r.num("next_offset") != 99 {
		t.Fatalf("past the end: %s", r.body)
	}
	errs := []struct {
		path, code string
		status     int
	}{
		{"/broker/consume/none/g/0", "unknown_topic", 404},
		{"/broker/consume/c/g/1", "unknown_partition", 404},
		{"/broker/consume/c/g/x", "invalid_partition", 400},
		{"/broker/consume/c/g/4294967296", "unknown_partition", 404},
		{"/broker/consume/c/g/0?limit=0", "invalid_limit", 400},
		{"/broker/consume/c/g/0?limit=-5", "invalid_limit", 400},
		{"/broker/consume/c/g/0?max_bytes=0", "invalid_max_bytes", 400},
		{"/broker/consume/c/g/0?offset=abc", "invalid_offset", 400},
		{"/broker/consume/c/g/0?offset=-", "invalid_offset", 400},
		{"/broker/consume/c/g/0?offset=1.5", "invalid_offset", 400},
		{"/broker/consume/c/g/0?limit=x", "invalid_limit", 400},
		{"/broker/consume/c/g/0?limit=-99999999999999999999999", "invalid_limit", 400},
		{"/broker/consume/c/g/0?max_bytes=-1", "invalid_max_bytes", 400},
		{"/broker/consume/c/g/0?wait_ms=-1", "invalid_wait_ms", 400},
		{"/broker/consume/c/g/0?wait_ms=soon", "invalid_wait_ms", 400},
		{"/broker/consume/c/g/0?timeout_ms=1&wait_ms=1e3", "invalid_wait_ms", 400},
		{"/broker/consume/c/g/0?encoding=hex", "invalid_encoding", 400},
		{"/broker/consume/c/g%01/0", "invalid_group", 400},
	}
	for _, e := range errs {
		ts.expect(ts.do("GET", e.path, ""), e.status, e.code)
	}
	if r := ts.do("GET", "/broker/consume/c/g/0?offset=0&limit=5000", ""); r.num("count") != float64(len(values)) {
		t.Fatalf("large limit is clamped, not refused: %s", r.body)
	}
	// Clamped parameters clamp for any size of number.
	for _, q := range []string{"limit=99999999999999999999999", "max_bytes=99999999999999999999999", "limit=9223372036854775808"} {
		if r := ts.do("GET", "/broker/consume/c/g/0?offset=0&"+q, ""); r.status != 200 || r.num("count") != float64(len(values)) {
			t.Fatalf("%s is clamped, not refused: %s", q, r.body)
		}
	}
	// A negative offset reads from the log start, whatever was committed.
	for _, q := range []string{"offset=-1", "offset=-99999999999999999999999"} {
		r := ts.do("GET", "/broker/consume/c/g/0?"+q, "")
		if r.status != 200 || r.num("count") != float64(len(values)) || r.num("committed_offset") != 2 {
			t.Fatalf("%s: want the whole partition from the log start: %s", q, r.body)
		}
	}
	// An offset past 64 bits is past any log end: an empty page.
	if r := ts.do("GET", "/broker/consume/c/g/0?offset=99999999999999999999999", ""); r.status != 200 || r.num("count") != 0 {
		t.Fatalf("huge offset: %s", r.body)
	}
}

// TestConsumeWaitClamped: wait_ms of any size waits the 30 s maximum
// (here WaitMax, shortened), not zero (a 64-bit overflow once made it
// return at once).
func TestConsumeWaitClamped(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.WaitMax = 300 * time.Millisecond })
	ts.do("POST", "/broker/topics", `{"name":"w","partitions":1}`)
	for _, v := range []string{"10000000000000", "99999999999999999999999999"} {
		start := time.Now()
		r := ts.do("GET", "/broker/consume/w/g/0?wait_ms="+v, "")
		if took := time.Since(start); r.status != 200 || took < 250*time.Millisecond || took > 5*time.Second {
			t.Fatalf("wait_ms=%s: status %d after %v, want 200 after about 300ms", v, r.status, took)
		}
	}
}

// TestConsumeMaxBytesCountsWritten: max_bytes bounds the response as
// written; 0x01 bytes are written as 6-byte escapes.
func TestConsumeMaxBytesCountsWritten(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics", `{"name":"esc","partitions":1}`)
	value := strings.Repeat("\x01", 1000)
	value = strings.ReplaceAll(value, "\\x01", "\x01")
	raw := strings.Repeat("\x01", 1000) // 6,000 bytes as written: \u0001 each
	_ = value
	for i := 0; i < 20; i++ {
		ts.expect(ts.do("POST", "/broker/topics/esc/produce?partition=0", raw), 200, "")
	}
	for _, tc := range []struct {
		query        string
		budget, want int // want: messages in the page
	}{
		{"max_bytes=3000", 3000, 0},
		{"max_bytes=3000&encoding=b64", 3000, 0},
		{"max_bytes=1", 1, 1},
		{"max_bytes=20000", 20000, 0},
	} {
		r := ts.do("GET", "/broker/consume/esc/g/0?offset=0&limit=20&"+tc.query, "")
		msgs := r.json["messages"].([]any)
		if len(msgs) == 0 {
			t.Fatalf("%s: an empty page while data exists: %s", tc.query, r.body)
		}
		// The messages array as written must fit the budget (the first
		// message always comes, even alone over it).
		arr := r.body[strings.Index(string(r.body), "[") : strings.LastIndex(string(r.body), "]")+1]
		if len(msgs) > 1 && len(arr) > tc.budget {
			t.Fatalf("%s: %d messages written in %d bytes, over the budget", tc.query, len(msgs), len(arr))
		}
		if tc.want > 0 && len(msgs) != tc.want {
			t.Fatalf("%s: %d messages, want %d", tc.query, len(msgs), tc.want)
		}
		// Paging by next_offset neither skips nor repeats.
		last := msgs[len(msgs)-1].(map[string]any)["offset"].(float64)
		if r.num("next_offset") != last+1 {
			t.Fatalf("%s: next_offset %v after last offset %v", tc.query, r.num("next_offset"), last)
		}
		if len(msgs) < 20 && r.json["truncated"] != true {
			t.Fatalf("%s: a page cut by the budget must say truncated: %s", tc.query, r.body)
		}
	}
}

func TestConsumeLongPoll(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics", `{"name":"w","partitions":1}`)
	start := time.Now()
	if r := ts.do("GET", "/broker/consume/w/g/0?wait_ms=150", ""); r.num("count") != 0 || time.Since(start) < 140*time.Millisecond {
		t.Fatalf("empty long-poll returned after %v: %s", time.Since(start), r.body)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		ts.do("POST", "/broker/topics/w/produce?partition=0", "late")
	}()
	start = time.Now()
	r := ts.do("GET", "/broker/consume/w/g/0?wait_ms=5000", "")
	if r.num("count") != 1 || time.Since(start) > 3*time.Second {
		t.Fatalf("long-poll did not wake on append (%v): %s", time.Since(start), r.body)
	}
}

func TestCommitContract(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics", `{"name":"k","partitions":2}`)
	for i := 0; i < 5; i++ {
		ts.do("POST", "/broker/topics/k/produce?partition=0", "m")
	}
	cases := []struct {
		body, code string
		status     int
		ignored    bool
	}{
		{`{"topic":"k","group":"g","partition":0,"offset":3}`, "", 200, false},
		{`{"topic":"k","group":"g","partition":0,"offset":1}`, "", 200, true},
		{`{"topic":"k","group":"g","partition":0,"offset":3}`, "", 200, false},
		{`{"topic":"k","group":"g","partition":0,"offset":4}`, "", 200, false},
		// The log end offset (the next_offset a consume returns) commits.
		{`{"topic":"k","group":"g","partition":0,"offset":5}`, "", 200, false},
		{`{"topic":"k","group":"g","partition":0,"offset":6}`, "offset_out_of_range", 400, false},
		{`{"topic":"k","group":"g","partition":1,"offset":0}`, "", 200, false},
		{`{"topic":"k","group":"g","partition":1,"offset":1}`, "offset_out_of_range", 400, false},
		{`{"topic":"k","group":"g","partition":2,"offset":0}`, "unknown_partition", 404, false},
		{`{"topic":"nope","group":"g","partition":0,"offset":0}`, "unknown_topic", 404, false},
		{`{"topic":"k","group":"g","partition":0}`, "missing_fields", 400, false},
		{`{"topic":"k","group":"g","partition":0,"offset":-1}`, "invalid_offset", 400, false},
		{`{"topic":"k","group":"g","partition":0,"offset":1.5}`, "invalid_offset", 400, false},
		{`{"topic":"k","group":"g","partition":0,"offset":18446744073709551616}`, "invalid_offset", 400, false},
		{`{"topic":"k","group":"","partition":0,"offset":1}`, "invalid_group", 400, false},
		{`{"topic":"k","group":"g","partition":0,"offset":1}{}`, "invalid_json", 400, false},
		{`not json`, "invalid_json", 400, false},
	}
	for _, tc := range cases {
		r := ts.do("POST", "/broker/commit", tc.body)
		ts.expect(r, tc.status, tc.code)
		if tc.status == 200 && (r.json["ok"] != true || (r.json["ignored"] == true) != tc.ignored) {
			t.Fatalf("%s: %s", tc.body, r.body)
		}
	}
	// Resuming after a commit at the log end starts at committed + 1: an
	// empty page now, the next message once it is produced.
	if r := ts.do("GET", "/broker/consume/k/g/0", ""); r.num("committed_offset") != 5 || r.num("count") != 0 || r.num("next_offset") != 6 {
		t.Fatalf("committed offset went back or was lost: %s", r.body)
	}
	// Group names are URL-decoded path segments; a slash stays in the name.
	ts.expect(ts.do("POST", "/broker/commit", `{"topic":"k","group":"a/b c","partition":0,"offset":2}`), 200, "")
	if r := ts.do("GET", "/broker/consume/k/a%2Fb%20c/0", ""); r.num("committed_offset") != 2 {
		t.Fatalf("encoded group name: %s", r.body)
	}
}

func TestMetricsAndStatus(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics/m/produce?partition=0", "x")
	ts.do("POST", "/broker/commit", `{"topic":"m","group":"g","partition":0,"offset":0}`)
	r := ts.do("GET", "/metrics", "", "Authorization", "")
	for _, want := range []string{
		`keel_requests_total{route="produce",code="200"} 1`,
		`keel_produced_messages_total 1`,
		`keel_partition_log_end_offset{topic="m",partition="0"} 1`,
		`keel_group_committed_offset{topic="m",group="g",partition="0"} 0`,
		`keel_group_lag{topic="m",group="g",partition="0"} 0`,
		`keel_raft_role{role="leader"} 1`,
		`keel_io_backend{backend="syscall"} 1`,
		`keel_disk_free_bytes `,
		`keel_ready 1`,
		`keel_server_us{quantile="0.99999"} `,
		`keel_server_us_count 1`,
		`keel_fsync_us{quantile="0.5"} `,
		`keel_group_commit_requests_count `,
		`keel_write_behind_failures_total 0`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	r = ts.do("GET", "/admin/sealed/status", "")
	if r.json["ok"] != true || r.num("last_synced_batch_id") == 0 {
		t.Fatalf("sealed status: %s", r.body)
	}
}

func TestRocketMode(t *testing.T) {
	ts := startServerWith(t, replication.Config{Rocket: true}, nil)
	r := ts.do("POST", "/broker/topics/r/produce?partition=0", "fast")
	if r.status != 200 || r.json["mode"] != "rocket" || r.json["durable"] != false || r.num("batch_id") != 0 ||
		r.json["synced"] != nil || !strings.Contains(string(r.body), `"synced":null`) {
		t.Fatalf("rocket answer: %s", r.body)
	}
	if r := ts.do("GET", "/broker/consume/r/g/0", ""); r.num("count") != 1 {
		t.Fatalf("rocket write not readable: %s", r.body)
	}
}

// TestProduceTimeout: with timeout_ms=0 the answer comes before
// durability is confirmed: 200, durable false, and the write still lands.
func TestProduceTimeout(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics", `{"name":"to","partitions":1}`)
	r := ts.do("POST", "/broker/topics/to/produce?partition=0&timeout_ms=0", "maybe")
	if r.status != 200 || r.json["durable"] != false || r.json["synced"] != false || r.json["timeout"] != true ||
		r.json["offset"] != nil || r.num("partition") != 0 {
		t.Fatalf("timed-out answer: %s", r.body)
	}
	if r := ts.do("GET", "/broker/consume/to/g/0?wait_ms=2000", ""); r.num("count") != 1 {
		t.Fatalf("the timed-out write did not land: %s", r.body)
	}
}

// failingBackend fails every write and sync with err once fail is set.
type failingBackend struct {
	ring.Backend
	fail atomic.Bool
	err  error
}

func (f *failingBackend) WriteAt(fd int, off int64, bufs [][]byte, sync bool) error {
	if f.fail.Load() {
		return &ring.FaultError{Op: "write", Err: f.err}
	}
	return f.Backend.WriteAt(fd, off, bufs, sync)
}

func (f *failingBackend) Sync(fd int) error {
	if f.fail.Load() {
		return &ring.FaultError{Op: "fdatasync", Err: f.err}
	}
	return f.Backend.Sync(fd)
}

// TestDiskFull: once the disk is full, writes get 507 disk_full, reads
// keep working, /ready says not ready, and the server stays up.
func TestDiskFull(t *testing.T) {
	var fb *failingBackend
	ts := startServerIO(t, engine.StoreConfig{}, replication.Config{}, nil, func(b ring.Backend) ring.Backend {
		fb = &failingBackend{Backend: b, err: syscall.ENOSPC}
		return fb
	})
	ts.expect(ts.do("POST", "/broker/topics/d/produce?partition=0", "kept"), 200, "")
	fb.fail.Store(true)
	ts.expect(ts.do("POST", "/broker/topics/d/produce?partition=0", "lost"), 507, "disk_full")
	ts.expect(ts.do("POST", "/broker/topics/d/produce?partition=0", "again"), 507, "disk_full")
	if r := ts.do("GET", "/broker/consume/d/g/0", ""); r.status != 200 || r.num("count") != 1 {
		t.Fatalf("reads after a full disk: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/ready", ""); r.status != 503 {
		t.Fatalf("/ready after a storage fault: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/health", ""); r.status != 200 {
		t.Fatalf("/health after a storage fault: %d", r.status)
	}
}

func TestTopicLimit(t *testing.T) {
	ts := startServerIO(t, engine.StoreConfig{Limits: engine.EntryLimits{TopicsMax: 2}}, replication.Config{}, nil, nil)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"a","partitions":1}`), 200, "")
	ts.expect(ts.do("POST", "/broker/topics/b/produce", "x"), 200, "")
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"c","partitions":1}`), 409, "too_many_topics")
	ts.expect(ts.do("POST", "/broker/topics/d/produce", "x"), 409, "too_many_topics")
	ts.expect(ts.do("POST", "/broker/topics/a/produce", "x"), 200, "")
}

// gatedBackend holds every synced write until gate is closed.
type gatedBackend struct {
	ring.Backend
	gate chan struct{}
	held atomic.Bool
}

func (g *gatedBackend) WriteAt(fd int, off int64, bufs [][]byte, sync bool) error {
	if sync && g.held.Load() {
		<-g.gate
	}
	return g.Backend.WriteAt(fd, off, bufs, sync)
}

// TestOverloaded: while the disk stalls, writes beyond the proposal queue
// are refused at once with 503 overloaded and Retry-After, never queued
// without bound; the ones taken are answered once the disk moves, and the
// server goes on serving.
func TestOverloaded(t *testing.T) {
	gb := &gatedBackend{gate: make(chan struct{})}
	ts := startServerIO(t, engine.StoreConfig{}, replication.Config{QueueMax: 4}, nil, func(b ring.Backend) ring.Backend {
		gb.Backend = b
		return gb
	})
	ts.expect(ts.do("POST", "/broker/topics/o/produce?partition=0", "first"), 200, "")
	gb.held.Store(true)
	const clients = 40
	type answer struct {
		status int
		retry  string
		body   string
	}
	answers := make(chan answer, clients)
	for i := range clients {
		go func() {
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/broker/topics/o/produce?partition=0", ts.url), strings.NewReader(fmt.Sprint("v", i)))
			req.Header.Set("Authorization", "Bearer admintok")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answers <- answer{status: -1, body: err.Error()}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
		}()
	}
	release := sync.OnceFunc(func() { gb.held.Store(false); close(gb.gate) })
	defer release() // a failing test must not leave the node stuck in a sync
	// The refusals come while the disk is still stalled: everything beyond
	// the 4 queued and the batch in the stalled sync.
	refused := 0
	for quiet := false; !quiet; {
		select {
		case a := <-answers:
			if a.status != 503 || a.retry == "" || !strings.Contains(a.body, `"error":"overloaded"`) {
				t.Fatalf("while stalled: %d Retry-After %q %s", a.status, a.retry, a.body)
			}
			refused++
		case <-time.After(500 * time.Millisecond):
			quiet = true
		}
	}
	if refused < clients/2 {
		t.Fatalf("only %d of %d writes refused while the disk stalls", refused, clients)
	}
	release()
	ok := 0
	for range clients - refused {
		a := <-answers
		switch a.status {
		case 200:
			ok++
		case 503:
			refused++
		default:
			t.Fatalf("after the stall: %d %s", a.status, a.body)
		}
	}
	t.Logf("%d answered, %d refused", ok, refused)
	if ok == 0 {
		t.Fatal("no write was taken while the disk stalled")
	}
	if r := ts.do("GET", "/broker/consume/o/g/0", ""); r.status != 200 || int(r.num("count")) != 1+ok {
		t.Fatalf("after the stall: %d records readable, want %d: %s", int(r.num("count")), 1+ok, r.body)
	}
}

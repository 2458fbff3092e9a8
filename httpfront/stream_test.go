package httpfront

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// sseEvent is one parsed event (or comment).
type sseEvent struct {
	id, event, data, comment, retry string
}

// sseClient reads a stream's events.
type sseClient struct {
	t      *testing.T
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
}

func (ts *testServer) openStream(t *testing.T, path string, headers ...string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.url+path, nil)
	req.Header.Set("Authorization", "Bearer readtok")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &sseClient{t: t, resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(c.close)
	return c
}

func (c *sseClient) close() { c.cancel(); c.resp.Body.Close() }

// next reads the next event or comment, failing after 5 s.
func (c *sseClient) next() sseEvent {
	c.t.Helper()
	type result struct {
		ev  sseEvent
		err error
	}
	done := make(chan result, 1)
	go func() {
		var ev sseEvent
		for {
			line, err := c.r.ReadString('\n')
			if err != nil {
				done <- result{ev, err}
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					done <- result{ev, nil}
					return
				}
			case strings.HasPrefix(line, ":"):
				done <- result{sseEvent{comment: strings.TrimSpace(line[1:])}, nil}
				return
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "id":
					ev.id = v
				case "event":
					ev.event = v
				case "data":
					ev.data = v
				case "retry":
					ev.retry = v
				}
			}
		}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			c.t.Fatalf("stream ended: %v", r.err)
		}
		return r.ev
	case <-time.After(5 * time.Second):
		c.t.Fatal("no event within 5 s")
	}
	return sseEvent{}
}

// nextMessage skips comments and the retry field, and decodes a message.
func (c *sseClient) nextMessage() (sseEvent, map[string]any) {
	c.t.Helper()
	for {
		ev := c.next()
		if ev.comment != "" || ev.data == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
			c.t.Fatalf("data is not JSON: %q", ev.data)
		}
		return ev, m
	}
}

func TestStreamPartition(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.StreamsMax = 3 })
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"ev","partitions":2}`), 200, "")
	for i := range 5 {
		ts.expect(ts.do("POST", "/broker/topics/ev/produce?partition=0", fmt.Sprintf("v%d", i)), 200, "")
	}
	s := ts.openStream(t, "/broker/stream/ev/g/0?keepalive_ms=200")
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	for i := range 5 {
		ev, m := s.nextMessage()
		if ev.id != fmt.Sprint(i) || m["value"] != fmt.Sprintf("v%d", i) || m["offset"].(float64) != float64(i) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	// Quiet: keep-alive comments.
	if ev := s.next(); ev.comment != "keep-alive" {
		t.Fatalf("want a keep-alive comment, got %+v", ev)
	}
	// A message produced now arrives live.
	ts.expect(ts.do("POST", "/broker/topics/ev/produce?partition=0", "live"), 200, "")
	if ev, m := s.nextMessage(); ev.id != "5" || m["value"] != "live" {
		t.Fatalf("live event: %+v", ev)
	}
	s.close()

	// Resuming from Last-Event-ID: no gap, no repeat.
	r := ts.openStream(t, "/broker/stream/ev/g/0?encoding=b64", "Last-Event-ID", "2")
	if ev, m := r.nextMessage(); ev.id != "3" || m["value_b64"] != "djM=" {
		t.Fatalf("resumed at %+v %v", ev, m)
	}
	r.close()
	// offset, negative offset, the group's commit.
	o := ts.openStream(t, "/broker/stream/ev/g/0?offset=4")
	if ev, _ := o.nextMessage(); ev.id != "4" {
		t.Fatalf("offset=4 started at %s", ev.id)
	}
	o.close()
	ts.expect(ts.do("POST", "/broker/commit", `{"topic":"ev","group":"g","partition":0,"offset":1}`), 200, "")
	c := ts.openStream(t, "/broker/stream/ev/g/0")
	if ev, _ := c.nextMessage(); ev.id != "2" {
		t.Fatalf("after a commit of 1 the stream started at %s", ev.id)
	}
	c.close()
	n := ts.openStream(t, "/broker/stream/ev/g/0?offset=-1")
	if ev, _ := n.nextMessage(); ev.id != "0" {
		t.Fatalf("offset=-1 started at %s", ev.id)
	}
	n.close()

	for _, bad := range []struct {
		path, lastID string
		status       int
		code         string
	}{
		{"/broker/stream/ev/g/9", "", 404, "unknown_partition"},
		{"/broker/stream/nope/g/0", "", 404, "unknown_topic"},
		{"/broker/stream/ev/g/0", "x", 400, "invalid_last_event_id"},
		{"/broker/stream/ev/g/0?encoding=hex", "", 400, "invalid_encoding"},
		{"/broker/stream/ev/g/0?keepalive_ms=abc", "", 400, "invalid_keepalive_ms"},
		{"/broker/stream/ev/g?member_id=nobody", "", 409, "unknown_member"},
	} {
		ts.expect(ts.do("GET", bad.path, "", "Last-Event-ID", bad.lastID), bad.status, bad.code)
	}
	// The limit of open streams.
	waitOpen := func(want int64) {
		for deadline := time.Now().Add(5 * time.Second); ts.srv.streamsOpen.Load() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d streams open, want %d", ts.srv.streamsOpen.Load(), want)
			}
		}
	}
	waitOpen(0)
	for range 3 {
		if ev := ts.openStream(t, "/broker/stream/ev/g/1").next(); ev.retry != "1000" {
			t.Fatalf("first event %+v, want the retry field", ev)
		}
	}
	ts.expect(ts.do("GET", "/broker/stream/ev/g/1", ""), 503, "too_many_streams")
	if !strings.Contains(string(ts.do("GET", "/metrics", "").body), "keel_streams_open 3") {
		t.Fatal("/metrics does not count 3 open streams")
	}
}

func TestStreamMemberFollowsRebalance(t *testing.T) {
	ts := startServer(t, nil)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"ev","partitions":4}`), 200, "")
	for p := range 4 {
		ts.expect(ts.do("POST", fmt.Sprintf("/broker/topics/ev/produce?partition=%d", p), fmt.Sprintf("p%d", p)), 200, "")
	}
	ts.expect(ts.do("POST", "/broker/groups/g/join", `{"topic":"ev","member_id":"a","session_timeout_ms":60000}`), 200, "")
	s := ts.openStream(t, "/broker/stream/ev/g?member_id=a")
	seen := map[float64]bool{}
	var last sseEvent
	for range 4 {
		ev, m := s.nextMessage()
		seen[m["partition"].(float64)] = true
		last = ev
	}
	if len(seen) != 4 || last.id != "0:0,1:0,2:0,3:0" {
		t.Fatalf("partitions %v, last id %q", seen, last.id)
	}
	// Another member joins: the stream announces the rebalance and keeps
	// only a's partitions.
	r := ts.do("POST", "/broker/groups/g/join", `{"topic":"ev","member_id":"b","session_timeout_ms":60000}`)
	bParts := partitionsOf(t, r)
	ev := s.next()
	for ev.event != "rebalance" {
		ev = s.next()
	}
	if !strings.Contains(ev.data, fmt.Sprintf(`"generation":%d`, int(r.num("generation")))) {
		t.Fatalf("rebalance event: %+v", ev)
	}
	for _, p := range bParts {
		ts.expect(ts.do("POST", fmt.Sprintf("/broker/topics/ev/produce?partition=%d", p), "for-b"), 200, "")
	}
	for p := range 4 {
		if !slices.Contains(bParts, p) {
			ts.expect(ts.do("POST", fmt.Sprintf("/broker/topics/ev/produce?partition=%d", p), "for-a"), 200, "")
			if _, m := s.nextMessage(); m["value"] == "for-b" {
				t.Fatalf("a's stream sent b's message %v", m)
			}
		}
	}
	s.close()
	// The member leaves: a stream of it ends with an error event.
	s2 := ts.openStream(t, "/broker/stream/ev/g?member_id=a&keepalive_ms=100")
	ts.expect(ts.do("POST", "/broker/groups/g/leave", `{"member_id":"a"}`), 200, "")
	for {
		ev := s2.next()
		if ev.event == "error" {
			if !strings.Contains(ev.data, "unknown_member") {
				t.Fatalf("error event: %+v", ev)
			}
			break
		}
	}
}

// A reader that takes nothing gets backpressure: the stream blocks on the
// socket instead of buffering, and is closed after StreamWriteTimeout.
func TestStreamSlowReaderClosed(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.StreamWriteTimeout = time.Second })
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"ev","partitions":1}`), 200, "")
	big := strings.Repeat("x", 60_000)
	for range 200 { // 12 MB: more than the socket buffers hold
		ts.expect(ts.do("POST", "/broker/topics/ev/produce?partition=0", big), 200, "")
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /broker/stream/ev/g/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer readtok\r\n\r\n")
	for deadline := time.Now().Add(3 * time.Second); ts.srv.streamsOpen.Load() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stream did not open")
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ts.srv.streamsOpen.Load() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a reader that takes nothing still holds its stream after 10 s (write timeout 1 s)")
		}
	}
}

// Shutdown ends every stream with a close event.
func TestStreamEndsOnShutdown(t *testing.T) {
	ts := startServer(t, nil)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"ev","partitions":1}`), 200, "")
	s := ts.openStream(t, "/broker/stream/ev/g/0")
	s.next() // retry field
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
	}()
	if ev := s.next(); ev.event != "close" || !strings.Contains(ev.data, "shutting_down") {
		t.Fatalf("at shutdown: %+v", ev)
	}
}

package httpfront

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel/engine"
	"keel/replication"
	"keel/ring"
)

// Tests of what scripts written for the older server send (issue 8): each
// case is an input that once failed, with the answer it must get.

// unstartedServer serves HTTP over a node whose loop has not started (so
// it cannot serve yet), with the dev token; the test starts the node.
func unstartedServer(t *testing.T) (url string, node *replication.Node) {
	t.Helper()
	dir := t.TempDir()
	backend, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	store, blob, err := engine.OpenStore(engine.StoreConfig{Dir: dir}, backend)
	if err != nil {
		t.Fatal(err)
	}
	node, err = replication.Open(replication.Config{WALDir: filepath.Join(dir, "wal"), IO: backend, Store: store, StoreBlob: blob})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.DevToken = true
	srv := New(cfg, node, store)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		node.Close()
		store.Close()
		backend.Close()
	})
	return "http://" + ln.Addr().String(), node
}

// TestWritesWaitForStartup: a write that arrives before the node has
// elected itself waits for it instead of failing with not_ready.
func TestWritesWaitForStartup(t *testing.T) {
	url, node := unstartedServer(t)
	type result struct {
		status int
		body   string
	}
	answers := make(chan result, 2)
	post := func(path, body string) {
		req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer dev")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answers <- result{0, err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers <- result{resp.StatusCode, string(b)}
	}
	// The node is not started: nothing can be served yet.
	if r, _ := http.Get(url + "/health"); r == nil || r.StatusCode != 200 {
		t.Fatal("/health must answer while the node starts")
	}
	if r, _ := http.Get(url + "/ready"); r == nil || r.StatusCode != 503 {
		t.Fatal("/ready must be 503 while the node starts")
	}
	go post("/broker/topics", `{"name":"early","partitions":2}`)
	go post("/broker/topics/early2/produce?partition=0", "x")
	time.Sleep(200 * time.Millisecond) // both are waiting now
	select {
	case r := <-answers:
		t.Fatalf("a write answered before the node could serve: %d %s", r.status, r.body)
	default:
	}
	node.Start()
	for i := 0; i < 2; i++ {
		select {
		case r := <-answers:
			if r.status != 200 || !strings.Contains(r.body, `"ok":true`) {
				t.Fatalf("write after startup: %d %s", r.status, r.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("writes still waiting 10 s after the node started")
		}
	}
}

// TestWriteWaitIsBounded: while the node cannot serve, a write waits at
// most its timeout_ms, then answers 503 not_ready.
func TestWriteWaitIsBounded(t *testing.T) {
	url, _ := unstartedServer(t) // the node is never started
	req, _ := http.NewRequest("POST", url+"/broker/topics/t/produce?timeout_ms=200", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer dev")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != 503 || !bytes.Contains(b, []byte(`"not_ready"`)) || took < 150*time.Millisecond || took > 5*time.Second {
		t.Fatalf("got %d %s after %v; want 503 not_ready after about 200ms", resp.StatusCode, b, took)
	}
}

// TestRefusedProduceLeavesNoTrace: a produce refused with a 4xx creates no
// topic.
func TestRefusedProduceLeavesNoTrace(t *testing.T) {
	ts := startServer(t, nil)
	ts.expect(ts.do("POST", "/broker/topics/ghost/produce?partition=8", "x"), 400, "invalid_partition")
	ts.expect(ts.do("POST", "/broker/topics/ghost/produce?partition=-1", "x"), 400, "invalid_partition")
	ts.expect(ts.do("POST", "/broker/topics/ghost/produce?key="+strings.Repeat("k", 2000), "x"), 400, "invalid_key")
	ts.expect(ts.do("POST", "/broker/topics/ghost/produce?timeout_ms=soon", "x"), 400, "invalid_timeout_ms")
	ts.expect(ts.do("POST", "/broker/topics/ghost/produce-ndjson", "\n\n"), 400, "empty_batch")
	ts.expect(ts.do("GET", "/broker/topics/ghost", ""), 404, "unknown_topic")
	if r := ts.do("GET", "/broker/topics", ""); strings.Contains(string(r.body), "ghost") {
		t.Fatalf("a refused produce created the topic: %s", r.body)
	}
	// The highest partition an auto-created topic has is accepted.
	ts.expect(ts.do("POST", "/broker/topics/ghost/produce?partition=7", "x"), 200, "")
	// With auto-creation off, a missing topic is a 404 and stays missing.
	off := startServer(t, func(c *Config) { c.AutoCreateTopics = false })
	off.expect(off.do("POST", "/broker/topics/nope/produce", "x"), 404, "unknown_topic")
	off.expect(off.do("GET", "/broker/topics/nope", ""), 404, "unknown_topic")
}

// TestHead: every GET route answers HEAD with the GET's status and
// headers and no body (RFC 9110 section 9.3.2).
func TestHead(t *testing.T) {
	ts := startServer(t, nil)
	ts.do("POST", "/broker/topics", `{"name":"h","partitions":1}`)
	ts.do("POST", "/broker/topics/h/produce?partition=0", "x")
	for _, path := range []string{"/health", "/ready", "/readyz", "/livez", "/metrics", "/metrics_ha", "/docs/errors",
		"/broker/topics", "/broker/topics/h", "/broker/consume/h/g/0", "/admin/sealed/status", "/broker/topics/none"} {
		get := ts.do("GET", path, "")
		head := ts.do("HEAD", path, "")
		if head.status != get.status || len(head.body) != 0 || head.header.Get("Content-Type") != get.header.Get("Content-Type") {
			t.Fatalf("HEAD %s: %d %q (%s); GET: %d (%s)", path, head.status, head.body, head.header.Get("Content-Type"), get.status, get.header.Get("Content-Type"))
		}
	}
	r := ts.do("HEAD", "/broker/commit", "")
	if r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Fatalf("HEAD on a POST route: %d, Allow %q", r.status, r.header.Get("Allow"))
	}
	if r := ts.do("DELETE", "/health", ""); r.header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow on a GET route: %q", r.header.Get("Allow"))
	}
}

// TestSealedStatusAdvances: every durable change moves
// last_synced_batch_id by the time its answer arrives.
func TestSealedStatusAdvances(t *testing.T) {
	ts := startServer(t, nil)
	last := func() float64 { return ts.do("GET", "/admin/sealed/status", "").num("last_synced_batch_id") }
	changes := []struct{ method, path, body string }{
		{"POST", "/broker/topics", `{"name":"s","partitions":1}`},
		{"POST", "/broker/topics/s/produce?partition=0", "x"},
		{"POST", "/broker/commit", `{"topic":"s","group":"g","partition":0,"offset":0}`},
		{"POST", "/broker/topics/s/produce-ndjson?partition=0", "a\nb\n"},
		{"POST", "/broker/commit", `{"topic":"s","group":"g","partition":0,"offset":3}`},
	}
	for _, c := range changes {
		before := last()
		r := ts.do(c.method, c.path, c.body)
		ts.expect(r, 200, "")
		if after := last(); after <= before {
			t.Fatalf("%s %s: last_synced_batch_id %v, was %v", c.method, c.path, after, before)
		}
		if b := r.num("batch_id"); b != 0 && b > last() {
			t.Fatalf("%s: batch_id %v is ahead of last_synced_batch_id", c.path, b)
		}
	}
}

// rawExchange sends head (and then body, concurrently, as a client that
// writes its whole upload before reading does) on a fresh connection and
// returns the parsed answer.
func rawExchange(t *testing.T, addr, head string, body []byte) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	go func() {
		for len(body) > 0 {
			n, err := c.Write(body[:min(len(body), 64<<10)])
			if err != nil {
				return
			}
			body = body[n:]
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v (a reset instead of the JSON error?)", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	return resp, b
}

// TestRejectionReachesClient: a body over the route's limit is answered
// with its JSON error whichever way the client sends it: whole body before
// reading, Expect: 100-continue, or chunked.
func TestRejectionReachesClient(t *testing.T) {
	ts := startServer(t, nil)
	addr := strings.TrimPrefix(ts.url, "http://")
	big := bytes.Repeat([]byte("x"), 4_300_000)
	auth := "Authorization: Bearer admintok\r\n"
	cases := []struct {
		name, head string
		body       []byte
		status     int
		code       string
	}{
		{"whole body first", "POST /broker/topics/t/produce HTTP/1.1\r\nHost: x\r\n" + auth + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(big)), big, 413, "message_too_large"},
		{"ndjson body first", "POST /broker/topics/t/produce-ndjson HTTP/1.1\r\nHost: x\r\n" + auth + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(big)+len(big)/4), append(big, big[:len(big)/4]...), 413, "batch_too_large"},
		{"expect 100-continue", "POST /broker/topics/t/produce HTTP/1.1\r\nHost: x\r\n" + auth + "Expect: 100-continue\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(big)), nil, 413, "message_too_large"},
		{"expect, no token", "POST /broker/topics/t/produce HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", nil, 401, "unauthorized"},
		{"chunked", "POST /broker/topics/t/produce HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n", chunked(big, 100_000), 413, "message_too_large"},
		{"no token, body first", "POST /broker/topics/t/produce HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n", 50_000), big[:50_000], 401, "unauthorized"},
		{"json body too large", "POST /broker/commit HTTP/1.1\r\nHost: x\r\n" + auth + fmt.Sprintf("Content-Length: %d\r\n\r\n", 1<<20), big[:1<<20], 413, "body_too_large"},
		{"body on a GET", "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", big[:5000], 413, "body_too_large"},
	}
	for _, tc := range cases {
		resp, b := rawExchange(t, addr, tc.head, tc.body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil || resp.StatusCode != tc.status || m["error"] != tc.code || m["message"] == "" {
			t.Fatalf("%s: %d %s, want %d %s", tc.name, resp.StatusCode, b, tc.status, tc.code)
		}
	}
	// A chunked body within the limit is served.
	resp, b := rawExchange(t, addr, "POST /broker/topics/t/produce?partition=0 HTTP/1.1\r\nHost: x\r\n"+auth+"Transfer-Encoding: chunked\r\n\r\n"+string(chunked([]byte("hello chunks"), 5)), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("chunked produce: %d %s", resp.StatusCode, b)
	}
	if r := ts.do("GET", "/broker/consume/t/g/0?offset=0", ""); !strings.Contains(string(r.body), `"value":"hello chunks"`) {
		t.Fatalf("chunked body stored wrong: %s", r.body)
	}
	// After all of that the server serves, and a keep-alive connection that
	// sent an accepted Expect request goes on.
	ts.expect(ts.do("POST", "/broker/topics/t/produce?partition=0", "after"), 200, "")
}

// chunked encodes b in chunks of size n, with the closing chunk.
func chunked(b []byte, n int) []byte {
	var out bytes.Buffer
	for len(b) > 0 {
		c := b[:min(n, len(b))]
		fmt.Fprintf(&out, "%x\r\n%s\r\n", len(c), c)
		b = b[len(c):]
	}
	out.WriteString("0\r\n\r\n")
	return out.Bytes()
}

// TestKeepAliveAfterBodies: requests with bodies of every kind leave a
// keep-alive connection in step (a body read short would be parsed as the
// next request).
func TestKeepAliveAfterBodies(t *testing.T) {
	ts := startServer(t, nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	auth := "Authorization: Bearer admintok\r\n"
	reqs := []struct {
		head   string
		body   []byte
		status int
	}{
		{"POST /broker/topics/k/produce?partition=0 HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 20000\r\n\r\n", bytes.Repeat([]byte("a"), 20000), 200},
		{"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", bytes.Repeat([]byte("b"), 100), 200},
		{"POST /broker/topics/k/produce?partition=99 HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 9000\r\n\r\n", bytes.Repeat([]byte("c"), 9000), 400},
		{"POST /broker/topics/k/produce?partition=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 9000\r\n\r\n", bytes.Repeat([]byte("d"), 9000), 401},
		{"POST /broker/topics/k/produce?partition=0 HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n", chunked(bytes.Repeat([]byte("e"), 30000), 7000), 200},
		{"POST /broker/topics/k/produce?partition=0 HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 1\r\n\r\n", []byte("f"), 200},
	}
	for i, r := range reqs {
		if _, err := c.Write(append([]byte(r.head), r.body...)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != r.status {
			t.Fatalf("request %d: %d %s, want %d", i, resp.StatusCode, b, r.status)
		}
	}
	r := ts.do("GET", "/broker/consume/k/g/0?offset=0&encoding=b64", "")
	if r.num("count") != 3 {
		t.Fatalf("want the three accepted produces: %s", r.body)
	}
}

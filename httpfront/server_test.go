package httpfront

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"keel/engine"
	"keel/replication"
	"keel/ring"
)

// testServer runs a whole node (store, raft, HTTP) on a loopback port.
type testServer struct {
	t    testing.TB
	url  string
	srv  *Server
	node *replication.Node
}

func startServer(t testing.TB, mutate func(*Config)) *testServer {
	t.Helper()
	return startServerWith(t, replication.Config{}, mutate)
}

func startServerWith(t testing.TB, nodeCfg replication.Config, mutate func(*Config)) *testServer {
	t.Helper()
	return startServerIO(t, engine.StoreConfig{}, nodeCfg, mutate, nil)
}

// startServerIO lets a test configure the store (its Dir is set here) and
// wrap the I/O backend (to inject faults).
func startServerIO(t testing.TB, storeCfg engine.StoreConfig, nodeCfg replication.Config, mutate func(*Config), wrap func(ring.Backend) ring.Backend) *testServer {
	t.Helper()
	dir := t.TempDir()
	var io ring.Backend
	io, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		io = wrap(io)
	}
	storeCfg.Dir = dir
	store, blob, err := engine.OpenStore(storeCfg, io)
	if err != nil {
		t.Fatal(err)
	}
	nodeCfg.WALDir, nodeCfg.IO, nodeCfg.Store, nodeCfg.StoreBlob = filepath.Join(dir, "wal"), io, store, blob
	node, err := replication.Open(nodeCfg)
	if err != nil {
		t.Fatal(err)
	}
	node.Start()
	cfg := Defaults()
	cfg.Tokens = []Token{{Secret: "admintok", Scope: ScopeAdmin}, {Secret: "readtok", Scope: ScopeRead},
		{Secret: "writetok", Scope: ScopeWrite}, {Secret: "slowtok", Scope: ScopeAdmin, Limit: &RateLimit{RPS: 0.001, Burst: 2}}}
	cfg.DataDir, cfg.IOBackend, cfg.Rocket = dir, "syscall", nodeCfg.Rocket
	cfg.TopicCreateRate = 0                    // tests create topics quickly; TestTopicCreateRate sets it
	cfg.Logger = slog.New(slog.DiscardHandler) // request errors are the tests' subject, not news
	if mutate != nil {
		mutate(&cfg)
	}
	srv := New(cfg, node, store)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	ts := &testServer{t: t, url: "http://" + ln.Addr().String(), srv: srv, node: node}
	t.Cleanup(func() {
		// Bounded: a connection the client left half-open would otherwise
		// hold Shutdown until the server's read timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		node.Close()
		store.Close()
		io.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for !node.Status().Ready {
		if time.Now().After(deadline) {
			t.Fatal("node not ready")
		}
		time.Sleep(time.Millisecond)
	}
	return ts
}

// response is a decoded reply.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r response) num(field string) float64 {
	v, _ := r.json[field].(float64)
	return v
}

func (ts *testServer) do(method, path, body string, headers ...string) response {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer admintok")
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	recordExchange(req, resp, b, body)
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	if method != "HEAD" && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.json); err != nil {
			ts.t.Fatalf("%s %s: response is not JSON: %v\n%s", method, path, err, b)
		}
	}
	return r
}

// expect checks status and, for errors, the error code and shape.
func (ts *testServer) expect(r response, status int, code string) {
	ts.t.Helper()
	if r.status != status {
		ts.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if code == "" {
		return
	}
	if r.json["ok"] != false || r.json["error"] != code || r.json["message"] == "" || !strings.Contains(fmt.Sprint(r.json["docs"]), "/docs/errors#"+code) {
		ts.t.Fatalf("want error %q with message and docs, got %s", code, r.body)
	}
}

func TestHealthAndRouting(t *testing.T) {
	ts := startServer(t, nil)
	r := ts.do("GET", "/health", "", "Authorization", "")
	if r.status != 200 || string(r.body) != `{"ok":1}` {
		t.Fatalf("/health: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/ready", "/readyz"} {
		if r := ts.do("GET", p, "", "Authorization", ""); r.status != 200 || r.json["ready"] != true {
			t.Fatalf("%s: %d %s", p, r.status, r.body)
		}
	}
	if r := ts.do("GET", "/readyz?verbose", ""); len(r.json["checks"].([]any)) != 3 {
		t.Fatalf("verbose readiness: %s", r.body)
	}
	if r := ts.do("GET", "/metrics_ha", ""); !strings.Contains(string(r.body), "# HA disabled") {
		t.Fatalf("/metrics_ha: %s", r.body)
	}
	ts.expect(ts.do("GET", "/nope", ""), 404, "not_found")
	r = ts.do("DELETE", "/broker/commit", "")
	ts.expect(r, 405, "method_not_allowed")
	if r.header.Get("Allow") != "POST" {
		t.Fatalf("Allow header %q", r.header.Get("Allow"))
	}
	if r := ts.do("GET", "/docs/errors", ""); r.status != 200 || !bytes.Contains(r.body, []byte(`id="unknown_topic"`)) {
		t.Fatalf("/docs/errors: %d", r.status)
	}
	long := "/broker/consume/t/g/0?offset=" + strings.Repeat("9", 20000)
	ts.expect(ts.do("GET", long, ""), 431, "uri_too_long")
}

func TestAuth(t *testing.T) {
	ts := startServer(t, nil)
	r := ts.do("GET", "/broker/topics", "", "Authorization", "")
	ts.expect(r, 401, "unauthorized")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}
	ts.expect(ts.do("GET", "/broker/topics", "", "Authorization", "Bearer wrong"), 401, "unauthorized")
	ts.expect(ts.do("GET", "/broker/topics", "", "Authorization", "Basic admintok"), 401, "unauthorized")
	if r := ts.do("GET", "/broker/topics", "", "Authorization", "Bearer readtok"); r.status != 200 {
		t.Fatalf("read token listing topics: %d", r.status)
	}
	ts.expect(ts.do("POST", "/broker/topics/t/produce", "x", "Authorization", "Bearer readtok"), 403, "forbidden")
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"t"}`, "Authorization", "Bearer readtok"), 403, "forbidden")
	if r := ts.do("POST", "/broker/topics/t/produce", "x", "Authorization", "Bearer writetok"); r.status != 200 {
		t.Fatalf("write token producing: %d %s", r.status, r.body)
	}
	// slowtok: burst 2, then limited.
	for i := 0; i < 2; i++ {
		if r := ts.do("GET", "/broker/topics", "", "Authorization", "Bearer slowtok"); r.status != 200 {
			t.Fatalf("within burst: %d", r.status)
		}
	}
	r = ts.do("GET", "/broker/topics", "", "Authorization", "Bearer slowtok")
	ts.expect(r, 429, "rate_limited")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
}

func TestParseTokens(t *testing.T) {
	cases := []struct {
		spec string
		want string
		bad  bool
	}{
		{"a", "[a:admin:-]", false},
		{"a@read, b@write ,c@admin", "[a:read:- b:write:- c:admin:-]", false},
		{"a@100:200:5000", "[a:admin:100/200/5000]", false},
		{"a@write@10:20:0", "[a:write:10/20/0]", false},
		{"", "[]", false},
		{"@read", "", true},
		{"a@root", "", true},
		{"a@1:2", "", true},
		{"a@0:1:0", "", true},
		// Ayder's launch scripts: every field past int64 means no limit.
		{"dev@55555555555555:11111111111111111:111111111111111111111", "[dev:admin:5.5555555555555e+13/1.1111111111111112e+16/0]", false},
		{"dev@99999999999999999999:1:0", "[dev:admin:-]", false},
		{"dev@1:99999999999999999999:0", "[dev:admin:-]", false},
		{"dev@10:20:99999999999999999999999999999", "[dev:admin:10/20/0]", false},
		{"dev@9999999999999999999999:5:7", "[dev:admin:0/0/7]", false},
		{"a@1e3:1:0", "", true},
		{"a@-1:1:0", "", true},
		{"a@1:1:1.5", "", true},
		{"a@Inf:1:0", "", true},
	}
	for _, tc := range cases {
		toks, err := ParseTokens(tc.spec)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseTokens(%q) accepted", tc.spec)
			}
			continue
		}
		var parts []string
		for _, tk := range toks {
			lim := "-"
			if tk.Limit != nil {
				lim = fmt.Sprintf("%g/%g/%d", tk.Limit.RPS, tk.Limit.Burst, tk.Limit.Daily)
			}
			parts = append(parts, fmt.Sprintf("%s:%s:%s", tk.Secret, tk.Scope, lim))
		}
		if got := "[" + strings.Join(parts, " ") + "]"; err != nil || got != tc.want {
			t.Errorf("ParseTokens(%q) = %s, %v; want %s", tc.spec, got, err, tc.want)
		}
	}
}

// TestEveryErrorCodeDocumented: every stable error code the package can
// answer has its entry in errors.md (served at /docs/errors).
func TestEveryErrorCodeDocumented(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	queryFiles, err := filepath.Glob("../engine/query/*.go") // its refusals reach clients as they are
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, queryFiles...)
	codeRe := regexp.MustCompile(`(?:code:\s*|errBadRequest\(|badRequest\(|tooLarge\()"([a-z_]+)"[,)]`)
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range codeRe.FindAllSubmatch(src, -1) {
			seen++
			if !bytes.Contains(errorsDoc, []byte(`id="`+string(m[1])+`"`)) {
				t.Errorf("%s: error code %q is not in errors.md", f, m[1])
			}
		}
	}
	if seen < 20 {
		t.Fatalf("found only %d error codes in the sources", seen)
	}
}

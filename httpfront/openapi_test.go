package httpfront

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// The OpenAPI description (openapi.json, served at /openapi.json) is
// checked two ways, with pb33f/libopenapi-validator (OpenAPI 3.0 to 3.2,
// JSON Schema 2020-12):
//   - TestOpenAPIDocument validates the document against the OpenAPI
//     3.1 specification's schema;
//   - every answer the package's tests receive through testServer.do is
//     recorded, and TestMain checks each against the description once the
//     tests ran: a route, status or field the description does not allow
//     fails the package.

// exchange is one request and its answer, as a test received it.
type exchange struct {
	method, url string
	reqHeader   http.Header
	reqBody     string
	status      int
	header      http.Header
	body        []byte
}

var (
	exchangesMu sync.Mutex
	exchanges   []exchange
	perShape    = map[string]int{}
)

// exchangesPerShape bounds what is kept per method, path shape and status
// (the hostile tests send thousands of alike requests).
const exchangesPerShape = 20

var digits = regexp.MustCompile(`/[0-9]+`)

func recordExchange(req *http.Request, resp *http.Response, body []byte, reqBody string) {
	shape := fmt.Sprintf("%s %s %d", req.Method, digits.ReplaceAllString(req.URL.Path, "/N"), resp.StatusCode)
	exchangesMu.Lock()
	defer exchangesMu.Unlock()
	if perShape[shape] >= exchangesPerShape {
		return
	}
	perShape[shape]++
	exchanges = append(exchanges, exchange{method: req.Method, url: req.URL.String(), reqHeader: req.Header.Clone(), reqBody: reqBody,
		status: resp.StatusCode, header: resp.Header.Clone(), body: body})
}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && len(exchanges) > 0 {
		if failures := checkExchanges(); len(failures) > 0 {
			fmt.Fprintf(os.Stderr, "--- FAIL: answers that openapi.json does not describe (%d):\n", len(failures))
			for _, f := range failures {
				fmt.Fprintln(os.Stderr, "    "+f)
			}
			code = 1
		} else {
			fmt.Fprintf(os.Stderr, "openapi: %d recorded answers match openapi.json\n", len(exchanges))
		}
	}
	os.Exit(code)
}

func newOpenAPIValidator() (validator.Validator, error) {
	doc, err := libopenapi.NewDocument(openAPI)
	if err != nil {
		return nil, err
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%v", errs)
	}
	return v, nil
}

func TestOpenAPIDocument(t *testing.T) {
	v, err := newOpenAPIValidator()
	if err != nil {
		t.Fatal(err)
	}
	if ok, errs := v.ValidateDocument(); !ok {
		for _, e := range errs {
			t.Errorf("%s: %s", e.Message, e.Reason)
		}
	}
	// Served as it is.
	ts := startServer(t, nil)
	r := ts.do("GET", "/openapi.json", "", "Authorization", "")
	if r.status != 200 || !bytes.Equal(r.body, openAPI) || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", r.status, r.header.Get("Content-Type"))
	}
	// Every route the router knows is described.
	for _, path := range []string{"/broker/topics", "/broker/topics/{topic}/produce", "/broker/consume/{topic}/{group}/{partition}", "/broker/commit",
		"/broker/groups/{group}/join", "/broker/stream/{topic}/{group}/{partition}", "/kv/{namespace}/{key}", "/broker/query", "/ha/membership/add", "/ui"} {
		if !bytes.Contains(openAPI, []byte(`"`+path+`"`)) {
			t.Errorf("openapi.json lacks %s", path)
		}
	}
}

// checkExchanges validates every recorded answer against openapi.json.
// An answer to a path the description has no route for is accepted only
// when the server said so too (404 not_found, or 405).
func checkExchanges() []string {
	v, err := newOpenAPIValidator()
	if err != nil {
		return []string{err.Error()}
	}
	seen := map[string]bool{}
	var failures []string
	for _, x := range exchanges {
		if x.method == "HEAD" || x.status == http.StatusRequestHeaderFieldsTooLarge {
			continue // no body to check; a request line the server refused before routing
		}
		u := x.url
		// A KV key may hold "/": the description's {key} is one segment.
		if i := strings.Index(u, "/kv/"); i >= 0 {
			u = kvKeyEscaped(u, i)
		}
		req, err := http.NewRequest(x.method, u, strings.NewReader(x.reqBody))
		if err != nil {
			continue
		}
		req.Header = x.reqHeader
		resp := &http.Response{StatusCode: x.status, Header: x.header, Body: io.NopCloser(bytes.NewReader(x.body)), Request: req}
		ok, errs := v.ValidateHttpResponse(req, resp)
		if ok {
			continue
		}
		for _, e := range errs {
			if (x.status == 404 || x.status == 405) && strings.Contains(strings.ToLower(e.Message), "not found") {
				continue // a route that does not exist, answered as such
			}
			msg := fmt.Sprintf("%s %s -> %d: %s (%s)", x.method, digits.ReplaceAllString(req.URL.Path, "/N"), x.status, e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				msg += "; " + se.Reason + " at " + se.FieldPath
			}
			if !seen[msg] {
				seen[msg] = true
				failures = append(failures, msg+"\n      body: "+truncateForLog(x.body))
			}
		}
	}
	sort.Strings(failures)
	return failures
}

// kvKeyEscaped rewrites /kv/{ns}/{key...}[/meta] so the key is one path
// segment.
func kvKeyEscaped(u string, i int) string {
	head, rest := u[:i+len("/kv/")], u[i+len("/kv/"):]
	query := ""
	if j := strings.IndexByte(rest, '?'); j >= 0 {
		rest, query = rest[:j], rest[j:]
	}
	ns, key, found := strings.Cut(rest, "/")
	if !found {
		return u
	}
	meta := ""
	if strings.HasSuffix(key, "/meta") {
		key, meta = strings.TrimSuffix(key, "/meta"), "/meta"
	}
	return head + ns + "/" + strings.ReplaceAll(key, "/", "%2F") + meta + query
}

func truncateForLog(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

package httpfront

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Request intake: what happens between the request headers and a route's
// handler. The server streams request bodies (fasthttp's
// StreamRequestBody), so that no byte of memory is sized by what a client
// claims before it is authenticated and its body checked against the
// route's own limit:
//
//  1. the route is matched and the token checked on the headers alone;
//  2. the declared Content-Length is checked against the route's limit
//     (413 before the body is read; fasthttp has read at most its first
//     8 KiB before calling the handler, and waits for them up to the read
//     timeout);
//  3. the body is read into a pooled buffer, bounded by the route's limit
//     and by BodyBytesInFlightMax across all requests (503 overloaded
//     past it);
//  4. whatever body a refused request left unread is drained, a bounded
//     number of bytes within a bounded time, so that a client that sends
//     its whole upload before reading (Python's http.client, curl without
//     Expect) reads the JSON error instead of a connection reset; past the
//     bound the connection is closed after the answer is flushed.
//
// `Expect: 100-continue` requests are checked in step 1 and 2 before the
// server sends 100 Continue, and refused with the same JSON error.

// bodyKind is what body a route takes, and so its size limit.
type bodyKind uint8

const (
	bodyNone    bodyKind = iota // GET routes: BodyTinyMax
	bodyJSON                    // small JSON objects: JSONBodyMax
	bodyMessage                 // one message: MaxMessageBytes
	bodyBatch                   // NDJSON: MaxBatchBytes
	bodyKV                      // a KV value: MaxKVValueBytes
	bodyQuery                   // a stream query or join (inline schemas): QueryBodyMax
)

// intake is the per-request state of the steps above.
type intake struct {
	authed   bool    // the token was accepted: drain up to BodyDrainMax
	consumed bool    // the whole body was read
	buf      *[]byte // the pooled body buffer, returned in finish
	reserved int64   // bytes taken from the in-flight budget
}

// isWrite reports whether the request's method changes state.
func isWrite(ctx *fasthttp.RequestCtx) bool { return ctx.IsPost() || ctx.IsDelete() }

// bodyLimit returns the largest body r takes.
func (s *Server) bodyLimit(r *route) int {
	switch r.body {
	case bodyMessage:
		return s.cfg.MaxMessageBytes
	case bodyBatch:
		return s.cfg.MaxBatchBytes
	case bodyKV:
		return s.cfg.MaxKVValueBytes
	case bodyJSON:
		return s.cfg.JSONBodyMax
	case bodyQuery:
		return s.cfg.QueryBodyMax
	}
	return s.cfg.BodyTinyMax
}

// bodyTooLarge is the error for a body over r's limit (built only when
// needed: a formatted message allocates).
func (s *Server) bodyTooLarge(r *route) *apiError {
	switch r.body {
	case bodyMessage:
		return &apiError{status: 413, code: "message_too_large",
			message: fmt.Sprintf("the message is larger than max_message_bytes (%d)", s.cfg.MaxMessageBytes)}
	case bodyBatch:
		return &apiError{status: 413, code: "batch_too_large",
			message: fmt.Sprintf("the body is larger than max_batch_bytes (%d); nothing was written", s.cfg.MaxBatchBytes)}
	case bodyKV:
		return &apiError{status: 413, code: "value_too_large",
			message: fmt.Sprintf("the value is larger than max_kv_value_bytes (%d)", s.cfg.MaxKVValueBytes)}
	case bodyJSON:
		return &apiError{status: 413, code: "body_too_large",
			message: fmt.Sprintf("the JSON body is larger than %d bytes", s.cfg.JSONBodyMax)}
	case bodyQuery:
		return &apiError{status: 413, code: "body_too_large",
			message: fmt.Sprintf("the query is larger than %d bytes (--query-body-max)", s.cfg.QueryBodyMax)}
	}
	return &apiError{status: 413, code: "body_too_large",
		message: fmt.Sprintf("this route takes no body (at most %d bytes)", s.cfg.BodyTinyMax)}
}

// admit checks the token and the declared body size. charge is false when
// the same request will be admitted again (Expect: 100-continue), so a
// rate-limited token pays once.
func (s *Server) admit(ctx *fasthttp.RequestCtx, r *route, in *intake, charge bool) *apiError {
	scope := r.scope
	if isWrite(ctx) {
		scope = r.post
	}
	if scope > 0 {
		header := ctx.Request.Header.Peek("Authorization")
		if r == &routeUI {
			header = uiToken(ctx) // the page also takes its cookie (ui.go)
		}
		if e := s.auth.check(header, scope, s.clientKey(ctx), time.Now(), charge); e != nil {
			if e.status == 401 {
				ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="keel"`)
			}
			return e
		}
		in.authed = true
	}
	limit := s.bodyLimit(r)
	if ctx.IsGet() || ctx.IsHead() {
		limit = min(limit, s.cfg.BodyTinyMax)
	}
	if cl := ctx.Request.Header.ContentLength(); cl > limit {
		return s.bodyTooLarge(r)
	}
	return nil
}

// framingError refuses a request whose body framing is ambiguous: both
// Content-Length and Transfer-Encoding (RFC 9112 section 6.1). A proxy in
// front that went by Content-Length would see another request boundary
// than this server (request smuggling), so the connection is closed too.
func framingError(ctx *fasthttp.RequestCtx) *apiError {
	raw := ctx.Request.Header.RawHeaders()
	if !bytes.Contains(raw, []byte("ransfer-")) && !bytes.Contains(raw, []byte("RANSFER-")) {
		return nil // the common case: no Transfer-Encoding at all
	}
	if hasHeaderLine(raw, "transfer-encoding") && hasHeaderLine(raw, "content-length") {
		ctx.SetConnectionClose()
		return errBadRequest("bad_request", "the request has both Content-Length and Transfer-Encoding")
	}
	return nil
}

// clientKey identifies the request's client for per-client limits (see
// ipKey): its address, or behind a trusted proxy the last address the
// proxy put in X-Forwarded-For.
func (s *Server) clientKey(ctx *fasthttp.RequestCtx) uint64 {
	ip := ctx.RemoteIP()
	for _, p := range s.cfg.TrustedProxies {
		if !p.Equal(ip) {
			continue
		}
		xff := ctx.Request.Header.Peek("X-Forwarded-For")
		if i := bytes.LastIndexByte(xff, ','); i >= 0 {
			xff = xff[i+1:]
		}
		if fwd := net.ParseIP(string(bytes.TrimSpace(xff))); fwd != nil {
			return ipKey(fwd)
		}
		break
	}
	return ipKey(ip)
}

// hasHeaderLine reports whether raw (request headers as received, the
// request line excluded) has a header named name (lower case).
func hasHeaderLine(raw []byte, name string) bool {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		k, _, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			return true
		}
	}
	return false
}

// waitServing holds a data request while the node cannot serve yet
// (startup, the single voter's election, the end of recovery), bounded by
// the request's timeout_ms (or the default write timeout), instead of
// failing it at once.
func (s *Server) waitServing(ctx *fasthttp.RequestCtx) *apiError {
	if s.node.Status().Serving {
		return nil
	}
	deadline, e := s.deadlineFrom(ctx)
	if e != nil {
		deadline = requestStart(ctx).Add(s.cfg.DefaultTimeout) // the handler reports the bad parameter
	}
	if s.node.WaitServing(deadline) {
		return nil
	}
	if err := s.node.Fault(); err != nil {
		return mapError(err) // a storage fault stopped it: say so, not "retry shortly"
	}
	return &apiError{status: 503, code: "not_ready", message: "the node has not finished starting (recovery or election); retry shortly", retryAfter: 1}
}

// readBody reads the whole body of a route that takes one into a pooled
// buffer and makes it the request's body (ctx.PostBody).
func (s *Server) readBody(ctx *fasthttp.RequestCtx, r *route, in *intake) *apiError {
	if r.body == bodyNone || !ctx.IsPost() {
		return nil
	}
	stream := ctx.Request.BodyStream()
	if stream == nil { // no Content-Length and not chunked: no body
		in.consumed = true
		return nil
	}
	limit := s.bodyLimit(r)
	cl := ctx.Request.Header.ContentLength()
	want := int64(limit) + 1 // chunked: read one byte past the limit to see it exceeded
	if cl >= 0 {
		want = int64(cl)
	}
	if s.inFlight.Add(want) > s.cfg.BodyBytesInFlightMax {
		s.inFlight.Add(-want)
		s.metrics.bodyBudgetRefused.Add(1)
		return &apiError{status: 503, code: "overloaded", message: "the server holds its limit of request bodies in memory; retry shortly", retryAfter: 1}
	}
	in.reserved = want
	in.buf = bodyBufPool.Get().(*[]byte)
	b := (*in.buf)[:0]
	if cl >= 0 && cap(b) < cl {
		b = make([]byte, 0, cl) // chunked bodies grow as they arrive instead
	}
	b, err := readAtMost(stream, b, int(want))
	*in.buf = b
	switch {
	case err != nil || cl >= 0 && len(b) != cl:
		// A body shorter than its Content-Length (the client closed or
		// half-closed mid-upload) is not a message: nothing is written.
		ctx.SetConnectionClose()
		in.consumed = true // nothing more can be read
		return errBadRequest("bad_request", "the request body ended before its Content-Length, or could not be read")
	case len(b) > limit:
		return s.bodyTooLarge(r) // finish drains the rest
	}
	in.consumed = true
	ctx.Request.SetBodyRaw(b)
	return nil
}

// readAtMost appends from r to b until EOF or until b holds n bytes more.
func readAtMost(r io.Reader, b []byte, n int) ([]byte, error) {
	end := len(b) + n
	for len(b) < end {
		if len(b) == cap(b) { // grow (chunked bodies only), never past what was reserved
			nb := make([]byte, len(b), min(max(2*cap(b), 16<<10), end))
			copy(nb, b)
			b = nb
		}
		m, err := r.Read(b[len(b):min(cap(b), end)])
		b = b[:len(b)+m]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// bodyBufPool recycles request body buffers; bodyBufKeepMax bounds the
// buffers it keeps (larger ones go to the GC).
var bodyBufPool = sync.Pool{New: func() any { return new([]byte) }}

const bodyBufKeepMax = 1 << 20

// finish drains what the request left of its body (so the client can read
// the answer), or arranges a lingering close after the answer, and gives
// back the body buffer and its share of the in-flight budget. The drain
// comes first: releasing the body closes fasthttp's stream.
func (s *Server) finish(ctx *fasthttp.RequestCtx, in *intake) {
	if !in.consumed {
		if stream := ctx.Request.BodyStream(); stream != nil {
			drainMax := s.cfg.BodyDrainUnauthMax
			if in.authed {
				drainMax = s.cfg.BodyDrainMax
			}
			if !drain(ctx, stream, drainMax, s.cfg.BodyDrainTime) && !ctx.Response.ConnectionClose() {
				// The rest of the body must never be read as the next request:
				// the connection ends after this answer, gently.
				ctx.Hijack(lingerClose)
			}
		}
	}
	if in.buf != nil {
		if in.consumed {
			ctx.Request.ResetBody() // the body aliased the buffer: no reference stays behind
		}
		if cap(*in.buf) <= bodyBufKeepMax {
			*in.buf = (*in.buf)[:0]
			bodyBufPool.Put(in.buf)
		}
		in.buf = nil
	}
	if in.reserved > 0 {
		s.inFlight.Add(-in.reserved)
		in.reserved = 0
	}
}

// drain reads and discards up to max bytes of stream within d, and
// reports whether it reached the end of the body.
func drain(ctx *fasthttp.RequestCtx, stream io.Reader, max int64, d time.Duration) bool {
	if c := ctx.Conn(); c != nil {
		_ = c.SetReadDeadline(time.Now().Add(d)) // fasthttp sets the next request's own deadline
	}
	bufp := drainBufPool.Get().(*[]byte)
	defer drainBufPool.Put(bufp)
	var n int64
	for n <= max {
		m, err := stream.Read(*bufp)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			return n <= max
		}
		if err != nil {
			ctx.SetConnectionClose() // the connection failed or stalled: close, no lingering
			return false
		}
	}
	return false
}

var drainBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// expect answers `Expect: 100-continue`: 100 when the headers pass the
// route, token and size checks, else the JSON error (the client has sent
// no body yet, so it reads it cleanly).
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	var params pathParams
	r, e := s.match(ctx, &params)
	if fe := framingError(ctx); fe != nil {
		e = fe
	}
	if e == nil {
		var in intake
		e = s.admit(ctx, r, &in, false)
	}
	if e != nil {
		label := "unmatched"
		if r != nil {
			label = r.label
		}
		writeError(ctx, e)
		s.metrics.countRequest(label, e.status)
		return e.status
	}
	return fasthttp.StatusContinue
}

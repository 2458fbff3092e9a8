package httpfront

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/replication"
)

// Config holds the HTTP front's settings. Every request limit is here,
// named, with its default in Defaults.
type Config struct {
	Tokens   []Token // empty: only the "dev" token is accepted
	DevToken bool    // accept the "dev" token (set when no tokens are configured)
	Rocket   bool    // report rocket-mode acknowledgements

	AutoCreateTopics  bool
	DefaultPartitions int
	MaxPartitions     int

	MaxMessageBytes  int // one message (produce body, NDJSON line)
	MaxBatchMessages int // lines in one NDJSON request
	MaxBatchBytes    int // bytes of one NDJSON request
	MaxKeyBytes      int // key and idempotency_key

	DefaultTimeout time.Duration // produce/commit/create wait for durability
	MaxTimeout     time.Duration // largest timeout_ms accepted

	ConsumeLimitDefault int
	ConsumeLimitMax     int
	MaxBytesDefault     int
	MaxBytesMax         int
	WaitMax             time.Duration // largest wait_ms honoured

	HeaderBytesMax int // request line + headers (so also the URL)
	IdleTimeout    time.Duration
	ReadTimeout    time.Duration

	DataDir   string // for the disk-free gauge
	IOBackend string // for /metrics
	Logger    *slog.Logger
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		AutoCreateTopics:    true,
		DefaultPartitions:   8,
		MaxPartitions:       engine.PartitionsMaxDefault,
		MaxMessageBytes:     1 << 20,
		MaxBatchMessages:    10000,
		MaxBatchBytes:       4 << 20,
		MaxKeyBytes:         1024,
		DefaultTimeout:      30 * time.Second,
		MaxTimeout:          120 * time.Second,
		ConsumeLimitDefault: 100,
		ConsumeLimitMax:     1000,
		MaxBytesDefault:     1 << 20,
		MaxBytesMax:         16 << 20,
		WaitMax:             30 * time.Second,
		HeaderBytesMax:      16 << 10,
		IdleTimeout:         120 * time.Second,
		ReadTimeout:         60 * time.Second,
	}
}

// Server is the HTTP front of one node.
type Server struct {
	cfg     Config
	node    *replication.Node
	store   *engine.Store
	auth    *authenticator
	metrics *metrics
	srv     *fasthttp.Server
	log     *slog.Logger
}

// New returns a server over node and store.
func New(cfg Config, node *replication.Node, store *engine.Store) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tokens := cfg.Tokens
	if cfg.DevToken {
		tokens = append(tokens, Token{Secret: "dev", Scope: ScopeAdmin})
	}
	s := &Server{cfg: cfg, node: node, store: store, auth: newAuthenticator(tokens), metrics: newMetrics(), log: cfg.Logger}
	s.srv = &fasthttp.Server{
		Handler:               s.handle,
		ErrorHandler:          s.handleTransportError,
		Name:                  "keel",
		ReadBufferSize:        cfg.HeaderBytesMax,
		MaxRequestBodySize:    max(cfg.MaxMessageBytes, cfg.MaxBatchBytes) + 64<<10,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.ReadTimeout,
		IdleTimeout:           cfg.IdleTimeout,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{s.log},
	}
	return s
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Shutdown stops accepting and waits (bounded by ctx) for requests in
// flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.ShutdownWithContext(ctx) }

// handleTransportError answers what fasthttp rejects before the handler:
// oversized headers or bodies, malformed requests.
func (s *Server) handleTransportError(ctx *fasthttp.RequestCtx, err error) {
	var e *apiError
	switch {
	case strings.Contains(err.Error(), "body size exceeds") && strings.HasSuffix(string(ctx.URI().Path()), "/produce"):
		e = &apiError{status: 413, code: "message_too_large", message: fmt.Sprintf("the message is larger than max_message_bytes (%d)", s.cfg.MaxMessageBytes)}
	case strings.Contains(err.Error(), "body size exceeds") && strings.HasSuffix(string(ctx.URI().Path()), "/produce-ndjson"):
		e = &apiError{status: 413, code: "batch_too_large", message: fmt.Sprintf("the body is larger than max_batch_bytes (%d); nothing was written", s.cfg.MaxBatchBytes)}
	case strings.Contains(err.Error(), "body size exceeds"):
		e = &apiError{status: 413, code: "body_too_large", message: fmt.Sprintf("the body is larger than the server reads (%d bytes)", s.srv.MaxRequestBodySize)}
	case strings.Contains(err.Error(), "small read buffer"), strings.Contains(err.Error(), "too big"):
		e = &apiError{status: 431, code: "uri_too_long", message: fmt.Sprintf("the request line and headers exceed %d bytes", s.cfg.HeaderBytesMax)}
	default:
		e = errBadRequest("bad_request", "malformed HTTP request: "+err.Error())
	}
	s.metrics.countRequest("transport", e.status)
	writeError(ctx, e)
}

// route is one route: its label for metrics, the scope it needs, the
// methods it takes and its handler. Routes are static values, so matching
// a request allocates nothing but the path string.
type route struct {
	label   string
	scope   Scope // 0 = public
	methods string
	serve   func(s *Server, ctx *fasthttp.RequestCtx, p pathParams)
}

// pathParams are the URL-decoded path segments of a request.
type pathParams struct {
	n   int
	seg [maxPathSegments]string
}

const maxPathSegments = 5

var (
	routeHealth       = route{"health", 0, "GET", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.health(c) }}
	routeReady        = route{"ready", 0, "GET", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.ready(c) }}
	routeLivez        = route{"livez", 0, "GET", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.livez(c) }}
	routeMetrics      = route{"metrics", 0, "GET", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.serveMetrics(c) }}
	routeMetricsHA    = route{"metrics_ha", 0, "GET", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.metricsHA(c) }}
	routeDocs         = route{"docs", 0, "GET", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.docs(c) }}
	routeTopics       = route{"topics", ScopeRead, "GET POST", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.topics(c) }}
	routeTopic        = route{"topic", ScopeRead, "GET", func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.describeTopic(c, p.seg[2]) }}
	routeProduce      = route{"produce", ScopeWrite, "POST", func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.produce(c, p.seg[2], false) }}
	routeProduceBatch = route{"produce_ndjson", ScopeWrite, "POST", func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.produce(c, p.seg[2], true) }}
	routeConsume      = route{"consume", ScopeRead, "GET", func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.consume(c, p.seg[2], p.seg[3], p.seg[4]) }}
	routeCommit       = route{"commit", ScopeWrite, "POST", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.commit(c) }}
	routeSealedStatus = route{"sealed_status", ScopeRead, "GET", func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.sealedStatus(c) }}
)

// handle authenticates, routes and counts every request.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	var params pathParams
	r, err := s.match(ctx, &params)
	label := "unmatched"
	switch {
	case err != nil:
		writeError(ctx, err)
	case r != nil:
		label = r.label
		if r.scope > 0 {
			scope := r.scope
			if ctx.IsPost() && scope < ScopeWrite {
				scope = ScopeWrite // every mutation needs write scope
			}
			if e := s.auth.check(ctx.Request.Header.Peek("Authorization"), scope, time.Now()); e != nil {
				if e.status == 401 {
					ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="keel"`)
				}
				writeError(ctx, e)
				break
			}
			// Until recovery has caught up nothing is served. After a storage
			// fault reads still are, and writes fail with the fault (507 for
			// a full disk); /ready reports the node as not ready.
			if !s.node.Status().Serving {
				writeError(ctx, &apiError{status: 503, code: "not_ready", message: "recovery has not finished", retryAfter: 1})
				break
			}
		}
		r.serve(s, ctx, params)
	}
	s.metrics.countRequest(label, ctx.Response.StatusCode())
}

// match finds the route for the request. Path segments are split on the
// raw path and then URL-decoded one by one, so an encoded "/" inside a
// group name stays inside it.
func (s *Server) match(ctx *fasthttp.RequestCtx, p *pathParams) (*route, *apiError) {
	// raw and the segments cut from it alias fasthttp's request buffer
	// (no copy, no allocation per request): they are valid until the
	// handler returns. Nothing on the request path keeps one past that:
	// commands copy their bytes in Propose, and store lookups only read.
	// A handler that must keep a segment copies it (strings.Clone).
	path := ctx.URI().PathOriginal()
	raw := ""
	if len(path) > 0 {
		raw = unsafe.String(&path[0], len(path))
	}
	if len(raw) > 1 {
		raw = strings.TrimSuffix(raw, "/")
	}
	rest := strings.TrimPrefix(raw, "/")
	for {
		if p.n == maxPathSegments {
			return nil, &apiError{status: 404, code: "not_found", message: "no such route: " + raw}
		}
		seg, tail, more := strings.Cut(rest, "/")
		if strings.IndexByte(seg, '%') >= 0 {
			dec, err := url.PathUnescape(seg)
			if err != nil {
				return nil, errBadRequest("bad_request", "the path is not valid URL encoding")
			}
			seg = dec
		}
		p.seg[p.n] = seg
		p.n++
		if !more {
			break
		}
		rest = tail
	}
	r := routeFor(p)
	if r == nil {
		return nil, &apiError{status: 404, code: "not_found", message: "no such route: " + raw}
	}
	allowed := ctx.IsGet() && strings.Contains(r.methods, "GET") || ctx.IsPost() && strings.Contains(r.methods, "POST")
	if !allowed {
		method := string(ctx.Method())
		ctx.Response.Header.Set("Allow", strings.ReplaceAll(r.methods, " ", ", "))
		return nil, &apiError{status: 405, code: "method_not_allowed", message: method + " is not allowed here; use " + r.methods}
	}
	return r, nil
}

func routeFor(p *pathParams) *route {
	seg := p.seg[:p.n]
	switch {
	case len(seg) == 1:
		switch seg[0] {
		case "health":
			return &routeHealth
		case "ready", "readyz":
			return &routeReady
		case "livez":
			return &routeLivez
		case "metrics":
			return &routeMetrics
		case "metrics_ha":
			return &routeMetricsHA
		}
	case len(seg) == 2 && seg[0] == "docs" && seg[1] == "errors":
		return &routeDocs
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "topics":
		return &routeTopics
	case len(seg) == 3 && seg[0] == "broker" && seg[1] == "topics":
		return &routeTopic
	case len(seg) == 4 && seg[0] == "broker" && seg[1] == "topics" && seg[3] == "produce":
		return &routeProduce
	case len(seg) == 4 && seg[0] == "broker" && seg[1] == "topics" && seg[3] == "produce-ndjson":
		return &routeProduceBatch
	case len(seg) == 5 && seg[0] == "broker" && seg[1] == "consume":
		return &routeConsume
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "commit":
		return &routeCommit
	case len(seg) == 3 && seg[0] == "admin" && seg[1] == "sealed" && seg[2] == "status":
		return &routeSealedStatus
	}
	return nil
}

// requestStart is when fasthttp began this request (it sets ctx.Time just
// before calling the handler); a RequestCtx that fasthttp.Server did not
// serve (tests) has none, and gets now.
func requestStart(ctx *fasthttp.RequestCtx) time.Time {
	if t := ctx.Time(); !t.IsZero() {
		return t
	}
	return time.Now()
}

// deadlineFrom reads timeout_ms (default cfg.DefaultTimeout), counted from
// the request's start.
func (s *Server) deadlineFrom(ctx *fasthttp.RequestCtx) (time.Time, *apiError) {
	start := requestStart(ctx)
	ms, ok, err := queryUint(ctx.QueryArgs(), "timeout_ms", uint64(s.cfg.MaxTimeout/time.Millisecond))
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return start.Add(s.cfg.DefaultTimeout), nil
	}
	return start.Add(time.Duration(ms) * time.Millisecond), nil
}

// fasthttpLogger sends fasthttp's own messages (malformed requests,
// oversized headers) to the debug log: each is already answered with a
// JSON error and counted in /metrics.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Debug(fmt.Sprintf(format, args...)) }

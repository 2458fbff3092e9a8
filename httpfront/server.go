package httpfront

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/engine/query"
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

	// Node-wide limits, checked before a command is proposed (apply checks
	// them again from the entry): a create or commit the node cannot hold
	// is refused with a 4xx and never enters the log. Zero: engine's
	// defaults.
	Limits engine.EntryLimits

	ConsumeBuildersMax int           // consume pages encoded at once (0: one per CPU, GOMAXPROCS)
	PageSlotWaitMax    time.Duration // how long a read waits for one of them (or a query slot) before 503

	// Stream queries and joins (engine/query): QueriesMax run at once (0:
	// half the CPUs, at least one), each bounded by QueryLimits; compiled
	// schemas are cached, QuerySchemasMax of them; a query's body (inline
	// schemas included) is at most QueryBodyMax bytes.
	QueriesMax      int
	QueryLimits     query.Limits
	QuerySchemasMax int
	QueryBodyMax    int

	// New topics (explicit or auto-created) per second, node-wide, and the
	// burst allowed: creating a topic's directories and files runs on the
	// apply loop (~0.4 ms per directory on this machine's disk), so a flood
	// of new names would stall every other write. Over it: 429.
	TopicCreateRate  float64
	TopicCreateBurst float64

	MaxConns      int // connections served at once; over it, 503 overloaded and close (0 = no limit)
	MaxConnsPerIP int // per client address (IPv4, or IPv6 /64), loopback exempt; over it, 429 and close (0 = no limit)

	// TrustedProxies are the addresses of proxies in front of the node
	// (a TLS terminator): for a request from one of them, the client is
	// the last address of X-Forwarded-For, for the failed-authentication
	// limit. Without it, every client behind the proxy shares one
	// allowance (so one client guessing tokens locks all of them out).
	TrustedProxies []net.IP

	MaxMessageBytes  int // one message (produce body, NDJSON line)
	MaxKVValueBytes  int // one KV value (put body)
	MaxKVKeys        int // keys of every KV namespace together (0 = no limit)
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

	JSONBodyMax          int           // a JSON request body (topic create, commit)
	BodyTinyMax          int           // a body sent to a route that takes none (GET, HEAD, public routes)
	BodyBytesInFlightMax int64         // request bodies held in memory at once, all requests together
	BodyDrainMax         int64         // unread body discarded after a refusal, so the client reads the answer
	BodyDrainUnauthMax   int64         // the same for a request whose token was not accepted
	BodyDrainTime        time.Duration // and at most this long

	HeaderBytesMax int // request line + headers (so also the URL)
	IdleTimeout    time.Duration
	ReadTimeout    time.Duration

	// Sessions keeps consumer group members' heartbeats on the leader
	// (housekeeping.Sweeper); nil: heartbeats refresh nothing.
	Sessions SessionTracker

	// Server-Sent Events (stream.go): at most StreamsMax open at once
	// (over it, 503 too_many_streams); a keep-alive comment after
	// StreamKeepAlive of quiet; a stream whose reader takes nothing for
	// StreamWriteTimeout is closed.
	StreamsMax         int
	StreamKeepAlive    time.Duration
	StreamWriteTimeout time.Duration

	DataDir          string        // for the disk-free gauge
	RecoveryDuration time.Duration // open to serving at start, for /metrics
	IOBackend        string        // for /metrics
	Logger           *slog.Logger
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		AutoCreateTopics:     true,
		DefaultPartitions:    8,
		MaxPartitions:        engine.PartitionsMaxDefault,
		MaxMessageBytes:      1 << 20,
		MaxKVValueBytes:      1 << 20,
		MaxKVKeys:            5_000_000,
		MaxBatchMessages:     10000,
		MaxBatchBytes:        4 << 20,
		MaxKeyBytes:          1024,
		DefaultTimeout:       30 * time.Second,
		MaxTimeout:           120 * time.Second,
		ConsumeLimitDefault:  100,
		ConsumeLimitMax:      1000,
		MaxBytesDefault:      1 << 20,
		MaxBytesMax:          16 << 20,
		WaitMax:              30 * time.Second,
		JSONBodyMax:          64 << 10,
		BodyTinyMax:          4 << 10,
		BodyBytesInFlightMax: 256 << 20,
		BodyDrainMax:         16 << 20,
		BodyDrainUnauthMax:   64 << 10,
		BodyDrainTime:        5 * time.Second,
		PageSlotWaitMax:      5 * time.Second,
		QueryLimits:          query.DefaultLimits(),
		QuerySchemasMax:      128,
		QueryBodyMax:         1 << 20,
		StreamsMax:           4096,
		StreamKeepAlive:      15 * time.Second,
		StreamWriteTimeout:   30 * time.Second,
		TopicCreateRate:      20,
		TopicCreateBurst:     2,
		HeaderBytesMax:       16 << 10,
		IdleTimeout:          120 * time.Second,
		ReadTimeout:          60 * time.Second,
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

	inFlight   atomic.Int64  // request body bytes held now (BodyBytesInFlightMax)
	creates    *bucket       // TopicCreateRate
	pageSlots  chan struct{} // ConsumeBuildersMax
	querySlots chan struct{} // QueriesMax
	queries    *query.Engine

	streamsOpen atomic.Int64   // event streams open (StreamsMax)
	streams     sync.WaitGroup // their goroutines
	streamStop  chan struct{}  // closed at shutdown: every stream ends
	stopOnce    sync.Once
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
	cfg.Limits = cfg.Limits.WithDefaults()
	s := &Server{cfg: cfg, node: node, store: store, auth: newAuthenticator(tokens), metrics: newMetrics(), log: cfg.Logger,
		streamStop: make(chan struct{})}
	if cfg.ConsumeBuildersMax <= 0 {
		cfg.ConsumeBuildersMax = runtime.GOMAXPROCS(0)
	}
	s.cfg.ConsumeBuildersMax = cfg.ConsumeBuildersMax
	s.pageSlots = make(chan struct{}, cfg.ConsumeBuildersMax)
	if s.cfg.QueriesMax <= 0 {
		s.cfg.QueriesMax = max(1, runtime.GOMAXPROCS(0)/2)
	}
	s.querySlots = make(chan struct{}, s.cfg.QueriesMax)
	s.queries = query.New(store, query.NewSchemas(cfg.QuerySchemasMax), cfg.QueryLimits)
	if cfg.TopicCreateRate > 0 {
		s.creates = &bucket{limit: RateLimit{RPS: cfg.TopicCreateRate, Burst: max(1, cfg.TopicCreateBurst)}, tokens: max(1, cfg.TopicCreateBurst)}
	}
	s.srv = &fasthttp.Server{
		Handler:      s.handle,
		ErrorHandler: s.handleTransportError,
		// Bodies are streamed: fasthttp reads at most 8 KiB of a body
		// before the handler, which checks the token and the route's limit
		// before it reads more (intake.go). Without streaming, fasthttp
		// allocates a buffer of the claimed Content-Length as soon as the
		// headers arrive.
		StreamRequestBody: true,
		// The caps are enforced by limitedListener (with JSON answers and
		// loopback exempt from the per-address one); fasthttp's own bound
		// sits above them.
		Concurrency:   concurrencyFor(cfg.MaxConns),
		ExpectHandler: s.expect,
		// Multipart bodies would be parsed (into memory and temp files,
		// bounded only by Content-Length) before the handler checks the
		// token: no route takes one.
		DisablePreParseMultipartForm: true,
		Name:                         "keel",
		ReadBufferSize:               cfg.HeaderBytesMax,
		MaxRequestBodySize:           max(cfg.MaxMessageBytes, cfg.MaxBatchBytes, cfg.JSONBodyMax, cfg.MaxKVValueBytes),
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.ReadTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		NoDefaultServerHeader:        true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{s.log},
	}
	return s
}

// concurrencyFor is fasthttp's connection bound for a MaxConns cap
// (0: fasthttp's default, 256K).
func concurrencyFor(maxConns int) int {
	if maxConns <= 0 {
		return 0
	}
	return maxConns + 16
}

// Serve accepts connections on ln until Shutdown. Running out of file
// descriptors (or memory for sockets) pauses accepting; it never ends
// Serve.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(newLimitedListener(ln, s.cfg.MaxConns, s.cfg.MaxConnsPerIP, s.log, s.metrics))
}

// Shutdown stops accepting, ends every event stream and waits (bounded by
// ctx) for them and for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.streamStop) })
	err := s.srv.ShutdownWithContext(ctx)
	if serr := s.closeStreams(ctx); err == nil {
		err = serr
	}
	return err
}

// handleTransportError answers what fasthttp rejects before the handler:
// oversized headers, malformed requests. The answer is a fixed text per
// kind: fasthttp's error text can quote the raw request buffer (tokens
// and the next pipelined request among it), so it goes to the debug log
// only.
func (s *Server) handleTransportError(ctx *fasthttp.RequestCtx, err error) {
	var e *apiError
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = &apiError{status: 413, code: "body_too_large", message: "the request body is larger than this route takes"}
	case strings.Contains(err.Error(), "small read buffer"), strings.Contains(err.Error(), "too big"):
		e = &apiError{status: 431, code: "uri_too_long", message: fmt.Sprintf("the request line and headers exceed %d bytes", s.cfg.HeaderBytesMax)}
	default:
		e = errBadRequest("bad_request", "malformed HTTP request")
	}
	s.log.Debug("malformed request", "err", err, "remote", ctx.RemoteAddr().String())
	s.metrics.countRequest("transport", e.status)
	writeError(ctx, e)
}

// route is one route: its label for metrics, the scope it needs, the
// methods it takes (GET routes take HEAD too), the body it takes and its
// handler. Routes are static values, so matching a request allocates
// nothing but the path string.
type route struct {
	label   string
	scope   Scope // needed to read (GET, HEAD); 0 = public
	post    Scope // needed to POST
	methods string
	body    bodyKind
	serve   func(s *Server, ctx *fasthttp.RequestCtx, p pathParams)
}

// pathParams are the URL-decoded path segments of a request.
type pathParams struct {
	n   int
	seg [maxPathSegments]string
}

const maxPathSegments = 5

var (
	routeHealth       = route{"health", 0, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.health(c) }}
	routeReady        = route{"ready", 0, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.ready(c) }}
	routeLivez        = route{"livez", 0, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.livez(c) }}
	routeMetrics      = route{"metrics", 0, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.serveMetrics(c) }}
	routeMetricsHA    = route{"metrics_ha", 0, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.metricsHA(c) }}
	routeOpenAPI      = route{"openapi", 0, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.openAPIDoc(c) }}
	routeUI           = route{"ui", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.ui(c) }}
	routeDocs         = route{"docs", 0, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.docs(c) }}
	routeTopics       = route{"topics", ScopeRead, ScopeAdmin, "GET POST", bodyJSON, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.topics(c) }}
	routeTopic        = route{"topic", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.describeTopic(c, p.seg[2]) }}
	routeProduce      = route{"produce", ScopeWrite, ScopeWrite, "POST", bodyMessage, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.produce(c, p.seg[2], false) }}
	routeProduceBatch = route{"produce_ndjson", ScopeWrite, ScopeWrite, "POST", bodyBatch, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.produce(c, p.seg[2], true) }}
	routeConsume      = route{"consume", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.consume(c, p.seg[2], p.seg[3], p.seg[4]) }}
	routeCommit       = route{"commit", ScopeWrite, ScopeWrite, "POST", bodyJSON, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.commit(c) }}
	routeDeleteBefore = route{"delete_before", ScopeAdmin, ScopeAdmin, "POST", bodyJSON, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.deleteBefore(c) }}
	routeRetention    = route{"retention", ScopeAdmin, ScopeAdmin, "POST", bodyJSON, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.retention(c) }}
	routeKV           = route{"kv", ScopeRead, ScopeWrite, "GET POST DELETE", bodyKV, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.kv(c, p.seg[1], p.seg[2], p.seg[3] == "meta") }} // seg[3]: "meta" after a key (match)
	routeKVList       = route{"kv_list", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.kvList(c, p.seg[1]) }}
	routeOffsets      = route{"offsets", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.offsets(c, p.seg[2], p.seg[3]) }}
	routeSealedStatus = route{"sealed_status", ScopeAdmin, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.sealedStatus(c) }}
	routeMembership   = route{"ha_membership", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.membership(c) }}
	routeQuery        = route{"query", ScopeRead, ScopeRead, "POST", bodyQuery, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.streamQuery(c, s.queries.Query) }}
	routeJoin         = route{"join", ScopeRead, ScopeRead, "POST", bodyQuery, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.streamQuery(c, s.queries.Join) }}
	routeGroups       = route{"groups", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, _ pathParams) { s.listGroups(c) }}
	routeGroup        = route{"group", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.describeGroup(c, p.seg[2]) }}
	routeGroupAction  = route{"group_membership", ScopeRead, ScopeRead, "POST", bodyJSON, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.groupAction(c, p.seg[2], p.seg[3]) }}
	routeMemberRead   = route{"consume_member", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.consumeAsMember(c, p.seg[2], p.seg[3]) }}
	routeStream       = route{"stream", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.stream(c, p.seg[2], p.seg[3], p.seg[4]) }}
	routeMemberStream = route{"stream_member", ScopeRead, 0, "GET", bodyNone, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.stream(c, p.seg[2], p.seg[3], "") }}
	routeMemberChange = route{"ha_membership_change", ScopeAdmin, ScopeAdmin, "POST", bodyJSON, func(s *Server, c *fasthttp.RequestCtx, p pathParams) { s.changeMembership(c, p.seg[2]) }}
)

// handle authenticates, reads the body of, routes and counts every
// request (see intake.go for the order of the checks).
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	var params pathParams
	var in intake
	r, e := s.match(ctx, &params)
	label := "unmatched"
	if r != nil {
		label = r.label
	}
	if fe := framingError(ctx); fe != nil {
		e = fe
		in.consumed = true // nothing is drained: the connection closes
	}
	if e == nil {
		e = s.admit(ctx, r, &in, true)
	}
	if e == nil && r.scope > 0 && s.clustered() && needsLeader(ctx, r) {
		// In a cluster, writes and linearizable reads are the leader's:
		// a follower redirects them (cluster.go).
		e = s.toLeader(ctx)
	}
	if e == nil && r.scope > 0 && r != &routeMembership {
		// Data routes wait (bounded) while the node starts; after a storage
		// fault reads are still served, and writes fail with the fault (507
		// for a full disk); /ready reports the node as not ready.
		e = s.waitServing(ctx)
	}
	if e == nil {
		e = s.readBody(ctx, r, &in)
	}
	switch {
	case e != nil && r == &routeUI && (e.status == 401 || e.status == 403):
		uiLogin(ctx, e) // a browser: a form, not JSON
	case e != nil:
		writeError(ctx, e)
	default:
		r.serve(s, ctx, params)
	}
	s.finish(ctx, &in)
	status := ctx.Response.StatusCode()
	s.metrics.countRequest(label, status)
	s.metrics.recordDuration(label, time.Since(requestStart(ctx)))
	if status >= 400 {
		s.logRequestError(ctx, label, status)
	}
}

// errorCodeKey holds the error code writeError answered, for the request
// log line.
const errorCodeKey = "keel.error_code"

// logRequestError logs a request answered with an error, with its route
// and code: at debug for a 4xx (the client's mistake, answered and
// counted in /metrics), at warn for a 5xx.
func (s *Server) logRequestError(ctx *fasthttp.RequestCtx, route string, status int) {
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	code, _ := ctx.UserValue(errorCodeKey).(string)
	s.log.Log(context.Background(), level, "request error", "route", route, "code", code, "status", status,
		"method", string(ctx.Method()), "remote", ctx.RemoteIP().String())
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
	if kvRest, ok := strings.CutPrefix(raw, "/kv/"); ok && kvRest != "" {
		// A KV key is the rest of the path, slashes included, a trailing
		// one too (kv.go).
		ns, key, meta, e := kvPath(kvRest)
		if e != nil {
			return nil, e
		}
		p.seg[0], p.seg[1], p.seg[2], p.n = "kv", ns, key, 3
		if meta {
			p.seg[3] = "meta"
		}
		return s.allowMethod(ctx, routeFor(p))
	}
	if len(raw) > 1 {
		raw = strings.TrimSuffix(raw, "/")
	}
	rest := strings.TrimPrefix(raw, "/")
	for {
		if p.n == maxPathSegments {
			return nil, &apiError{status: 404, code: "not_found", message: "no such route"}
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
	return s.allowMethod(ctx, routeFor(p))
}

// allowMethod checks the request's method against route r (nil: no such
// route).
func (s *Server) allowMethod(ctx *fasthttp.RequestCtx, r *route) (*route, *apiError) {
	if r == nil {
		return nil, &apiError{status: 404, code: "not_found", message: "no such route"}
	}
	// HEAD is a GET without the body (RFC 9110 section 9.3.2); fasthttp
	// sends a HEAD answer's headers (Content-Length included) and drops
	// its body.
	getLike := ctx.IsGet() || ctx.IsHead()
	allowed := getLike && strings.Contains(r.methods, "GET") || ctx.IsPost() && strings.Contains(r.methods, "POST") ||
		ctx.IsDelete() && strings.Contains(r.methods, "DELETE")
	if !allowed {
		methods := r.methods
		if strings.Contains(methods, "GET") {
			methods = strings.Replace(methods, "GET", "GET HEAD", 1)
		}
		ctx.Response.Header.Set("Allow", strings.ReplaceAll(methods, " ", ", "))
		return r, &apiError{status: 405, code: "method_not_allowed", message: string(ctx.Method()) + " is not allowed here; use " + methods}
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
		case "openapi.json":
			return &routeOpenAPI
		case "ui":
			return &routeUI
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
	case len(seg) == 4 && seg[0] == "broker" && seg[1] == "consume":
		return &routeMemberRead
	case len(seg) == 5 && seg[0] == "broker" && seg[1] == "stream":
		return &routeStream
	case len(seg) == 4 && seg[0] == "broker" && seg[1] == "stream":
		return &routeMemberStream
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "groups":
		return &routeGroups
	case len(seg) == 3 && seg[0] == "broker" && seg[1] == "groups":
		return &routeGroup
	case len(seg) == 4 && seg[0] == "broker" && seg[1] == "groups" && (seg[3] == "join" || seg[3] == "heartbeat" || seg[3] == "leave"):
		return &routeGroupAction
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "commit":
		return &routeCommit
	case len(seg) == 3 && seg[0] == "kv" && (seg[2] != "" || p.seg[3] == "meta"):
		return &routeKV // an empty key with /meta: 400 invalid_key
	case len(seg) == 3 && seg[0] == "kv":
		return &routeKVList
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "delete-before":
		return &routeDeleteBefore
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "retention":
		return &routeRetention
	case len(seg) == 4 && seg[0] == "broker" && seg[1] == "offsets":
		return &routeOffsets
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "query":
		return &routeQuery
	case len(seg) == 2 && seg[0] == "broker" && seg[1] == "join":
		return &routeJoin
	case len(seg) == 3 && seg[0] == "admin" && seg[1] == "sealed" && seg[2] == "status":
		return &routeSealedStatus
	case len(seg) == 2 && seg[0] == "ha" && seg[1] == "membership":
		return &routeMembership
	case len(seg) == 3 && seg[0] == "ha" && seg[1] == "membership" && (seg[2] == "add" || seg[2] == "promote" || seg[2] == "remove"):
		return &routeMemberChange
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

// deadlineFrom reads timeout_ms (default cfg.DefaultTimeout; clamped to
// cfg.MaxTimeout for any size of number), counted from the request's start.
func (s *Server) deadlineFrom(ctx *fasthttp.RequestCtx) (time.Time, *apiError) {
	start := requestStart(ctx)
	ms, err := queryClamped(ctx.QueryArgs(), "timeout_ms", s.cfg.DefaultTimeout.Milliseconds(), 0,
		s.cfg.MaxTimeout.Milliseconds(), "must be a non-negative integer of milliseconds")
	if err != nil {
		return time.Time{}, err
	}
	return start.Add(time.Duration(ms) * time.Millisecond), nil
}

// fasthttpLogger sends fasthttp's own messages (malformed requests,
// oversized headers) to the debug log: each is already answered with a
// JSON error and counted in /metrics.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Debug(fmt.Sprintf(format, args...)) }

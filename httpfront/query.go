package httpfront

import (
	"errors"
	"runtime/debug"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine/query"
)

// queryRun is Engine.Query or Engine.Join.
type queryRun func(body []byte) ([]byte, error)

// streamQuery serves POST /broker/query and POST /broker/join. A query is
// a read: on a follower it redirects like consume (or reads the node's
// own data with ?stale=1). At most QueriesMax run at once, each holding
// one CPU while it scans; the others wait up to PageSlotWaitMax, then
// 503, so a crowd of queries queues instead of taking every core from
// the write path.
func (s *Server) streamQuery(ctx *fasthttp.RequestCtx, run queryRun) {
	if e := s.linearizable(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	b, e := s.runQuery(ctx, run)
	if e != nil {
		s.metrics.queriesRefused.Add(1)
		writeError(ctx, e)
		return
	}
	// The answer is held until fasthttp has written it, like a consume
	// page: it takes its bytes from the same budget, and when the budget
	// is used up the query is refused rather than the writes after it.
	if s.inFlight.Add(int64(len(b))) > s.cfg.BodyBytesInFlightMax {
		s.inFlight.Add(-int64(len(b)))
		s.metrics.bodyBudgetRefused.Add(1)
		s.metrics.queriesRefused.Add(1)
		writeError(ctx, &apiError{status: 503, code: "overloaded", message: "the server holds its limit of answers in memory; retry shortly", retryAfter: 1})
		return
	}
	s.writeBudgeted(ctx, b)
}

// runQuery runs one query in a query slot. A panic in it (a decoder
// meeting input no test foresaw) is logged and answered 500; a query only
// reads, so the node goes on serving.
func (s *Server) runQuery(ctx *fasthttp.RequestCtx, run queryRun) (b []byte, e *apiError) {
	if e := s.takeQuerySlot(ctx); e != nil {
		return nil, e
	}
	start := time.Now()
	defer func() {
		<-s.querySlots
		s.metrics.queries.Add(1)
		s.metrics.queryNs.Add(uint64(time.Since(start)))
		if r := recover(); r != nil {
			s.log.Error("query failed", "path", string(ctx.Path()), "panic", r, "stack", string(debug.Stack()))
			b, e = nil, &apiError{status: 500, code: "internal", message: "an internal error; the server logged it"}
		}
	}()
	b, err := run(ctx.PostBody())
	if err != nil {
		return nil, queryError(err)
	}
	return b, nil
}

func (s *Server) takeQuerySlot(ctx *fasthttp.RequestCtx) *apiError {
	if s.takeSlot(ctx, s.querySlots) {
		return nil
	}
	return &apiError{status: 503, code: "overloaded", message: "the node runs its limit of queries at once (--queries-max); retry shortly", retryAfter: 1}
}

// queryError maps the query engine's refusals (their codes are in
// errors.md) and the engine's errors.
func queryError(err error) *apiError {
	var qe *query.Error
	if errors.As(err, &qe) {
		return &apiError{status: qe.Status, code: qe.Code, message: qe.Message}
	}
	return mapError(err)
}

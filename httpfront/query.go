package httpfront

import (
	"errors"
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
	if e := s.takeQuerySlot(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	start := time.Now()
	b, err := run(ctx.PostBody())
	<-s.querySlots
	s.metrics.queries.Add(1)
	s.metrics.queryNs.Add(uint64(time.Since(start)))
	if err != nil {
		s.metrics.queriesRefused.Add(1)
		writeError(ctx, queryError(err))
		return
	}
	s.inFlight.Add(int64(len(b)))
	s.writeBudgeted(ctx, b)
}

func (s *Server) takeQuerySlot(ctx *fasthttp.RequestCtx) *apiError {
	select {
	case s.querySlots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(s.cfg.PageSlotWaitMax)
	defer t.Stop()
	select {
	case s.querySlots <- struct{}{}:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	s.metrics.bodyBudgetRefused.Add(1)
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

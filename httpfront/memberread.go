package httpfront

import (
	"reflect"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine"
)

// consumeAsMember serves GET /broker/consume/{topic}/{group}?member_id=:
// one page from the member's assigned partitions, each read from the
// group's committed offset + 1 (or the log start), as
// {"messages":[...],"count":N,"next_offsets":[{"partition","next_offset","committed_offset"}],
// "member_id","generation","truncated"}. A member moves on by committing
// (with its member_id and generation) what it processed. limit and
// max_bytes are shared among the partitions: each gets an even share
// first, then what the others left. wait_ms waits for the first message
// on any of them.
func (s *Server) consumeAsMember(ctx *fasthttp.RequestCtx, topic, group string) {
	if e := s.linearizable(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	args := ctx.QueryArgs()
	if args.Has("offset") || args.Has("from_ts_ms") {
		writeError(ctx, errBadRequest("invalid_offset", "a member reads its partitions from the group's committed offsets; read one partition at an offset with /broker/consume/{topic}/{group}/{partition}"))
		return
	}
	m, parts, e := s.memberPartitions(topic, group, string(args.Peek("member_id")))
	if e != nil {
		writeError(ctx, e)
		return
	}
	q, e := s.parseConsumeQuery(args)
	if e != nil {
		writeError(ctx, e)
		return
	}
	from := make([]uint64, len(parts))
	for i, p := range parts {
		from[i] = p.Log.StartOffset()
		if c, ok := s.store.Committed(topic, group, p.ID); ok {
			from[i] = max(from[i], c+1)
		}
	}
	pageMax := int64(q.maxBytes) + answerOverheadBytes
	if s.inFlight.Add(pageMax) > s.cfg.BodyBytesInFlightMax {
		s.inFlight.Add(-pageMax)
		s.metrics.bodyBudgetRefused.Add(1)
		writeError(ctx, &apiError{status: 503, code: "overloaded", message: "the server holds its limit of answers in memory; retry shortly", retryAfter: 1})
		return
	}
	reserved := pageMax
	defer func() { s.inFlight.Add(-reserved) }()
	b := append(make([]byte, 0, 4096), `{"messages":[`...)
	next := make([]uint64, len(parts))
	deadline := time.Now().Add(q.wait)
	var count int
	var truncated bool
	for {
		cases := make([]reflect.SelectCase, 0, len(parts)+2)
		for _, p := range parts { // taken before reading, so no append is missed
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.Changed())})
		}
		if e := s.takePageSlot(ctx); e != nil {
			writeError(ctx, e)
			return
		}
		var err error
		b, count, truncated, err = appendMemberPage(b[:len(`{"messages":[`)], parts, from, next, q)
		s.releasePageSlot()
		if err != nil {
			writeError(ctx, mapError(err))
			return
		}
		if count > 0 || q.wait <= 0 || !time.Now().Before(deadline) || len(parts) == 0 {
			break
		}
		timer := time.NewTimer(time.Until(deadline))
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())})
		if i, _, _ := reflect.Select(cases); i == len(cases)-1 {
			deadline = time.Now() // the server is shutting down: answer what there is
		}
		timer.Stop()
	}
	s.metrics.consumed.Add(uint64(count))
	b = append(b, ']')
	b = appendIntField(b, "count", int64(count))
	b = append(appendKey(b, "next_offsets"), '[')
	for i, p := range parts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = appendIntField(b, "partition", int64(p.ID))
		b = appendUintField(b, "next_offset", next[i])
		if c, ok := s.store.Committed(topic, group, p.ID); ok {
			b = appendUintField(b, "committed_offset", c)
		} else {
			b = appendNullField(b, "committed_offset")
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	b = appendStringField(b, "member_id", m.ID)
	b = appendUintField(b, "generation", m.generation)
	b = appendBoolField(b, "truncated", truncated)
	b = append(b, '}')
	s.inFlight.Add(int64(len(b)) - reserved)
	reserved = 0
	s.writeBudgeted(ctx, b)
}

// memberView is a member as of one generation.
type memberView struct {
	ID         string
	generation uint64
}

// memberPartitions returns the member of group and its partitions of
// topic, or 409 unknown_member / not_assigned.
func (s *Server) memberPartitions(topic, group, id string) (memberView, []*engine.Partition, *apiError) {
	if !engine.ValidTopicName(topic) {
		return memberView{}, nil, mapError(engine.ErrInvalidTopic)
	}
	if !engine.ValidGroupName(group) {
		return memberView{}, nil, mapError(engine.ErrInvalidGroup)
	}
	if id == "" {
		return memberView{}, nil, errBadRequest("invalid_member", "member_id is required: the id a join answered")
	}
	g, m, e := s.member(group, id)
	if e != nil {
		return memberView{}, nil, e
	}
	if m.Topic != topic {
		return memberView{}, nil, &apiError{status: fasthttp.StatusConflict, code: "not_assigned", message: "the member joined the group for topic " + m.Topic}
	}
	t, ok := s.store.Topic(topic)
	if !ok {
		return memberView{}, nil, mapError(engine.ErrUnknownTopic)
	}
	parts := make([]*engine.Partition, 0, len(m.Partitions))
	for _, p := range m.Partitions {
		if int(p) < len(t.Partitions) {
			parts = append(parts, t.Partitions[p])
		}
	}
	return memberView{ID: m.ID, generation: g.Generation}, parts, nil
}

// appendMemberPage appends messages of parts (partition i from from[i])
// and sets next[i] to where each read stopped. Each partition first gets
// an even share of the limit and byte budget, then the partitions that
// filled their share read on with what the others left.
func appendMemberPage(b []byte, parts []*engine.Partition, from, next []uint64, q consumeQuery) ([]byte, int, bool, error) {
	copy(next, from)
	if len(parts) == 0 {
		return b, 0, false, nil
	}
	base := len(b)
	count := 0
	share := consumeQuery{limit: max(1, q.limit/len(parts)), maxBytes: max(1, q.maxBytes/len(parts)), b64: q.b64}
	for pass := 0; pass < 2 && count < q.limit && len(b)-base < q.maxBytes; pass++ {
		for i, p := range parts {
			left := consumeQuery{limit: q.limit - count, maxBytes: q.maxBytes - (len(b) - base), b64: q.b64}
			if left.limit <= 0 || left.maxBytes <= 0 {
				break
			}
			if pass == 0 {
				left.limit, left.maxBytes = min(left.limit, share.limit), min(left.maxBytes, share.maxBytes)
			}
			mark := len(b)
			if count > 0 {
				b = append(b, ',')
			}
			var n int
			var err error
			b, n, next[i], _, err = appendMessages(b, p, next[i], left)
			if err != nil {
				return b, count, false, err
			}
			if n == 0 {
				b = b[:mark]
			}
			count += n
		}
	}
	// As for one partition: the byte budget cut the page when it holds
	// fewer than limit messages while some partition has more.
	truncated := false
	for i, p := range parts {
		truncated = truncated || count > 0 && count < q.limit && next[i] < p.Log.NextOffset()
	}
	return b, count, truncated, nil
}

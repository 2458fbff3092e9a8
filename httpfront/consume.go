package httpfront

import (
	"bytes"
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/engine/logstore"
	"keel/engine/record"
)

// consumeQuery is a validated consume request.
type consumeQuery struct {
	offset    uint64
	hasOffset bool
	fromStart bool // a negative offset: the log start, ignoring the commit
	limit     int
	maxBytes  int
	b64       bool
	wait      time.Duration
	fromTs    int64 // from_ts_ms: start at the first record at or after it
	hasFromTs bool
}

// consume serves GET /broker/consume/{topic}/{group}/{partition}.
func (s *Server) consume(ctx *fasthttp.RequestCtx, topic, group, pstr string) {
	if e := s.linearizable(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	part, e := s.consumeTarget(topic, group, pstr)
	if e != nil {
		writeError(ctx, e)
		return
	}
	q, e := s.parseConsumeQuery(ctx.QueryArgs())
	if e != nil {
		writeError(ctx, e)
		return
	}
	committed, hasCommitted := s.store.Committed(topic, group, part.ID)
	from := part.Log.StartOffset()
	switch {
	case q.hasFromTs:
		var err error
		if from, _, err = s.offsetForTime(part, q.fromTs); err != nil {
			writeError(ctx, mapError(err))
			return
		}
	case q.fromStart:
	case q.hasOffset:
		from = q.offset
	case hasCommitted:
		from = committed + 1
	}
	// A page's budget is reserved before it is built, so a page that the
	// budget refuses costs no encoding: a crowd of large reads is turned
	// away before it takes the CPU from everyone else. A long poll gives
	// its reservation back while it waits.
	pageMax := int64(q.maxBytes) + answerOverheadBytes
	var reserved int64
	defer func() { s.inFlight.Add(-reserved) }()
	b := append(make([]byte, 0, 4096), `{"messages":[`...)
	deadline := time.Now().Add(q.wait)
	var count int
	var next uint64
	var truncated bool
	for {
		changed := part.Changed() // taken before reading, so no append is missed
		if e := s.takePageSlot(ctx); e != nil {
			writeError(ctx, e)
			return
		}
		if s.inFlight.Add(pageMax) > s.cfg.BodyBytesInFlightMax {
			s.releasePageSlot()
			s.inFlight.Add(-pageMax)
			s.metrics.bodyBudgetRefused.Add(1)
			writeError(ctx, &apiError{status: 503, code: "overloaded", message: "the server holds its limit of answers in memory; retry shortly", retryAfter: 1})
			return
		}
		reserved = pageMax
		var err error
		b, count, next, truncated, err = appendMessages(b, part, from, q)
		s.releasePageSlot()
		if err != nil {
			writeError(ctx, mapError(err))
			return
		}
		if count > 0 || q.wait <= 0 || !time.Now().Before(deadline) {
			break
		}
		s.inFlight.Add(-reserved)
		reserved = 0
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done(): // the server is shutting down: answer what there is
			deadline = time.Now()
		}
		timer.Stop()
	}
	s.metrics.consumed.Add(uint64(count))
	b = append(b, ']')
	b = appendIntField(b, "count", int64(count))
	b = appendUintField(b, "next_offset", next)
	if hasCommitted {
		b = appendUintField(b, "committed_offset", committed)
	} else {
		b = appendNullField(b, "committed_offset")
	}
	b = appendBoolField(b, "truncated", truncated)
	b = append(b, '}')
	// Keep what the page holds reserved until fasthttp has written it.
	s.inFlight.Add(int64(len(b)) - reserved)
	reserved = 0
	s.writeBudgeted(ctx, b)
}

// takePageSlot waits for one of the ConsumeBuildersMax slots that bound
// how many consume pages are encoded at once. Encoding is the expensive
// part of a read (JSON escaping of every byte); without a bound, a crowd
// of readers asking for large pages at once made every other request wait
// behind hundreds of runnable encoders, the Raft loop included (450 such
// readers delayed another client's produce by 300 ms to 1 s). Measured
// with cmd/keel's TestHostileTarget: 4 slots per CPU still let the slowest
// produce take 600-800 ms; one per CPU, 22-80 ms, with consume-1000 at
// the same throughput (4.0/4.1M msg/s against 4.3/3.8M before, alternating
// runs). The wait is bounded by PageSlotWaitMax, then 503.
func (s *Server) takePageSlot(ctx *fasthttp.RequestCtx) *apiError {
	if s.takeSlot(ctx, s.pageSlots) {
		return nil
	}
	s.metrics.bodyBudgetRefused.Add(1)
	return &apiError{status: 503, code: "overloaded", message: "too many reads are being answered at once; retry shortly", retryAfter: 1}
}

func (s *Server) releasePageSlot() { <-s.pageSlots }

// takeSlot waits for a place in slots, at most PageSlotWaitMax or until
// the server shuts down; false when none came.
func (s *Server) takeSlot(ctx *fasthttp.RequestCtx, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(s.cfg.PageSlotWaitMax)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// answerOverheadBytes is what a page adds to max_bytes (its fields
// around the messages).
const answerOverheadBytes = 256

// writeBudgeted answers 200 with body b, whose bytes the caller has taken
// from the in-flight memory budget; they go back when fasthttp has written
// the answer (or dropped it): a client that does not read its answers
// holds that memory, so pages held for slow readers are bounded like
// request bodies.
func (s *Server) writeBudgeted(ctx *fasthttp.RequestCtx, b []byte) {
	n := int64(len(b))
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBodyStream(&budgetedBody{Reader: bytes.NewReader(b), s: s, n: n}, len(b))
}

// budgetedBody is an answer body that gives its bytes back to the budget
// when fasthttp closes it (after writing it, or when the response is
// reset unwritten).
type budgetedBody struct {
	*bytes.Reader
	s    *Server
	n    int64
	done bool
}

func (b *budgetedBody) Close() error {
	if !b.done {
		b.done = true
		b.s.inFlight.Add(-b.n)
	}
	return nil
}

func (s *Server) consumeTarget(topic, group, pstr string) (*engine.Partition, *apiError) {
	if !engine.ValidTopicName(topic) {
		return nil, mapError(engine.ErrInvalidTopic)
	}
	if !engine.ValidGroupName(group) {
		return nil, mapError(engine.ErrInvalidGroup)
	}
	p, err := strconv.ParseUint(pstr, 10, 64)
	if err != nil {
		return nil, errBadRequest("invalid_partition", "the partition in the path must be a non-negative integer")
	}
	return s.existingPartition(topic, p)
}

// existingPartition returns partition p of topic, or the API error for a
// topic or partition that does not exist.
func (s *Server) existingPartition(topic string, p uint64) (*engine.Partition, *apiError) {
	t, ok := s.store.Topic(topic)
	if !ok {
		return nil, mapError(engine.ErrUnknownTopic)
	}
	if p >= uint64(len(t.Partitions)) {
		return nil, mapError(engine.ErrUnknownPartition)
	}
	return t.Partitions[p], nil
}

func (s *Server) parseConsumeQuery(args *fasthttp.Args) (consumeQuery, *apiError) {
	q := consumeQuery{}
	var e *apiError
	if q.offset, q.hasOffset, q.fromStart, e = queryOffset(args); e != nil {
		return q, e
	}
	limit, e := queryClamped(args, "limit", int64(s.cfg.ConsumeLimitDefault), 1, int64(s.cfg.ConsumeLimitMax), "must be a positive integer")
	if e != nil {
		return q, e
	}
	maxBytes, e := queryClamped(args, "max_bytes", int64(s.cfg.MaxBytesDefault), 1, int64(s.cfg.MaxBytesMax), "must be a positive integer")
	if e != nil {
		return q, e
	}
	waitMs, e := queryClamped(args, "wait_ms", 0, 0, s.cfg.WaitMax.Milliseconds(), "must be a non-negative integer of milliseconds")
	if e != nil {
		return q, e
	}
	q.limit, q.maxBytes, q.wait = int(limit), int(maxBytes), time.Duration(waitMs)*time.Millisecond
	if q.fromTs, q.hasFromTs, e = queryInt(args, "from_ts_ms"); e != nil {
		return q, e
	}
	if q.hasFromTs && q.hasOffset {
		return q, errBadRequest("invalid_offset", "give offset or from_ts_ms, not both")
	}
	switch enc := string(args.Peek("encoding")); enc {
	case "", "text", "utf8":
	case "b64", "base64":
		q.b64 = true
	default:
		return q, errBadRequest("invalid_encoding", "encoding must be b64 (or absent for text)")
	}
	return q, nil
}

// queryOffset reads consume's offset: absent; a non-negative offset (one
// too large for 64 bits is past any log end); or a negative one, which
// means the log start, whatever the group committed.
func queryOffset(args *fasthttp.Args) (offset uint64, has, fromStart bool, e *apiError) {
	raw := args.Peek("offset")
	if raw == nil {
		return 0, false, false, nil
	}
	v, k := classifyNumber(raw)
	switch k {
	case numberInvalid:
		return 0, true, false, errBadRequest("invalid_offset", "offset must be an integer (a negative offset reads from the log start)")
	case numberNegative:
		return 0, true, true, nil
	case numberHuge:
		u, err := strconv.ParseUint(strings.TrimPrefix(string(raw), "+"), 10, 64)
		if err != nil {
			u = math.MaxUint64
		}
		return u, true, false, nil
	}
	return uint64(v), true, false, nil
}

// appendMessages appends up to q.limit messages from offset from as JSON
// array elements and returns the count, the offset to read next, and
// whether the byte budget cut the page short. The budget q.maxBytes counts
// the bytes written (escapes and base64 included), not the bytes stored;
// the first message is always returned, so a page is never empty while
// data exists.
func appendMessages(b []byte, p *engine.Partition, from uint64, q consumeQuery) ([]byte, int, uint64, bool, error) {
	end := p.Log.NextOffset()
	base := len(b)
	count := 0
	next, err := scanMessages(p, from, q.maxBytes, func(m record.Message) (taken, more bool) {
		before := len(b)
		if count > 0 {
			b = append(b, ',')
		}
		b = appendMessage(b, p.ID, m, q.b64)
		if count > 0 && len(b)-base > q.maxBytes {
			b = b[:before]
			return false, false
		}
		count++
		return true, count < q.limit && len(b)-base < q.maxBytes
	})
	truncated := count > 0 && count < q.limit && next < end
	return b, count, next, truncated, err
}

// scanMessages hands emit the messages of p from offset from, in order,
// reading readBytes of the log at a time, until emit says no more (more
// false) or gives one back (taken false: the next read starts at it), or
// the log ends. It returns the offset to read next. Records past the
// partition's TTL are skipped until the retention sweep deletes them:
// first by the time index (every record before the first one recent
// enough is expired), then one by one (a leader change may leave an older
// timestamp after a newer one).
func scanMessages(p *engine.Partition, from uint64, readBytes int, emit func(m record.Message) (taken, more bool)) (uint64, error) {
	end := p.Log.NextOffset()
	count := 0
	var decodeErr error
	var cut bool         // the last message read was given back
	var cutOffset uint64 // its offset: where the next read starts
	expiredBefore, ttl := p.ExpiredBefore(time.Now().UnixMilli())
	if ttl {
		fresh, ok, err := p.Log.OffsetForTime(expiredBefore)
		if err != nil {
			return from, err
		}
		if !ok {
			fresh = end
		}
		from = max(from, fresh)
	}
	skippedTo := from // one past the last record skipped as expired
	// The stored bytes read are at most the bytes written (every message
	// gains at least its JSON field names), so the log's own budget never
	// stops a page before the written budget does.
	var next uint64
	var err error
	// Expired records skipped use up a read's byte budget: while nothing
	// was taken and records were skipped, read on from past them.
	for read := from; ; read = next {
		next, err = p.Log.Read(read, readBytes, func(fr logstore.Frame) bool {
			m, err := record.DecodeMessage(fr.Offset, fr.Payload)
			if err != nil {
				decodeErr = err
				return false
			}
			if ttl && m.TimestampMs < expiredBefore {
				skippedTo = fr.Offset + 1
				return true
			}
			taken, more := emit(m)
			if !taken {
				cut, cutOffset = true, fr.Offset
				return false
			}
			count++
			return more
		})
		if count > 0 || err != nil || decodeErr != nil || cut || next <= read || next >= end || skippedTo <= read {
			break
		}
	}
	if err == nil {
		err = decodeErr
	}
	if cut {
		next = cutOffset
	}
	if count == 0 {
		// Nothing taken: keep the caller's position (moved up to the log
		// start if retention deleted what it asked for, and past records
		// skipped as expired or removed by compaction).
		next = max(next, from, skippedTo, p.Log.StartOffset())
	}
	return next, err
}

func appendMessage(b []byte, partition int32, m record.Message, b64 bool) []byte {
	b = append(b, '{')
	b = appendUintField(b, "offset", m.Offset)
	b = appendIntField(b, "partition", int64(partition))
	if b64 {
		b = appendKey(b, "value_b64")
		b = appendBase64(b, m.Value)
		if len(m.Key) > 0 {
			b = appendKey(b, "key_b64")
			b = appendBase64(b, m.Key)
		}
	} else {
		b = appendJSONString(appendKey(b, "key"), m.Key)
		b = appendJSONString(appendKey(b, "value"), m.Value)
	}
	b = appendIntField(b, "timestamp_ms", m.TimestampMs)
	return append(b, '}')
}

func appendBase64(b, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

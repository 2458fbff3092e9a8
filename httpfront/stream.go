package httpfront

import (
	"context"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/engine/record"
)

// Server-Sent Events (api.md "Consume"; the format is the WHATWG HTML
// standard's, section 9.2 "Server-sent events"):
//
//	GET /broker/stream/{topic}/{group}/{partition}   one partition
//	GET /broker/stream/{topic}/{group}?member_id=    a member's partitions
//
// Each message is one event, sent once it is committed (readable, as for
// consume):
//
//	id: <offset>                 (member streams: <partition>:<offset>,... for every partition)
//	data: <the message JSON, as consume returns it>
//
// A partition stream starts after Last-Event-ID when the client sends one
// (EventSource does when it reconnects), else at offset (a negative one:
// the log start), else after the group's committed offset, else at the
// log start. A member stream starts each partition after its position in
// Last-Event-ID, else after the committed offset; when the group
// rebalances it sends "event: rebalance" and goes on with the member's new
// partitions; when the member is gone it sends "event: error" and ends.
// A stream never commits.
//
// The connection is taken over from fasthttp (hijacked): the stream
// writes its own response and events straight to the socket, one
// goroutine per stream, a batch at a time (at most streamBatchMessages
// messages or streamBatchBytes). A slow reader gets backpressure: the
// stream reads the log only as fast as the socket takes its writes, and
// one that takes nothing for StreamWriteTimeout is closed. Comments (":
// keep-alive") go out after StreamKeepAlive of quiet, so proxies keep the
// connection. On shutdown every stream sends "event: close" and ends.
const (
	streamBatchMessages = 100
	streamBatchBytes    = 64 << 10
	streamKeepAliveMin  = 100 * time.Millisecond
	streamKeepAliveMax  = 5 * time.Minute
)

const streamHeader = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n"

// streamPart is one partition of a stream and the offset it sends next.
type streamPart struct {
	p    *engine.Partition
	next uint64
	sent bool // an event of it went out (or Last-Event-ID named it): it is in the member's id
}

type stream struct {
	topic, group string
	member       string // "" for a partition stream
	generation   uint64
	parts        []*streamPart // ascending partition
	b64          bool
	keepAlive    time.Duration
}

// stream serves both routes (pstr "" for a member's stream).
func (s *Server) stream(ctx *fasthttp.RequestCtx, topic, group, pstr string) {
	if e := s.linearizable(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	st, e := s.openStream(ctx, topic, group, pstr)
	if e != nil {
		writeError(ctx, e)
		return
	}
	if ctx.IsHead() {
		ctx.SetContentType("text/event-stream")
		return
	}
	if s.streamsOpen.Add(1) > int64(s.cfg.StreamsMax) {
		s.streamsOpen.Add(-1)
		s.metrics.streamsRefused.Add(1)
		writeError(ctx, &apiError{status: 503, code: "too_many_streams", retryAfter: 1,
			message: "the node holds its limit of open event streams (--max-streams); retry shortly"})
		return
	}
	s.streams.Add(1)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer s.streams.Done()
		defer s.streamsOpen.Add(-1)
		s.runStream(c, st)
	})
}

// openStream validates a stream request and finds where each partition
// starts.
func (s *Server) openStream(ctx *fasthttp.RequestCtx, topic, group, pstr string) (*stream, *apiError) {
	args := ctx.QueryArgs()
	// The stream outlives the handler: its names must not alias the
	// request's buffer (server.go, match).
	topic, group = strings.Clone(topic), strings.Clone(group)
	st := &stream{topic: topic, group: group, keepAlive: s.cfg.StreamKeepAlive}
	switch enc := string(args.Peek("encoding")); enc {
	case "", "text", "utf8":
	case "b64", "base64":
		st.b64 = true
	default:
		return nil, errBadRequest("invalid_encoding", "encoding must be b64 (or absent for text)")
	}
	ka, e := queryClamped(args, "keepalive_ms", s.cfg.StreamKeepAlive.Milliseconds(), streamKeepAliveMin.Milliseconds(),
		streamKeepAliveMax.Milliseconds(), "must be a positive integer of milliseconds")
	if e != nil {
		return nil, e
	}
	st.keepAlive = time.Duration(ka) * time.Millisecond
	lastID := strings.TrimSpace(string(ctx.Request.Header.Peek("Last-Event-ID")))
	if pstr != "" {
		p, e := s.consumeTarget(topic, group, pstr)
		if e != nil {
			return nil, e
		}
		offset, hasOffset, fromStart, e := queryOffset(args)
		if e != nil {
			return nil, e
		}
		sp := &streamPart{p: p, next: p.Log.StartOffset()}
		switch {
		case lastID != "":
			id, err := strconv.ParseUint(lastID, 10, 64)
			if err != nil || id == 1<<64-1 {
				return nil, errBadRequest("invalid_last_event_id", "Last-Event-ID must be the offset of an event this stream sent")
			}
			sp.next = id + 1
		case fromStart:
		case hasOffset:
			sp.next = offset
		default:
			if c, ok := s.store.Committed(topic, group, p.ID); ok {
				sp.next = c + 1
			}
		}
		st.parts = []*streamPart{sp}
		return st, nil
	}
	if args.Has("offset") {
		return nil, errBadRequest("invalid_offset", "a member's stream starts from the group's committed offsets (or Last-Event-ID); stream one partition to start at an offset")
	}
	st.member = string(args.Peek("member_id"))
	m, parts, e := s.memberPartitions(topic, group, st.member)
	if e != nil {
		return nil, e
	}
	st.generation = m.generation
	resume, ok := parsePositions(lastID)
	if !ok {
		return nil, errBadRequest("invalid_last_event_id", "Last-Event-ID must be an id this stream sent: partition:offset pairs separated by commas")
	}
	st.setParts(s.store, parts, resume)
	return st, nil
}

// parsePositions reads a member stream's event id, "p:o,p:o,...".
func parsePositions(id string) (map[int32]uint64, bool) {
	out := map[int32]uint64{}
	if id == "" {
		return out, true
	}
	for _, f := range strings.Split(id, ",") {
		ps, os, ok := strings.Cut(f, ":")
		p, err1 := strconv.ParseUint(ps, 10, 31)
		o, err2 := strconv.ParseUint(os, 10, 64)
		if !ok || err1 != nil || err2 != nil || o == 1<<64-1 {
			return nil, false
		}
		out[int32(p)] = o
	}
	return out, true
}

// setParts makes parts the stream's partitions: one it already streams
// keeps its position; another starts after resume's position for it, else
// after the committed offset, else at the log start.
func (st *stream) setParts(store *engine.Store, parts []*engine.Partition, resume map[int32]uint64) {
	old := st.parts
	st.parts = make([]*streamPart, 0, len(parts))
	for _, p := range parts {
		if i := slices.IndexFunc(old, func(o *streamPart) bool { return o.p == p }); i >= 0 {
			st.parts = append(st.parts, old[i])
			continue
		}
		sp := &streamPart{p: p, next: p.Log.StartOffset()}
		if o, ok := resume[p.ID]; ok {
			sp.next, sp.sent = o+1, true
		} else if c, ok := store.Committed(st.topic, st.group, p.ID); ok {
			sp.next = max(sp.next, c+1)
		}
		st.parts = append(st.parts, sp)
	}
}

// runStream writes the stream to c until the reader goes, the member
// leaves, a write fails or times out, or the server shuts down.
func (s *Server) runStream(c net.Conn, st *stream) {
	gone := make(chan struct{})
	go func() {
		// The client sends nothing more; a read ends when it closes the
		// connection, or at the read deadline runStream sets on return.
		var buf [64]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				close(gone)
				return
			}
		}
	}()
	// The reader goroutine must be done before this returns: fasthttp
	// then reuses the connection's read buffer and closes the socket.
	defer func() {
		_ = c.SetReadDeadline(time.Now())
		<-gone
	}()
	write := func(b []byte) bool {
		_ = c.SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout))
		_, err := c.Write(b)
		return err == nil
	}
	if !write([]byte(streamHeader + "retry: 1000\n\n")) {
		return
	}
	keepAlive := time.NewTimer(st.keepAlive)
	defer keepAlive.Stop()
	var buf []byte
	for {
		var groupsChanged <-chan struct{}
		if st.member != "" {
			groupsChanged = s.store.GroupsChanged()
			if b, ok := s.followRebalance(st); len(b) > 0 {
				if !write(b) || !ok {
					return
				}
			}
		}
		cases := make([]reflect.SelectCase, 0, len(st.parts)+5)
		for _, sp := range st.parts { // taken before reading, so no append is missed
			cases = append(cases, recvCase(sp.p.Changed()))
		}
		if buf == nil {
			buf = make([]byte, 0, 4096)
		}
		var err error
		buf, err = st.appendEvents(buf[:0])
		if err != nil {
			write(appendStreamError(nil, mapError(err)))
			return
		}
		if len(buf) > 0 {
			if !write(buf) {
				return
			}
			keepAlive.Reset(st.keepAlive)
			// A busy stream still notices shutdown and a reader gone.
			select {
			case <-s.streamStop:
				write([]byte("event: close\ndata: {\"reason\":\"shutting_down\"}\n\n"))
				return
			case <-gone:
				return
			default:
			}
			continue
		}
		buf = nil // an idle stream holds no batch buffer
		cases = append(cases, recvCase(groupsChanged), recvCase(keepAlive.C), recvCase(gone), recvCase(s.streamStop))
		switch i, _, _ := reflect.Select(cases); {
		case i == len(cases)-1:
			write([]byte("event: close\ndata: {\"reason\":\"shutting_down\"}\n\n"))
			return
		case i == len(cases)-2:
			return
		case i == len(cases)-3:
			if !write([]byte(": keep-alive\n\n")) {
				return
			}
			keepAlive.Reset(st.keepAlive)
		}
	}
}

// recvCase is a receive from ch for reflect.Select (a nil channel never
// fires).
func recvCase[T any](ch <-chan T) reflect.SelectCase {
	return reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)}
}

// followRebalance compares a member stream with the group: an "event:
// rebalance" when its generation moved (the stream takes the member's new
// partitions), an "event: error" and false when the member is gone.
func (s *Server) followRebalance(st *stream) ([]byte, bool) {
	g, ok := s.store.Group(st.group)
	if ok && g.Generation == st.generation {
		return nil, true
	}
	m, parts, e := s.memberPartitions(st.topic, st.group, st.member)
	if e != nil {
		return appendStreamError(nil, e), false
	}
	st.generation = m.generation
	st.setParts(s.store, parts, nil)
	b := []byte("event: rebalance\ndata: {")
	b = appendUintField(b, "generation", st.generation)
	ids := make([]int32, len(parts))
	for i, p := range parts {
		ids[i] = p.ID
	}
	b = appendAssignments(b, st.topic, ids)
	return append(b, "}\n\n"...), true
}

// appendEvents appends the next batch of events: up to
// streamBatchMessages messages, about streamBatchBytes, taken from the
// partitions in turn.
func (st *stream) appendEvents(b []byte) ([]byte, error) {
	count := 0
	for _, sp := range st.parts {
		left := streamBatchMessages - count
		if left <= 0 || len(b) >= streamBatchBytes {
			break
		}
		next, err := scanMessages(sp.p, sp.next, streamBatchBytes-len(b), func(m record.Message) (bool, bool) {
			sp.next, sp.sent = m.Offset+1, true
			b = st.appendEvent(b, sp.p.ID, m)
			count++
			return true, count < streamBatchMessages && len(b) < streamBatchBytes
		})
		if err != nil {
			return b, err
		}
		sp.next = max(sp.next, next) // past records skipped (expired, compacted away)
	}
	return b, nil
}

func (st *stream) appendEvent(b []byte, partition int32, m record.Message) []byte {
	b = append(b, "id: "...)
	if st.member == "" {
		b = strconv.AppendUint(b, m.Offset, 10)
	} else {
		first := true
		for _, sp := range st.parts {
			if !sp.sent {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = strconv.AppendInt(b, int64(sp.p.ID), 10)
			b = append(b, ':')
			b = strconv.AppendUint(b, sp.next-1, 10)
		}
	}
	b = append(b, "\ndata: "...)
	b = appendMessage(b, partition, m, st.b64)
	return append(b, '\n', '\n')
}

func appendStreamError(b []byte, e *apiError) []byte {
	b = append(b, "event: error\ndata: {"...)
	b = appendBoolField(b, "ok", false)
	b = appendStringField(b, "error", e.code)
	b = appendStringField(b, "message", e.message)
	return append(b, "}\n\n"...)
}

// closeStreams ends every open stream (each sends "event: close") and
// waits for them, bounded by ctx.
func (s *Server) closeStreams(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.streamStop) })
	done := make(chan struct{})
	go func() { s.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package httpfront

import (
	"encoding/json"
	"math"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine"
)

// deleteBefore serves POST /broker/delete-before
// {"topic","partition","before_offset"} → {"ok":true,"deleted_count":N,"freed_bytes":B}.
// The log start moves up to before_offset (never down, never past the log
// end); deleted_count is how many offsets stopped being readable, and
// freed_bytes the size of the whole segments below the new start, whose
// files are deleted just after the answer (gently, off the write path).
func (s *Server) deleteBefore(ctx *fasthttp.RequestCtx) {
	var req struct {
		Topic     *string         `json:"topic"`
		Partition json.RawMessage `json:"partition"`
		Before    json.RawMessage `json:"before_offset"`
	}
	if e := decodeJSONObject(ctx.PostBody(), &req); e != nil {
		writeError(ctx, e)
		return
	}
	if e := missingFields(map[string]bool{"topic": req.Topic != nil, "partition": req.Partition != nil, "before_offset": req.Before != nil}); e != nil {
		writeError(ctx, e)
		return
	}
	if !engine.ValidTopicName(*req.Topic) {
		writeError(ctx, mapError(engine.ErrInvalidTopic))
		return
	}
	p, ok := jsonUint(req.Partition)
	if !ok || p > math.MaxInt32 {
		writeError(ctx, errBadRequest("invalid_partition", "partition must be a non-negative integer"))
		return
	}
	before, ok := jsonUint(req.Before)
	if !ok {
		writeError(ctx, errBadRequest("invalid_offset", "before_offset must be a non-negative 64-bit integer"))
		return
	}
	if _, e := s.existingPartition(*req.Topic, p); e != nil {
		writeError(ctx, e)
		return
	}
	res, e := s.proposeAndWait(ctx, &engine.Command{Kind: engine.CmdDeleteBefore, Topic: *req.Topic, Partition: int32(p), Offset: before, Reason: engine.TrimByClient})
	if e != nil {
		writeError(ctx, e)
		return
	}
	b := append(make([]byte, 0, 96), '{')
	b = appendBoolField(b, "ok", true)
	b = appendUintField(b, "deleted_count", res.Deleted)
	b = appendIntField(b, "freed_bytes", res.FreedBytes)
	b = appendUintField(b, "log_start_offset", res.Offset)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// retention serves POST /broker/retention
// {"topic":"events"|"*","partition"?,"ttl_ms"?,"max_bytes"?} →
// {"ok":true,"ttl_applied":bool,"size_applied":bool}. An absent field
// leaves that bound as it was; 0 clears it. "*" sets every topic's
// partitions and the policy of topics created later.
func (s *Server) retention(ctx *fasthttp.RequestCtx) {
	cmd, e := retentionCommand(ctx.PostBody())
	if e == nil {
		e = s.retentionTargetExists(cmd)
	}
	if e != nil {
		writeError(ctx, e)
		return
	}
	if _, e := s.proposeAndWait(ctx, cmd); e != nil {
		writeError(ctx, e)
		return
	}
	b := append(make([]byte, 0, 64), '{')
	b = appendBoolField(b, "ok", true)
	b = appendBoolField(b, "ttl_applied", cmd.TTLMs >= 0)
	b = appendBoolField(b, "size_applied", cmd.MaxBytes >= 0)
	if cmd.Cleanup > 0 {
		b = appendBoolField(b, "cleanup_applied", true)
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// retentionCommand parses a retention body into its command (Partition
// -1: all; TTLMs, MaxBytes -1: unchanged), without looking at the store.
func retentionCommand(body []byte) (*engine.Command, *apiError) {
	var req struct {
		Topic     *string         `json:"topic"`
		Partition json.RawMessage `json:"partition"`
		TTLMs     json.RawMessage `json:"ttl_ms"`
		MaxBytes  json.RawMessage `json:"max_bytes"`
		Cleanup   *string         `json:"cleanup"`
	}
	if e := decodeJSONObject(body, &req); e != nil {
		return nil, e
	}
	if req.Topic == nil {
		return nil, errBadRequest("missing_fields", "the body is missing: topic")
	}
	if req.TTLMs == nil && req.MaxBytes == nil && req.Cleanup == nil {
		return nil, errBadRequest("missing_fields", "the body needs ttl_ms, max_bytes (0 clears that bound) or cleanup")
	}
	cmd := &engine.Command{Kind: engine.CmdRetention, Topic: *req.Topic, Partition: -1, TTLMs: -1, MaxBytes: -1}
	if req.Cleanup != nil {
		var e *apiError
		if cmd.Cleanup, e = parseCleanup(*req.Cleanup); e != nil {
			return nil, e
		}
	}
	all := *req.Topic == engine.AllTopics
	if !all && !engine.ValidTopicName(*req.Topic) {
		return nil, mapError(engine.ErrInvalidTopic)
	}
	if req.Partition != nil && string(req.Partition) != "null" {
		p, ok := jsonUint(req.Partition)
		if !ok || p > math.MaxInt32 {
			return nil, errBadRequest("invalid_partition", "partition must be a non-negative integer (omit it for every partition)")
		}
		if all {
			return nil, errBadRequest("invalid_partition", `a partition cannot be named with "topic":"*"`)
		}
		cmd.Partition = int32(p)
	}
	for _, f := range []struct {
		raw  json.RawMessage
		dst  *int64
		name string
	}{{req.TTLMs, &cmd.TTLMs, "ttl_ms"}, {req.MaxBytes, &cmd.MaxBytes, "max_bytes"}} {
		if f.raw == nil {
			continue
		}
		v, ok := jsonUint(f.raw)
		if !ok || v > math.MaxInt64 {
			return nil, errBadRequest("invalid_"+f.name, f.name+" must be a non-negative 64-bit integer (0 clears it)")
		}
		*f.dst = int64(v)
	}
	return cmd, nil
}

// retentionTargetExists refuses a policy for a topic or partition that
// does not exist (404) before anything is proposed.
func (s *Server) retentionTargetExists(cmd *engine.Command) *apiError {
	switch {
	case cmd.Topic == engine.AllTopics:
		return nil
	case cmd.Partition >= 0:
		_, e := s.existingPartition(cmd.Topic, uint64(cmd.Partition))
		return e
	}
	if _, ok := s.store.Topic(cmd.Topic); !ok {
		return mapError(engine.ErrUnknownTopic)
	}
	return nil
}

// offsets serves GET /broker/offsets/{topic}/{partition}[?timestamp_ms=T]:
// the partition's log start and end offsets and, with timestamp_ms, the
// first offset whose record's timestamp is at or after T (Kafka's
// offsets-for-times). When no record is that recent, "found" is false and
// "offset" is the log end offset, where a consumer waiting for newer
// records starts.
func (s *Server) offsets(ctx *fasthttp.RequestCtx, topic, pstr string) {
	if e := s.linearizable(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	part, e := s.consumeTarget(topic, "-", pstr)
	if e != nil {
		writeError(ctx, e)
		return
	}
	ts, hasTs, e := queryInt(ctx.QueryArgs(), "timestamp_ms")
	if e != nil {
		writeError(ctx, e)
		return
	}
	b := append(make([]byte, 0, 160), '{')
	b = appendBoolField(b, "ok", true)
	b = appendStringField(b, "topic", topic)
	b = appendIntField(b, "partition", int64(part.ID))
	b = appendUintField(b, "log_start_offset", part.Log.StartOffset())
	b = appendUintField(b, "log_end_offset", part.Log.NextOffset())
	if hasTs {
		off, found, err := s.offsetForTime(part, ts)
		if err != nil {
			writeError(ctx, mapError(err))
			return
		}
		b = appendIntField(b, "timestamp_ms", ts)
		b = appendUintField(b, "offset", off)
		b = appendBoolField(b, "found", found)
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// offsetForTime is the first offset at or after tsMs that a reader may be
// served (a record past its TTL is not), or the log end offset.
func (s *Server) offsetForTime(part *engine.Partition, tsMs int64) (uint64, bool, error) {
	if cut, ok := part.ExpiredBefore(time.Now().UnixMilli()); ok {
		tsMs = max(tsMs, cut)
	}
	off, found, err := part.Log.OffsetForTime(tsMs)
	if err != nil || !found {
		return part.Log.NextOffset(), false, err
	}
	return off, true, nil
}

// missingFields is the 400 for required fields absent from a body: present
// maps each required field to whether the body has it (named in a fixed
// order).
func missingFields(present map[string]bool) *apiError {
	var missing []string
	for _, name := range []string{"topic", "group", "partition", "offset", "before_offset", "member_id", "generation"} {
		if ok, asked := present[name]; asked && !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return errBadRequest("missing_fields", "the body is missing: "+strings.Join(missing, ", "))
}

// appendRetention appends a partition's policy as "retention":{...}.
func appendRetention(b []byte, pol engine.RetentionPolicy) []byte {
	b = append(appendKey(b, "retention"), '{')
	b = appendIntField(b, "ttl_ms", pol.TTLMs)
	b = appendIntField(b, "max_bytes", pol.MaxBytes)
	cleanup := "delete"
	if pol.Cleanup == engine.CleanupCompact {
		cleanup = "compact"
	}
	b = appendStringField(b, "cleanup", cleanup)
	return append(b, '}')
}

// parseCleanup reads a cleanup policy as CmdRetention carries it (the
// policy + 1).
func parseCleanup(v string) (uint8, *apiError) {
	switch v {
	case "delete":
		return engine.CleanupDelete + 1, nil
	case "compact":
		return engine.CleanupCompact + 1, nil
	}
	return 0, errBadRequest("invalid_cleanup", `cleanup must be "delete" or "compact"`)
}

package httpfront

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/replication"
)

// topics serves GET (list) and POST (create) /broker/topics.
func (s *Server) topics(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() { // GET or HEAD
		s.listTopics(ctx)
		return
	}
	var req struct {
		Name       *string         `json:"name"`
		Partitions json.RawMessage `json:"partitions"`
		Cleanup    *string         `json:"cleanup"`
	}
	if e := decodeJSONObject(ctx.PostBody(), &req); e != nil {
		writeError(ctx, e)
		return
	}
	if req.Name == nil {
		writeError(ctx, errBadRequest("missing_fields", "the body needs \"name\""))
		return
	}
	if !engine.ValidTopicName(*req.Name) {
		writeError(ctx, mapError(engine.ErrInvalidTopic))
		return
	}
	partitions := uint64(s.cfg.DefaultPartitions)
	if req.Partitions != nil {
		v, ok := jsonUint(req.Partitions)
		if !ok || v < 1 || v > uint64(s.cfg.MaxPartitions) {
			writeError(ctx, errBadRequest("invalid_partitions", fmt.Sprintf("partitions must be an integer from 1 to %d", s.cfg.MaxPartitions)))
			return
		}
		partitions = v
	}
	if _, exists := s.store.Topic(*req.Name); !exists {
		deadline, e := s.deadlineFrom(ctx)
		if e == nil {
			e = s.roomForTopic(int(partitions), deadline)
		}
		if e != nil {
			writeError(ctx, e)
			return
		}
	}
	var cleanup uint8
	if req.Cleanup != nil {
		var e *apiError
		if cleanup, e = parseCleanup(*req.Cleanup); e != nil {
			writeError(ctx, e)
			return
		}
	}
	if t, ok := s.store.Topic(*req.Name); ok && cleanup > 0 && t.Partitions[0].Retention().Cleanup != cleanup-1 {
		// Creating is not changing: an existing topic keeps its policy.
		writeError(ctx, &apiError{status: 409, code: "topic_exists", message: "the topic exists with another cleanup policy (change it with POST /broker/retention)"})
		return
	}
	cmd := &engine.Command{Kind: engine.CmdCreateTopic, Topic: *req.Name, Partitions: int(partitions)}
	res, e := s.proposeAndWait(ctx, cmd)
	if e == nil && cleanup > 0 && res.Created {
		// The new topic's cleanup policy is a second command (a retry of
		// the whole request, which finds the topic, sets the same).
		_, e = s.proposeAndWait(ctx, &engine.Command{Kind: engine.CmdRetention, Topic: *req.Name, Partition: -1, TTLMs: -1, MaxBytes: -1, Cleanup: cleanup})
	}
	if e != nil {
		writeError(ctx, e)
		return
	}
	b := append(make([]byte, 0, 128), '{')
	b = appendBoolField(b, "ok", true)
	b = appendStringField(b, "topic", *req.Name)
	b = appendIntField(b, "partitions", int64(res.Count))
	b = appendBoolField(b, "created", res.Created)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// roomForTopic refuses, before anything is proposed, a new topic of n
// partitions that the node-wide limits do not leave room for (apply checks
// the same from the limits in the entry, for a create racing this one),
// and paces new topics to TopicCreateRate: a create over the rate waits
// for its turn, and is refused with 429 only when that turn comes after
// deadline. Scripts that create many topics run unchanged, only slower.
func (s *Server) roomForTopic(n int, deadline time.Time) *apiError {
	topics, partitions, _ := s.store.Counts()
	switch {
	case topics >= s.cfg.Limits.TopicsMax:
		return mapError(engine.ErrTooManyTopics)
	case partitions+n > s.cfg.Limits.PartitionsTotalMax:
		return mapError(engine.ErrTooManyPartitions)
	}
	if s.creates == nil {
		return nil
	}
	now := time.Now()
	wait := s.creates.reserve(now, deadline.Sub(now))
	if wait < 0 {
		s.metrics.createsLimited.Add(1)
		return &apiError{status: 429, code: "rate_limited", message: fmt.Sprintf("new topics are paced to %g per second on this node (--topic-create-rate), and this one's turn comes after its timeout", s.cfg.TopicCreateRate),
			retryAfter: int((-wait + time.Second - 1) / time.Second)}
	}
	if wait > 0 {
		s.metrics.createsPaced.Add(1)
		time.Sleep(wait)
	}
	return nil
}

// proposeAndWait proposes cmd with the request's timeout_ms and maps every
// failure (including a command error) to an API error.
func (s *Server) proposeAndWait(ctx *fasthttp.RequestCtx, cmd *engine.Command) (engine.Result, *apiError) {
	out, e := s.proposeOutcome(ctx, cmd)
	if e == nil && out.Err != nil {
		e = mapError(out.Err)
	}
	return out.Result, e
}

// proposeOutcome proposes cmd with the request's timeout_ms and maps a
// failure to propose or to commit to an API error; a command error stays
// in the outcome, for the caller to map.
func (s *Server) proposeOutcome(ctx *fasthttp.RequestCtx, cmd *engine.Command) (replication.Outcome, *apiError) {
	deadline, e := s.deadlineFrom(ctx)
	if e != nil {
		return replication.Outcome{}, e
	}
	out, err := s.node.Propose(cmd, deadline)
	switch {
	case err == nil:
		return out, nil
	case errors.Is(err, replication.ErrTimeout) && s.clustered():
		return out, commitTimeout
	case errors.Is(err, replication.ErrNotLeader):
		return out, s.notLeaderError(ctx)
	}
	return out, mapError(err)
}

func (s *Server) listTopics(ctx *fasthttp.RequestCtx) {
	b := append(make([]byte, 0, 1024), '{')
	b = appendBoolField(b, "ok", true)
	b = append(appendKey(b, "topics"), '[')
	for i, t := range s.store.Topics() {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = appendStringField(b, "name", t.Name)
		b = appendIntField(b, "partitions", int64(len(t.Partitions)))
		b = append(b, '}')
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, ']', '}'))
}

func (s *Server) describeTopic(ctx *fasthttp.RequestCtx, name string) {
	if !engine.ValidTopicName(name) {
		writeError(ctx, mapError(engine.ErrInvalidTopic))
		return
	}
	t, ok := s.store.Topic(name)
	if !ok {
		writeError(ctx, mapError(engine.ErrUnknownTopic))
		return
	}
	b := append(make([]byte, 0, 1024), '{')
	b = appendBoolField(b, "ok", true)
	b = appendStringField(b, "topic", t.Name)
	b = appendIntField(b, "partitions", int64(len(t.Partitions)))
	b = appendIntField(b, "created_ms", t.CreatedMs)
	b = append(appendKey(b, "partition_info"), '[')
	for i, p := range t.Partitions {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = appendIntField(b, "partition", int64(p.ID))
		b = appendUintField(b, "log_start_offset", p.Log.StartOffset())
		b = appendUintField(b, "log_end_offset", p.Log.NextOffset())
		b = appendIntField(b, "bytes", p.Log.Bytes())
		b = appendIntField(b, "segments", int64(len(p.Log.Segments())))
		b = appendRetention(b, p.Retention())
		b = append(b, '}')
	}
	b = append(b, ']')
	// The topic's policy when every partition has the same one; else
	// null, and each partition's says.
	pol, same := t.Partitions[0].Retention(), true
	for _, p := range t.Partitions[1:] {
		same = same && p.Retention() == pol
	}
	if same {
		b = appendRetention(b, pol)
	} else {
		b = appendNullField(b, "retention")
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// commit serves POST /broker/commit.
func (s *Server) commit(ctx *fasthttp.RequestCtx) {
	var req struct {
		Topic     *string         `json:"topic"`
		Group     *string         `json:"group"`
		Partition json.RawMessage `json:"partition"`
		Offset    json.RawMessage `json:"offset"`
		// A member's commit (groups.go): fenced by its generation.
		MemberID   *string         `json:"member_id"`
		Generation json.RawMessage `json:"generation"`
	}
	if e := decodeJSONObject(ctx.PostBody(), &req); e != nil {
		writeError(ctx, e)
		return
	}
	if e := missingFields(map[string]bool{"topic": req.Topic != nil, "group": req.Group != nil, "partition": req.Partition != nil, "offset": req.Offset != nil}); e != nil {
		writeError(ctx, e)
		return
	}
	cmd, e := s.commitCommand(*req.Topic, *req.Group, req.Partition, req.Offset)
	if e == nil {
		cmd, e = memberCommitCommand(cmd, req.MemberID, req.Generation)
	}
	if e != nil {
		writeError(ctx, e)
		return
	}
	res, e := s.proposeAndWait(ctx, cmd)
	if e != nil {
		writeError(ctx, withGeneration(e, res))
		return
	}
	s.metrics.commits.Add(1)
	b := append(make([]byte, 0, 64), '{')
	b = appendBoolField(b, "ok", true)
	if res.Ignored {
		b = appendBoolField(b, "ignored", true)
		b = appendUintField(b, "committed_offset", res.Offset)
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

func (s *Server) commitCommand(topic, group string, partition, offset json.RawMessage) (*engine.Command, *apiError) {
	if !engine.ValidTopicName(topic) {
		return nil, mapError(engine.ErrInvalidTopic)
	}
	if !engine.ValidGroupName(group) {
		return nil, mapError(engine.ErrInvalidGroup)
	}
	p, ok := jsonUint(partition)
	if !ok || p > math.MaxInt32 {
		return nil, errBadRequest("invalid_partition", "partition must be a non-negative integer")
	}
	off, ok := jsonUint(offset)
	if !ok {
		return nil, errBadRequest("invalid_offset", "offset must be a non-negative 64-bit integer")
	}
	if _, e := s.existingPartition(topic, p); e != nil {
		return nil, e
	}
	if _, ok := s.store.Committed(topic, group, int32(p)); !ok {
		if _, _, offsets := s.store.Counts(); offsets >= s.cfg.Limits.OffsetsMax {
			return nil, mapError(engine.ErrTooManyOffsets)
		}
	}
	return &engine.Command{Kind: engine.CmdCommit, Topic: topic, Group: group, Partition: int32(p), Offset: off}, nil
}

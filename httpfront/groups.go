package httpfront

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"

	"github.com/valyala/fasthttp"

	"keel/engine"
)

// Consumer group membership (api.md "Consumer group membership"):
//
//	POST /broker/groups/{g}/join       {"topic","member_id"?,"session_timeout_ms"?,"strategy"?}
//	POST /broker/groups/{g}/heartbeat  {"member_id","generation"}
//	POST /broker/groups/{g}/leave      {"member_id"}
//	GET  /broker/groups                every group with members or commits
//	GET  /broker/groups/{g}            members, assignments, offsets, lag
//
// Join and leave are commands in the log (engine/group.go). A heartbeat is
// answered by the leader from applied state and refreshes the member's
// session there (SessionTracker); it writes nothing.

// SessionTracker keeps the time of each member's last heartbeat on the
// leader (housekeeping.Sweeper), which expires the silent ones.
type SessionTracker interface {
	Heartbeat(group, member string)
}

// memberIDBytes is the random part of a member id the server chooses.
const memberIDBytes = 8

func (s *Server) heartbeatSeen(group, member string) {
	if s.cfg.Sessions != nil {
		s.cfg.Sessions.Heartbeat(group, member)
	}
}

// groupAction serves POST /broker/groups/{g}/{join|heartbeat|leave}.
func (s *Server) groupAction(ctx *fasthttp.RequestCtx, group, action string) {
	if !engine.ValidGroupName(group) {
		writeError(ctx, mapError(engine.ErrInvalidGroup))
		return
	}
	var req struct {
		Topic      *string         `json:"topic"`
		MemberID   *string         `json:"member_id"`
		Session    json.RawMessage `json:"session_timeout_ms"`
		Strategy   *string         `json:"strategy"`
		Generation json.RawMessage `json:"generation"`
	}
	if e := decodeJSONObject(ctx.PostBody(), &req); e != nil {
		writeError(ctx, e)
		return
	}
	switch action {
	case "join":
		s.groupJoin(ctx, group, req.Topic, req.MemberID, req.Session, req.Strategy)
	case "heartbeat":
		if e := missingFields(map[string]bool{"member_id": req.MemberID != nil, "generation": req.Generation != nil}); e != nil {
			writeError(ctx, e)
			return
		}
		gen, ok := jsonUint(req.Generation)
		if !ok {
			writeError(ctx, errBadRequest("invalid_generation", "generation must be a non-negative integer"))
			return
		}
		s.groupHeartbeat(ctx, group, *req.MemberID, gen)
	case "leave":
		if e := missingFields(map[string]bool{"member_id": req.MemberID != nil}); e != nil {
			writeError(ctx, e)
			return
		}
		res, e := s.proposeAndWait(ctx, &engine.Command{Kind: engine.CmdGroupLeave, Group: group, MemberID: *req.MemberID})
		if e != nil {
			writeError(ctx, e)
			return
		}
		b := append(make([]byte, 0, 64), '{')
		b = appendBoolField(b, "ok", true)
		b = appendUintField(b, "generation", res.Generation)
		b = appendIntField(b, "members", int64(res.Count))
		writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
	}
}

func (s *Server) groupJoin(ctx *fasthttp.RequestCtx, group string, topic, memberID *string, session json.RawMessage, strategy *string) {
	cmd, e := joinCommand(group, topic, memberID, session, strategy)
	if e != nil {
		writeError(ctx, e)
		return
	}
	if _, ok := s.store.Topic(cmd.Topic); !ok {
		writeError(ctx, mapError(engine.ErrUnknownTopic))
		return
	}
	res, e := s.proposeAndWait(ctx, cmd)
	if e != nil {
		writeError(ctx, withGeneration(e, res))
		return
	}
	s.heartbeatSeen(group, cmd.MemberID)
	writeJSON(ctx, fasthttp.StatusOK, appendMembership(make([]byte, 0, 256), cmd.MemberID, cmd.Topic, res.Generation, res.Count, res.Strategy, res.Assigned))
}

// joinCommand validates a join's fields into a CmdGroupJoin: topic
// required; member_id chosen by the server when absent ("m-" and 16 hex
// digits); session_timeout_ms SessionTimeoutMinMs..SessionTimeoutMaxMs
// (default 10 s); strategy sticky, range or roundrobin (absent: the
// group's, else sticky).
func joinCommand(group string, topic, memberID *string, session json.RawMessage, strategy *string) (*engine.Command, *apiError) {
	if e := missingFields(map[string]bool{"topic": topic != nil}); e != nil {
		return nil, e
	}
	if !engine.ValidTopicName(*topic) {
		return nil, mapError(engine.ErrInvalidTopic)
	}
	id := ""
	if memberID != nil {
		id = *memberID
	} else {
		var r [memberIDBytes]byte
		_, _ = rand.Read(r[:]) // never fails (crypto/rand, Go 1.24+)
		id = "m-" + hex.EncodeToString(r[:])
	}
	if !engine.ValidMemberID(id) {
		return nil, mapError(engine.ErrInvalidMember)
	}
	timeout := int64(engine.SessionTimeoutDefaultMs)
	if session != nil {
		v, ok := jsonUint(session)
		if !ok || v < engine.SessionTimeoutMinMs || v > engine.SessionTimeoutMaxMs {
			return nil, mapError(engine.ErrInvalidSession)
		}
		timeout = int64(v)
	}
	var strat uint8
	if strategy != nil {
		var err error
		if strat, err = engine.ParseStrategy(*strategy); err != nil {
			return nil, errBadRequest("invalid_strategy", "strategy must be sticky, range or roundrobin")
		}
	}
	return &engine.Command{Kind: engine.CmdGroupJoin, Topic: *topic, Group: group, MemberID: id, TTLMs: timeout, Strategy: strat}, nil
}

// appendMembership is the answer to a join or heartbeat:
// {"ok":true,"member_id","generation","assignments":[{"topic","partitions"}],"members","strategy"}.
func appendMembership(b []byte, id, topic string, gen uint64, members int, strategy uint8, partitions []int32) []byte {
	b = append(b, '{')
	b = appendBoolField(b, "ok", true)
	b = appendStringField(b, "member_id", id)
	b = appendUintField(b, "generation", gen)
	b = appendAssignments(b, topic, partitions)
	b = appendIntField(b, "members", int64(members))
	b = appendStringField(b, "strategy", engine.StrategyName(strategy))
	return append(b, '}')
}

func appendAssignments(b []byte, topic string, partitions []int32) []byte {
	b = append(appendKey(b, "assignments"), '[', '{')
	b = appendStringField(b, "topic", topic)
	b = appendPartitionList(appendKey(b, "partitions"), partitions)
	return append(b, '}', ']')
}

func appendPartitionList(b []byte, partitions []int32) []byte {
	b = append(b, '[')
	for i, p := range partitions {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(p), 10)
	}
	return append(b, ']')
}

// groupHeartbeat answers the member's current assignment, or 409 when its
// generation is not the group's (it must join again).
func (s *Server) groupHeartbeat(ctx *fasthttp.RequestCtx, group, id string, gen uint64) {
	g, m, e := s.member(group, id)
	if e != nil {
		writeError(ctx, e)
		return
	}
	s.heartbeatSeen(group, id)
	if g.Generation != gen {
		writeError(ctx, &apiError{status: fasthttp.StatusConflict, code: "rebalance_in_progress",
			message: "the group moved to a new generation; join again to get the new assignment",
			extra: func(b []byte) []byte {
				b = appendUintField(b, "generation", g.Generation)
				return appendAssignments(b, m.Topic, m.Partitions)
			}})
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, appendMembership(make([]byte, 0, 256), id, m.Topic, g.Generation, len(g.Members), g.Strategy, m.Partitions))
}

// member returns group's membership and its member id, or 409
// unknown_member.
func (s *Server) member(group, id string) (*engine.ConsumerGroup, *engine.GroupMember, *apiError) {
	if !engine.ValidMemberID(id) {
		return nil, nil, mapError(engine.ErrInvalidMember)
	}
	g, ok := s.store.Group(group)
	var m *engine.GroupMember
	if ok {
		m = g.Member(id)
	}
	if m == nil {
		return nil, nil, mapError(engine.ErrUnknownMember)
	}
	return g, m, nil
}

// listGroups serves GET /broker/groups: every group with members or
// committed offsets, {"ok":true,"groups":[{"group","generation","members","strategy","topics":[...]}]}.
func (s *Server) listGroups(ctx *fasthttp.RequestCtx) {
	type summary struct {
		g      *engine.ConsumerGroup
		topics map[string]bool
	}
	byName := map[string]*summary{}
	var names []string
	add := func(name string) *summary {
		if sm, ok := byName[name]; ok {
			return sm
		}
		sm := &summary{topics: map[string]bool{}}
		byName[name] = sm
		names = append(names, name)
		return sm
	}
	for _, g := range s.store.Groups() {
		sm := add(g.Name)
		sm.g = g
		for _, m := range g.Members {
			sm.topics[m.Topic] = true
		}
	}
	for _, o := range s.store.Offsets() {
		add(o.Group).topics[o.Topic] = true
	}
	slices.Sort(names)
	b := append(make([]byte, 0, 1024), '{')
	b = appendBoolField(b, "ok", true)
	b = append(appendKey(b, "groups"), '[')
	for i, name := range names {
		if i > 0 {
			b = append(b, ',')
		}
		sm := byName[name]
		b = append(b, '{')
		b = appendStringField(b, "group", name)
		if sm.g != nil {
			b = appendUintField(b, "generation", sm.g.Generation)
			b = appendIntField(b, "members", int64(len(sm.g.Members)))
			b = appendStringField(b, "strategy", engine.StrategyName(sm.g.Strategy))
		} else {
			b = appendNullField(b, "generation")
			b = appendIntField(b, "members", 0)
			b = appendNullField(b, "strategy")
		}
		topics := make([]string, 0, len(sm.topics))
		for t := range sm.topics {
			topics = append(topics, t)
		}
		slices.Sort(topics)
		b = append(appendKey(b, "topics"), '[')
		for j, t := range topics {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONStr(b, t)
		}
		b = append(b, ']', '}')
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, ']', '}'))
}

// describeGroup serves GET /broker/groups/{g}: its members and their
// assignments, and per partition of every topic it reads or committed on:
// the committed offset, the log end offset, the lag (messages after the
// committed offset) and the owner.
func (s *Server) describeGroup(ctx *fasthttp.RequestCtx, group string) {
	if !engine.ValidGroupName(group) {
		writeError(ctx, mapError(engine.ErrInvalidGroup))
		return
	}
	g, hasMembers := s.store.Group(group)
	topics := map[string]bool{}
	if hasMembers {
		for _, m := range g.Members {
			topics[m.Topic] = true
		}
	}
	for _, o := range s.store.Offsets() {
		if o.Group == group {
			topics[o.Topic] = true
		}
	}
	if len(topics) == 0 {
		writeError(ctx, &apiError{status: fasthttp.StatusNotFound, code: "unknown_group", message: "the group has no members and no committed offsets"})
		return
	}
	b := append(make([]byte, 0, 1024), '{')
	b = appendBoolField(b, "ok", true)
	b = appendStringField(b, "group", group)
	if hasMembers {
		b = appendUintField(b, "generation", g.Generation)
		b = appendStringField(b, "strategy", engine.StrategyName(g.Strategy))
	} else {
		b = appendNullField(b, "generation")
		b = appendNullField(b, "strategy")
	}
	b = append(appendKey(b, "members"), '[')
	if hasMembers {
		for i, m := range g.Members {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			b = appendStringField(b, "member_id", m.ID)
			b = appendIntField(b, "session_timeout_ms", m.SessionTimeoutMs)
			b = appendIntField(b, "joined_ms", m.JoinedMs)
			b = appendAssignments(b, m.Topic, m.Partitions)
			b = append(b, '}')
		}
	}
	b = append(b, ']')
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	slices.Sort(names)
	b = append(appendKey(b, "partitions"), '[')
	first := true
	var totalLag uint64
	for _, name := range names {
		t, ok := s.store.Topic(name)
		if !ok {
			continue
		}
		for _, p := range t.Partitions {
			if !first {
				b = append(b, ',')
			}
			first = false
			end := p.Log.NextOffset()
			b = append(b, '{')
			b = appendStringField(b, "topic", name)
			b = appendIntField(b, "partition", int64(p.ID))
			committed, ok := s.store.Committed(name, group, p.ID)
			lag := groupLag(end, p.Log.StartOffset(), committed, ok)
			totalLag += lag
			if ok {
				b = appendUintField(b, "committed_offset", committed)
			} else {
				b = appendNullField(b, "committed_offset")
			}
			b = appendUintField(b, "log_end_offset", end)
			b = appendUintField(b, "lag", lag)
			if owner := ownerOf(g, hasMembers, name, p.ID); owner != "" {
				b = appendStringField(b, "member_id", owner)
			} else {
				b = appendNullField(b, "member_id")
			}
			b = append(b, '}')
		}
	}
	b = append(b, ']')
	b = appendUintField(b, "lag", totalLag)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// groupLag is the messages after the committed offset (the last one
// processed), or after the log start before any commit: what the group
// has yet to read.
func groupLag(end, start, committed uint64, hasCommitted bool) uint64 {
	next := start
	if hasCommitted {
		next = max(committed+1, start)
	}
	if end <= next {
		return 0
	}
	return end - next
}

func ownerOf(g *engine.ConsumerGroup, ok bool, topic string, p int32) string {
	if !ok {
		return ""
	}
	if m := g.Owner(topic, p); m != nil {
		return m.ID
	}
	return ""
}

// memberCommitCommand is a commit carrying member_id and generation: a
// CmdMemberCommit, fenced at apply.
func memberCommitCommand(cmd *engine.Command, memberID *string, generation json.RawMessage) (*engine.Command, *apiError) {
	if memberID == nil && generation == nil {
		return cmd, nil
	}
	if e := missingFields(map[string]bool{"member_id": memberID != nil, "generation": generation != nil}); e != nil {
		return nil, e
	}
	gen, ok := jsonUint(generation)
	if !ok {
		return nil, errBadRequest("invalid_generation", "generation must be a non-negative integer")
	}
	if !engine.ValidMemberID(*memberID) {
		return nil, mapError(engine.ErrInvalidMember)
	}
	cmd.Kind, cmd.MemberID, cmd.Generation = engine.CmdMemberCommit, *memberID, gen
	return cmd, nil
}

// withGeneration adds the group's current generation to a refusal that
// names one (a fenced commit, a join with another strategy), so the
// member knows where the group is.
func withGeneration(e *apiError, res engine.Result) *apiError {
	if res.Err == nil || res.Generation == 0 || e.extra != nil {
		return e
	}
	if errors.Is(res.Err, engine.ErrStaleGeneration) || errors.Is(res.Err, engine.ErrNotAssigned) || errors.Is(res.Err, engine.ErrStrategyMismatch) {
		gen := res.Generation
		e.extra = func(b []byte) []byte { return appendUintField(b, "generation", gen) }
	}
	return e
}

// groupError maps the group errors of engine (errors.go calls it).
func groupError(err error) *apiError {
	switch {
	case errors.Is(err, engine.ErrUnknownMember):
		return &apiError{status: fasthttp.StatusConflict, code: "unknown_member", message: "the group has no such member (it left, or its session expired); join again"}
	case errors.Is(err, engine.ErrStaleGeneration):
		return &apiError{status: fasthttp.StatusConflict, code: "stale_generation", message: "the group moved to a newer generation than the one given; join again (or heartbeat) and commit with the new generation"}
	case errors.Is(err, engine.ErrNotAssigned):
		return &apiError{status: fasthttp.StatusConflict, code: "not_assigned", message: "the partition is not the member's in this generation"}
	case errors.Is(err, engine.ErrStrategyMismatch):
		return &apiError{status: fasthttp.StatusConflict, code: "strategy_mismatch", message: "the group's members use another assignment strategy; join with it, or without one"}
	case errors.Is(err, engine.ErrTooManyMembers):
		return &apiError{status: fasthttp.StatusConflict, code: "too_many_members", message: "the group holds its limit of members (1000)"}
	case errors.Is(err, engine.ErrTooManyGroups):
		return &apiError{status: fasthttp.StatusConflict, code: "too_many_groups", message: "the node holds its limit of groups with members (10000)"}
	case errors.Is(err, engine.ErrInvalidMember):
		return errBadRequest("invalid_member", "member_id must be 1-249 printable characters")
	case errors.Is(err, engine.ErrInvalidSession):
		return errBadRequest("invalid_session_timeout", "session_timeout_ms must be an integer from 100 to 3600000")
	}
	return nil
}

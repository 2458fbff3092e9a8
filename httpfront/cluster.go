package httpfront

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"keel/replication"
)

// In a cluster (api.md, "Cluster (HA)"):
//   - a write on a follower is redirected to the leader (307, Location,
//     Retry-After: 1, and the body api.md gives); while no leader is known
//     it waits, bounded by its timeout, then 503 no_leader;
//   - a consume on a follower is redirected too, unless it asks for
//     ?stale=1 (the node's own applied data, accepted everywhere);
//   - a write whose timeout passes before commit is 503 commit_timeout,
//     never 200: it may still commit, and a retry with the same
//     idempotency key returns its offset if it did.

// clustered reports whether the node is a member of a group of several.
func (s *Server) clustered() bool { return s.node.HA() }

// leaderPollInterval is how often a request waiting for a leader looks
// again. Elections take 1 to 2 s; a few milliseconds of extra wait cost
// nothing next to that.
const leaderPollInterval = 5 * time.Millisecond

// toLeader decides where a data request is served in a cluster: here
// (nil), or a redirect to the leader, or 503 no_leader once the request's
// deadline passes with no leader known. write says whether the request
// changes state (and must reach the leader); reads get here only when they
// are not stale reads.
func (s *Server) toLeader(ctx *fasthttp.RequestCtx) *apiError {
	deadline, e := s.deadlineFrom(ctx)
	if e != nil {
		deadline = requestStart(ctx).Add(s.cfg.DefaultTimeout) // the handler reports the bad parameter
	}
	for {
		st := s.node.Status()
		if st.Role == "removed" {
			return &apiError{status: 503, code: "not_member", message: "this node is not a member of the cluster (it was removed, or is not added yet); send requests to the cluster's members", retryAfter: 1}
		}
		if st.Role == "leader" || st.Lead == s.node.ID() {
			return nil // here (a faulted leader answers with its fault)
		}
		if e := s.redirectToLeader(ctx, st); e != nil {
			return e
		}
		if !time.Now().Before(deadline) {
			return &apiError{status: 503, code: "no_leader", message: "no leader is known (an election is under way, or this node cannot reach a majority); retry shortly", retryAfter: 1}
		}
		time.Sleep(min(leaderPollInterval, time.Until(deadline)))
	}
}

// redirectToLeader is the 307 to the leader another node is known to be,
// or nil. A leader whose stream to this node closed (its process died) is
// not worth a redirect: the caller waits for the election that replaces it.
func (s *Server) redirectToLeader(ctx *fasthttp.RequestCtx, st replication.Status) *apiError {
	if st.Lead == 0 || st.Lead == s.node.ID() || st.Role == "leader" || !s.node.Reachable(st.Lead) {
		return nil
	}
	if m, ok := s.node.Member(st.Lead); ok {
		return s.redirect(ctx, m)
	}
	return nil
}

// redirect answers 307 to the same path and query on the leader m.
func (s *Server) redirect(ctx *fasthttp.RequestCtx, m replication.Member) *apiError {
	location := m.HTTPURL + string(ctx.RequestURI())
	ctx.Response.Header.Set("Location", location)
	return &apiError{status: fasthttp.StatusTemporaryRedirect, code: "redirect_to_leader",
		message: "this node is a follower; the leader takes writes and linearizable reads", retryAfter: 1,
		extra: func(b []byte) []byte {
			b = appendStringField(b, "leader_url", m.HTTPURL)
			b = appendIntField(b, "retry_after", 1)
			b = append(appendKey(b, "redirect"), '{')
			b = appendIntField(b, "status", fasthttp.StatusTemporaryRedirect)
			b = appendStringField(b, "location", location)
			return append(b, '}')
		}}
}

// needsLeader reports whether request r must be served by the leader: every
// write, and every consume that is not a stale read.
func needsLeader(ctx *fasthttp.RequestCtx, r *route) bool {
	if isWrite(ctx) {
		return r.post > 0
	}
	return (r == &routeConsume || r == &routeOffsets || r == &routeKV || r == &routeKVList || r == &routeMemberRead ||
		r == &routeStream || r == &routeMemberStream || r == &routeGroup || r == &routeGroups) && string(ctx.QueryArgs().Peek("stale")) != "1"
}

// notLeaderError is the answer to a proposal this node refused because it
// no longer leads: a redirect when the leader is known, else no_leader.
func (s *Server) notLeaderError(ctx *fasthttp.RequestCtx) *apiError {
	if e := s.redirectToLeader(ctx, s.node.Status()); e != nil {
		return e
	}
	return &apiError{status: 503, code: "no_leader", message: "no leader is known (an election is under way); retry shortly", retryAfter: 1}
}

// commitTimeout is a cluster write whose deadline passed before commit.
var commitTimeout = &apiError{status: 503, code: "commit_timeout",
	message: "the write was not committed by a majority before its timeout; it may still commit (retry with the same idempotency key to learn its offset)", retryAfter: 1}

// roleCode is /metrics_ha's role number (api.md).
func roleCode(role string) int {
	switch role {
	case "leader":
		return 0
	case "follower":
		return 1
	case "learner":
		return 3
	}
	return 2 // candidate, pre-candidate
}

// metricsHA is /metrics_ha: plain lines for HA tooling (api.md); on a
// single node "# HA disabled".
func (s *Server) metricsHA(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; version=0.0.4")
	if !s.clustered() {
		ctx.SetBodyString("# HA disabled\n")
		return
	}
	st := s.node.Status()
	b := make([]byte, 0, 1024)
	line := func(name string, v uint64) {
		b = append(b, name...)
		b = append(b, ' ')
		b = strconv.AppendUint(b, v, 10)
		b = append(b, '\n')
	}
	state := uint64(0)
	if st.Ready {
		state = 1
	}
	line("ramforge_ha_role", uint64(roleCode(st.Role)))
	line("ramforge_ha_state", state)
	line("ramforge_ha_term", st.Term)
	line("ramforge_ha_epoch", st.ConfIndex)
	line("ramforge_ha_joint_active", boolNum(st.JointActive))
	line("ramforge_ha_fresh_quorum", boolNum(st.FreshQuorum))
	line("ramforge_ha_commit_index", st.Commit)
	line("ramforge_ha_applied_index", st.Applied)
	for _, f := range st.Followers {
		m, _ := s.node.Member(f.ID)
		b = append(b, `ramforge_ha_follower_lag_entries{node="`...)
		b = append(b, m.Name...)
		b = append(b, `"} `...)
		b = strconv.AppendUint(b, st.Commit-min(st.Commit, f.Match), 10)
		b = append(b, '\n')
	}
	ctx.SetBody(b)
}

func boolNum(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// membership is GET /ha/membership, answered by every node from its own
// view (api.md). The masks have bit i set for the i-th node of the
// membership's nodes list.
func (s *Server) membership(ctx *fasthttp.RequestCtx) {
	if !s.clustered() {
		writeError(ctx, &apiError{status: 400, code: "ha_disabled", message: "this node runs alone (cluster mode is off)"})
		return
	}
	st := s.node.Status()
	members := s.node.Members()
	var votersMask, learnersMask uint64
	for i, m := range members {
		if st.IsVoter(m.ID) {
			votersMask |= 1 << i
		}
		if st.IsLearner(m.ID) {
			learnersMask |= 1 << i
		}
	}
	b := append(make([]byte, 0, 512), '{')
	b = appendBoolField(b, "ok", true)
	b = append(appendKey(b, "membership"), '{')
	b = appendUintField(b, "epoch", st.ConfIndex)
	b = appendBoolField(b, "joint_active", st.JointActive)
	b = appendIntField(b, "node_count", int64(len(members)))
	b = appendUintField(b, "voters_new_mask", votersMask)
	b = appendUintField(b, "learners_mask", learnersMask)
	if m, ok := s.node.Member(st.Lead); ok {
		b = appendStringField(b, "leader", m.Name) // (beyond) this node's view
	}
	b = append(appendKey(b, "nodes"), '[')
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = appendStringField(b, "node_id", m.Name)
		b = appendStringField(b, "advertise_addr", m.RaftAddr)
		b = appendStringField(b, "http_addr", m.HTTPURL)
		b = appendIntField(b, "priority", int64(m.Priority))
		b = appendBoolField(b, "is_voter", st.IsVoter(m.ID))
		b = appendBoolField(b, "is_learner", st.IsLearner(m.ID))
		b = append(b, '}')
	}
	b = append(b, ']', '}', '}')
	writeJSON(ctx, fasthttp.StatusOK, b)
}

// linearizable makes a read on the leader linearizable (ReadIndex, see
// replication.LinearizableRead): nothing acknowledged before the request
// arrived is missing from what it reads. A stale read (stale=1) and a
// single node skip it. A leader that cannot confirm its leadership
// answers 503 no_quorum; one that stepped down sends the read on.
func (s *Server) linearizable(ctx *fasthttp.RequestCtx) *apiError {
	if !s.clustered() || string(ctx.QueryArgs().Peek("stale")) == "1" {
		return nil
	}
	deadline, e := s.deadlineFrom(ctx)
	if e != nil {
		return e
	}
	switch err := s.node.LinearizableRead(deadline); {
	case err == nil:
		return nil
	case errors.Is(err, replication.ErrNotLeader):
		return s.notLeaderError(ctx)
	case errors.Is(err, replication.ErrNoQuorum):
		return &apiError{status: 503, code: "no_quorum", message: "this leader could not confirm with a majority that it still leads; retry shortly (another node may lead)", retryAfter: 1}
	default:
		return mapError(err)
	}
}

// changeMembership serves POST /ha/membership/add|promote|remove (api.md):
// a learner joins with {"node_id","advertise_addr","http_addr","priority"},
// is promoted with {"node_id"}, a member is removed with {"node_id"}. Each
// is a configuration change of the log, answered once applied. Admin scope.
func (s *Server) changeMembership(ctx *fasthttp.RequestCtx, op string) {
	if !s.clustered() {
		writeError(ctx, &apiError{status: 400, code: "ha_disabled", message: "this node runs alone (cluster mode is off)"})
		return
	}
	var req struct {
		NodeID        *string `json:"node_id"`
		AdvertiseAddr string  `json:"advertise_addr"`
		HTTPAddr      string  `json:"http_addr"`
		Priority      int     `json:"priority"`
	}
	if e := decodeJSONObject(ctx.PostBody(), &req); e != nil {
		writeError(ctx, e)
		return
	}
	if req.NodeID == nil || !validNodeID(*req.NodeID) {
		writeError(ctx, errBadRequest("invalid_member", "node_id is required: 1 to 64 characters of [A-Za-z0-9._-]"))
		return
	}
	deadline, e := s.deadlineFrom(ctx)
	if e != nil {
		writeError(ctx, e)
		return
	}
	var index uint64
	var err error
	switch op {
	case "add":
		_, portStr, err := net.SplitHostPort(req.AdvertiseAddr)
		if port, perr := strconv.Atoi(portStr); err != nil || perr != nil || port < 1 || port > 65534 {
			writeError(ctx, errBadRequest("invalid_member", "advertise_addr must be host:port (the new node's raft port, 1 to 65534)"))
			return
		}
		for _, m := range s.node.Members() {
			if m.RaftAddr == req.AdvertiseAddr {
				writeError(ctx, &apiError{status: 409, code: "member_exists", message: "member " + m.Name + " has that advertise_addr"})
				return
			}
		}
		if req.HTTPAddr == "" {
			host, port, _ := net.SplitHostPort(req.AdvertiseAddr)
			p, _ := strconv.Atoi(port)
			req.HTTPAddr = "http://" + net.JoinHostPort(host, strconv.Itoa(p+1))
		}
		if u, err := url.Parse(req.HTTPAddr); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			writeError(ctx, errBadRequest("invalid_member", "http_addr must be an http:// or https:// URL"))
			return
		}
		index, err = s.node.AddLearner(replication.Member{Name: *req.NodeID, RaftAddr: req.AdvertiseAddr, HTTPURL: req.HTTPAddr, Priority: req.Priority}, deadline)
	case "promote":
		index, err = s.node.Promote(*req.NodeID, deadline)
	case "remove":
		index, err = s.node.RemoveMember(*req.NodeID, deadline)
	}
	if err != nil {
		writeError(ctx, s.membershipError(ctx, err))
		return
	}
	b := append(make([]byte, 0, 128), '{')
	b = appendBoolField(b, "ok", true)
	switch op {
	case "add":
		b = appendUintField(b, "index", index)
		b = appendStringField(b, "node_id", *req.NodeID)
		b = appendStringField(b, "role", "learner")
	case "promote":
		b = appendStringField(b, "node_id", *req.NodeID)
		b = appendStringField(b, "role", "voter")
	case "remove":
		b = appendStringField(b, "node_id", *req.NodeID)
		b = appendBoolField(b, "removed", true)
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

func (s *Server) membershipError(ctx *fasthttp.RequestCtx, err error) *apiError {
	switch {
	case errors.Is(err, replication.ErrChangeInProgress):
		return &apiError{status: 409, code: "change_in_progress", message: "another membership change is not applied yet; retry when it is", retryAfter: 1}
	case errors.Is(err, replication.ErrNotLeader):
		if e := s.redirectToLeader(ctx, s.node.Status()); e != nil {
			return e
		}
		return &apiError{status: 503, code: "not_leader", message: "this node does not lead (any more); retry on the leader", retryAfter: 1}
	case errors.Is(err, replication.ErrTimeout):
		return &apiError{status: 503, code: "commit_timeout", message: "the change was not applied before the timeout; it may still be (GET /ha/membership)", retryAfter: 1}
	case errors.Is(err, replication.ErrUnknownMember):
		return &apiError{status: 404, code: "unknown_member", message: "no member has that node_id"}
	case errors.Is(err, replication.ErrClusterFull):
		return &apiError{status: 409, code: "cluster_full", message: fmt.Sprintf("a cluster has at most %d members (voters and learners): remove one first", replication.MembersMax)}
	case errors.Is(err, replication.ErrMemberExists):
		return &apiError{status: 409, code: "member_exists", message: "a member with that node_id exists"}
	case errors.Is(err, replication.ErrNotLearner):
		return &apiError{status: 409, code: "not_learner", message: "only a learner can be promoted"}
	case errors.Is(err, replication.ErrLastVoter):
		return &apiError{status: 409, code: "last_voter", message: "the last voter of the cluster cannot be removed"}
	case errors.Is(err, replication.ErrLearnerBehind):
		return &apiError{status: 409, code: "learner_not_ready", message: "the learner has not caught up with the log yet; promote it once it has (its lag is on the leader's /metrics_ha)", retryAfter: 1}
	case errors.Is(err, replication.ErrConcernTooHigh):
		return &apiError{status: 409, code: "write_concern_too_high", message: "removing this voter would leave fewer voters than RF_HA_WRITE_CONCERN: no write could be answered"}
	}
	return mapError(err)
}

// validNodeID: the characters RF_HA_NODES, metric labels and logs can hold
// as they are.
func validNodeID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

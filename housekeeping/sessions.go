package housekeeping

import (
	"errors"
	"strings"
	"sync"
	"time"

	"keel/engine"
	"keel/replication"
)

// Consumer group sessions. A member stays in its group while it sends
// heartbeats; one silent for its session timeout is expired by the
// leader, as a CmdGroupExpire command (so every replica removes it at the
// same point of the log). Heartbeats change no replicated state: the
// leader keeps the time of each member's last one in memory here, as
// Kafka's group coordinator does. A new leader (a new term) knows none of
// them and starts every member's session when it first sees the member,
// so a leader change never expires a member early: each gets a full
// session timeout to reach the new leader.

// SessionCheckIntervalDefault is how often the leader looks for lapsed
// sessions: the most a dead member's expiry waits past its timeout.
const SessionCheckIntervalDefault = 100 * time.Millisecond

type sessionKey struct{ group, member string }

type sessions struct {
	mu   sync.Mutex
	term uint64                   // the leader term the times belong to
	seen map[sessionKey]time.Time // last heartbeat (or join, or first sight this term)
}

// Heartbeat records that member of group was heard from now (a join or a
// heartbeat answered by this node as leader).
func (s *Sweeper) Heartbeat(group, member string) {
	s.sess.mu.Lock()
	defer s.sess.mu.Unlock()
	if s.sess.seen == nil {
		s.sess.seen = map[sessionKey]time.Time{}
	}
	s.sess.seen[sessionKey{strings.Clone(group), strings.Clone(member)}] = time.Now() // the caller's strings may alias a request buffer
}

// ExpireSessions runs one session check now: on the leader, it proposes
// the removal of every member silent for longer than its session timeout.
func (s *Sweeper) ExpireSessions() {
	st := s.node.Status()
	now := time.Now()
	s.sess.mu.Lock()
	if st.Role != "leader" || !st.Serving {
		s.sess.seen, s.sess.term = nil, 0
		s.sess.mu.Unlock()
		return
	}
	if st.Term != s.sess.term || s.sess.seen == nil {
		s.sess.seen, s.sess.term = map[sessionKey]time.Time{}, st.Term
	}
	var cmds []*engine.Command
	live := map[sessionKey]bool{}
	for _, g := range s.store.Groups() {
		var lapsed []engine.MemberRef
		for _, m := range g.Members {
			k := sessionKey{g.Name, m.ID}
			live[k] = true
			last, ok := s.sess.seen[k]
			if !ok {
				s.sess.seen[k] = now // first sight this term: a full session from now
				continue
			}
			if now.Sub(last) > time.Duration(m.SessionTimeoutMs)*time.Millisecond {
				lapsed = append(lapsed, engine.MemberRef{ID: m.ID, Incarnation: m.Incarnation})
			}
		}
		if len(lapsed) > 0 {
			cmds = append(cmds, &engine.Command{Kind: engine.CmdGroupExpire, Group: g.Name, Expired: lapsed})
		}
	}
	for k := range s.sess.seen {
		if !live[k] {
			delete(s.sess.seen, k)
		}
	}
	s.sess.mu.Unlock()
	for _, c := range cmds {
		out, err := s.node.Propose(c, time.Now().Add(s.cfg.ProposeTimeout))
		if err == nil {
			err = out.Err
		}
		if err != nil {
			if !errors.Is(err, replication.ErrNotLeader) && !errors.Is(err, replication.ErrStopped) {
				s.cfg.Log.Warn("group session expiry failed", "group", c.Group, "err", err)
			}
			s.mu.Lock()
			s.stats.ProposeFailures++
			s.mu.Unlock()
			return // the next check tries again
		}
		s.mu.Lock()
		s.stats.ExpiredMembers += uint64(out.Count)
		s.mu.Unlock()
		for _, m := range c.Expired {
			s.cfg.Log.Info("group member expired (no heartbeat within its session timeout)", "group", c.Group, "member", m.ID, "generation", out.Generation)
		}
	}
}

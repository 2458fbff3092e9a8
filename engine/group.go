package engine

import (
	"encoding/binary"
	"errors"
	"slices"
	"sort"
	"strings"
)

// Consumer group membership (api.md "Consumer group membership"). Members
// join a group for one topic; the group shares each topic's partitions
// among the members reading it by the group's strategy (assign.go). Every
// change is a command in the log, decided at apply:
//
//   - CmdGroupJoin adds a member, or keeps one that joins again (its
//     session timeout may change; its topic too, which rebalances);
//   - CmdGroupLeave removes one;
//   - CmdGroupExpire removes members whose sessions the leader saw lapse
//     (housekeeping decides from its clock, apply only removes);
//   - CmdMemberCommit is a commit fenced by the member's generation and
//     assignment.
//
// Every change of membership moves the group to a new generation and
// reassigns its partitions. Generations come from one counter for all
// groups, so they increase and never repeat, even for a group that
// emptied (and was dropped) and was joined again: a member's old
// generation never matches a newer group's.
//
// Heartbeats are not commands: they change no replicated state. The
// leader answers them from applied state and keeps each member's last
// heartbeat in memory (housekeeping.Sweeper), as Kafka's group
// coordinator does; a new leader starts every session afresh.

// Group limits. They are constants (not flags) because apply checks them:
// a replay must decide the same.
const (
	GroupMembersMax         = 1000      // members in one group
	GroupsMax               = 10_000    // groups with members
	SessionTimeoutMinMs     = 100       // session_timeout_ms accepted
	SessionTimeoutMaxMs     = 3_600_000 // one hour
	SessionTimeoutDefaultMs = 10_000
	groupExpireBatchMax     = 10_000 // sanity bound while decoding
)

// Group errors (command errors: deterministic, answered 4xx).
var (
	ErrUnknownMember    = errors.New("unknown member")
	ErrStaleGeneration  = errors.New("stale generation")
	ErrNotAssigned      = errors.New("partition not assigned to the member")
	ErrStrategyMismatch = errors.New("the group uses another strategy")
	ErrTooManyMembers   = errors.New("group member limit reached")
	ErrTooManyGroups    = errors.New("group limit reached")
	ErrInvalidMember    = errors.New("invalid member id")
	ErrInvalidSession   = errors.New("invalid session timeout")
)

// ConsumerGroup is one group's membership at a generation. Values are
// immutable once stored (apply replaces a group whole), so a reader may
// keep one without a lock.
type ConsumerGroup struct {
	Name       string
	Generation uint64
	Strategy   uint8
	Members    []*GroupMember // sorted by ID
}

// GroupMember is one member and its assignment in its group's generation.
type GroupMember struct {
	ID               string
	Topic            string
	SessionTimeoutMs int64
	JoinedMs         int64   // leader time of the join that added it
	Incarnation      uint64  // the generation that added it: an expiry names it, so a member that left and joined again is not expired for its former self
	Partitions       []int32 // ascending; empty when idle
}

// Member returns the member with id, or nil.
func (g *ConsumerGroup) Member(id string) *GroupMember {
	i, ok := slices.BinarySearchFunc(g.Members, id, func(m *GroupMember, id string) int { return strings.Compare(m.ID, id) })
	if !ok {
		return nil
	}
	return g.Members[i]
}

// Owner returns the member that owns topic's partition, or nil.
func (g *ConsumerGroup) Owner(topic string, partition int32) *GroupMember {
	for _, m := range g.Members {
		if m.Topic == topic && slices.Contains(m.Partitions, partition) {
			return m
		}
	}
	return nil
}

// byMemberID orders members by id (the order Members keeps).
func byMemberID(a, b *GroupMember) int { return strings.Compare(a.ID, b.ID) }

// MemberRef names a member incarnation in a CmdGroupExpire.
type MemberRef struct {
	ID          string
	Incarnation uint64
}

// ValidMemberID reports whether id can name a member: as a group name,
// 1-249 printable characters.
func ValidMemberID(id string) bool { return ValidGroupName(id) }

// Group returns the membership of group name, or false when it has no
// members.
func (s *Store) Group(name string) (*ConsumerGroup, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, ok := s.groups[name]
	return g, ok
}

// Groups returns every group with members, sorted by name.
func (s *Store) Groups() []*ConsumerGroup {
	s.mu.RLock()
	out := make([]*ConsumerGroup, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Store) applyGroupJoin(c *Command, nowMs int64) Result {
	if !ValidGroupName(c.Group) {
		return Result{Err: ErrInvalidGroup}
	}
	if !ValidMemberID(c.MemberID) {
		return Result{Err: ErrInvalidMember}
	}
	if c.TTLMs < SessionTimeoutMinMs || c.TTLMs > SessionTimeoutMaxMs {
		return Result{Err: ErrInvalidSession}
	}
	if c.Strategy > strategyMax {
		return Result{Err: errCommand}
	}
	if _, ok := s.Topic(c.Topic); !ok {
		return Result{Err: ErrUnknownTopic}
	}
	s.mu.RLock()
	old, exists := s.groups[c.Group]
	groups := len(s.groups)
	s.mu.RUnlock()
	var members []*GroupMember
	strategy := c.Strategy
	if exists {
		members = old.Members
		alone := len(members) == 1 && members[0].ID == c.MemberID
		if strategy == StrategyUnset || strategy == old.Strategy {
			strategy = old.Strategy
		} else if !alone {
			return Result{Err: ErrStrategyMismatch, Generation: old.Generation, Strategy: old.Strategy}
		}
	} else if groups >= GroupsMax {
		return Result{Err: ErrTooManyGroups}
	}
	if strategy == StrategyUnset {
		strategy = StrategySticky
	}
	cur := (*GroupMember)(nil)
	if exists {
		cur = old.Member(c.MemberID)
	}
	if cur != nil && cur.Topic == c.Topic && strategy == old.Strategy {
		// Joining again changes nothing but the session timeout: same
		// generation, same assignment.
		if cur.SessionTimeoutMs != c.TTLMs {
			m := *cur
			m.SessionTimeoutMs = c.TTLMs
			g := *old
			g.Members = replaceMember(old.Members, &m)
			s.setGroup(&g)
			cur = &m
		}
		return groupResult(old.Generation, len(old.Members), cur, strategy)
	}
	if cur == nil && len(members) >= GroupMembersMax {
		return Result{Err: ErrTooManyMembers, Generation: old.Generation}
	}
	gen := s.nextGeneration()
	m := &GroupMember{ID: c.MemberID, Topic: c.Topic, SessionTimeoutMs: c.TTLMs, JoinedMs: nowMs, Incarnation: gen}
	if cur != nil {
		m.JoinedMs, m.Incarnation = cur.JoinedMs, cur.Incarnation
	}
	g := s.rebalance(c.Group, gen, strategy, replaceMember(members, m))
	return groupResult(gen, len(g.Members), g.Member(m.ID), strategy)
}

func (s *Store) applyGroupLeave(c *Command) Result {
	g, ok := s.Group(c.Group)
	if !ok || g.Member(c.MemberID) == nil {
		return Result{Err: ErrUnknownMember}
	}
	rest := slices.DeleteFunc(slices.Clone(g.Members), func(m *GroupMember) bool { return m.ID == c.MemberID })
	gen := s.nextGeneration()
	ng := s.rebalance(c.Group, gen, g.Strategy, rest)
	return Result{Generation: gen, Count: len(ng.Members)}
}

func (s *Store) applyGroupExpire(c *Command) Result {
	g, ok := s.Group(c.Group)
	if !ok {
		return Result{}
	}
	rest := slices.DeleteFunc(slices.Clone(g.Members), func(m *GroupMember) bool {
		return slices.Contains(c.Expired, MemberRef{m.ID, m.Incarnation})
	})
	removed := len(g.Members) - len(rest)
	if removed == 0 {
		// Every named member left, joined again or was expired already.
		return Result{Generation: g.Generation, Ignored: true}
	}
	gen := s.nextGeneration()
	s.rebalance(c.Group, gen, g.Strategy, rest)
	return Result{Generation: gen, Count: removed}
}

// applyMemberCommit is a commit fenced by membership: it applies only when
// the member's generation is the group's and the partition is the
// member's in it.
func (s *Store) applyMemberCommit(c *Command) Result {
	g, ok := s.Group(c.Group)
	if !ok || g.Generation != c.Generation {
		var cur uint64
		if ok {
			cur = g.Generation
		}
		return Result{Err: ErrStaleGeneration, Generation: cur}
	}
	m := g.Member(c.MemberID)
	if m == nil || m.Topic != c.Topic || !slices.Contains(m.Partitions, c.Partition) {
		return Result{Err: ErrNotAssigned, Generation: g.Generation}
	}
	return s.applyCommit(c)
}

func (s *Store) nextGeneration() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groupEpoch++
	return s.groupEpoch
}

// rebalance stores group name at generation gen with members (any order),
// each topic's partitions shared among the members reading it. An empty
// group is dropped.
func (s *Store) rebalance(name string, gen uint64, strategy uint8, members []*GroupMember) *ConsumerGroup {
	members = slices.Clone(members)
	slices.SortFunc(members, byMemberID)
	byTopic := map[string][]string{}
	prev := map[string][]int32{}
	for _, m := range members {
		byTopic[m.Topic] = append(byTopic[m.Topic], m.ID)
		prev[m.ID] = m.Partitions
	}
	assigned := map[string][]int32{}
	for topic, ids := range byTopic {
		n := 0
		if t, ok := s.Topic(topic); ok {
			n = len(t.Partitions)
		}
		for id, ps := range Assign(strategy, ids, n, prev) {
			assigned[id] = ps
		}
	}
	g := &ConsumerGroup{Name: name, Generation: gen, Strategy: strategy, Members: make([]*GroupMember, len(members))}
	for i, m := range members {
		nm := *m
		nm.Partitions = assigned[m.ID]
		g.Members[i] = &nm
	}
	s.setGroup(g)
	return g
}

// GroupsChanged returns a channel closed at the next change of any
// group's membership (a member's stream waits on it for a rebalance).
func (s *Store) GroupsChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groupsChanged == nil {
		s.groupsChanged = make(chan struct{})
	}
	return s.groupsChanged
}

// setGroup stores g (nil members: drops it).
func (s *Store) setGroup(g *ConsumerGroup) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groupsChanged != nil {
		close(s.groupsChanged)
		s.groupsChanged = nil
	}
	if len(g.Members) == 0 {
		delete(s.groups, g.Name)
		return
	}
	s.groups[g.Name] = g
}

// replaceMember returns members with m in place of the member with its id
// (or added).
func replaceMember(members []*GroupMember, m *GroupMember) []*GroupMember {
	out := make([]*GroupMember, 0, len(members)+1)
	for _, o := range members {
		if o.ID != m.ID {
			out = append(out, o)
		}
	}
	out = append(out, m)
	slices.SortFunc(out, byMemberID)
	return out
}

func groupResult(gen uint64, members int, m *GroupMember, strategy uint8) Result {
	return Result{Generation: gen, Count: members, Assigned: m.Partitions, Strategy: strategy}
}

// appendGroupState appends the groups to a state checkpoint payload:
// epoch, count, (name, generation, strategy u8, members, (id, topic,
// session ms, joined ms, incarnation, partitions, partition*)*)*.
func appendGroupState(p []byte, epoch uint64, groups []*ConsumerGroup) []byte {
	p = binary.AppendUvarint(p, epoch)
	p = binary.AppendUvarint(p, uint64(len(groups)))
	for _, g := range groups {
		p = appendString(p, g.Name)
		p = binary.AppendUvarint(p, g.Generation)
		p = append(p, g.Strategy)
		p = binary.AppendUvarint(p, uint64(len(g.Members)))
		for _, m := range g.Members {
			p = appendString(p, m.ID)
			p = appendString(p, m.Topic)
			p = binary.AppendUvarint(p, uint64(m.SessionTimeoutMs))
			p = binary.AppendVarint(p, m.JoinedMs)
			p = binary.AppendUvarint(p, m.Incarnation)
			p = binary.AppendUvarint(p, uint64(len(m.Partitions)))
			for _, part := range m.Partitions {
				p = binary.AppendUvarint(p, uint64(part))
			}
		}
	}
	return p
}

// decodeGroupState restores the groups of a state checkpoint (version 7).
func (s *Store) decodeGroupState(d *decoder, corrupt func(string) error) error {
	s.groupEpoch = d.uvarint()
	s.groups = map[string]*ConsumerGroup{}
	for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ {
		g := &ConsumerGroup{Name: string(d.bytes()), Generation: d.uvarint(), Strategy: d.byte()}
		members := d.uvarint()
		if members > GroupMembersMax || g.Strategy > strategyMax || g.Generation > s.groupEpoch {
			return corrupt("bad consumer group record")
		}
		for j := uint64(0); j < members && d.err == nil; j++ {
			m := &GroupMember{ID: string(d.bytes()), Topic: string(d.bytes()), SessionTimeoutMs: d.int64(), JoinedMs: d.varint(), Incarnation: d.uvarint()}
			parts := d.uvarint()
			if parts > partitionsLimit {
				return corrupt("bad consumer group member")
			}
			m.Partitions = make([]int32, 0, parts)
			for k := uint64(0); k < parts && d.err == nil; k++ {
				m.Partitions = append(m.Partitions, int32(d.int()))
			}
			g.Members = append(g.Members, m)
		}
		if d.err == nil && len(g.Members) > 0 {
			s.groups[g.Name] = g
		}
	}
	if d.err != nil {
		return corrupt("consumer groups do not decode")
	}
	return nil
}

package engine

import (
	"errors"
	"slices"
	"testing"
)

func join(group, topic, member string, strategy uint8) Command {
	return Command{Kind: CmdGroupJoin, Topic: topic, Group: group, MemberID: member, TTLMs: 5000, Strategy: strategy}
}

func memberCommit(group, topic, member string, gen uint64, partition int32, offset uint64) Command {
	return Command{Kind: CmdMemberCommit, Topic: topic, Group: group, MemberID: member, Generation: gen, Partition: partition, Offset: offset}
}

func TestGroupMembership(t *testing.T) {
	h := newStoreHarness(t, t.TempDir())
	h.apply(1000, Command{Kind: CmdCreateTopic, Topic: "ev", Partitions: 6}, Command{Kind: CmdCreateTopic, Topic: "other", Partitions: 2})
	h.apply(1000, produce("ev", 0, "", "a", "b", "c"), produce("ev", 3, "", "x"))

	r := h.apply(1001, join("g", "ev", "m1", StrategyUnset))[0]
	if r.Err != nil || r.Count != 1 || len(r.Assigned) != 6 || r.Strategy != StrategySticky {
		t.Fatalf("first join: %+v", r)
	}
	g1 := r.Generation
	r2 := h.apply(1002, join("g", "ev", "m2", StrategyUnset), join("g", "ev", "m3", StrategySticky))
	if r2[0].Err != nil || r2[1].Err != nil || r2[1].Generation <= r2[0].Generation || r2[0].Generation <= g1 {
		t.Fatalf("joins: %+v", r2)
	}
	g, _ := h.s.Group("g")
	gen := g.Generation
	for _, m := range g.Members {
		if len(m.Partitions) != 2 {
			t.Fatalf("3 members over 6 partitions: %s has %v", m.ID, m.Partitions)
		}
	}
	// Joining again with nothing changed keeps the generation.
	if r := h.apply(1003, join("g", "ev", "m2", StrategyUnset))[0]; r.Generation != gen || r.Count != 3 {
		t.Fatalf("rejoin: %+v, generation %d", r, gen)
	}
	// Refusals change nothing.
	refusals := []struct {
		name string
		cmd  Command
		want error
	}{
		{"another strategy", join("g", "ev", "m4", StrategyRange), ErrStrategyMismatch},
		{"unknown topic", join("g", "nope", "m4", StrategyUnset), ErrUnknownTopic},
		{"bad member id", join("g", "ev", "", StrategyUnset), ErrInvalidMember},
		{"bad group", join("", "ev", "m4", StrategyUnset), ErrInvalidGroup},
		{"session too short", Command{Kind: CmdGroupJoin, Topic: "ev", Group: "g", MemberID: "m4", TTLMs: 1}, ErrInvalidSession},
		{"leave, unknown member", Command{Kind: CmdGroupLeave, Group: "g", MemberID: "m9"}, ErrUnknownMember},
	}
	for _, rf := range refusals {
		if r := h.apply(1004, rf.cmd)[0]; !errors.Is(r.Err, rf.want) {
			t.Fatalf("%s: %v, want %v", rf.name, r.Err, rf.want)
		}
		if g2, _ := h.s.Group("g"); g2.Generation != gen || len(g2.Members) != 3 {
			t.Fatalf("%s changed the group: generation %d members %d", rf.name, g2.Generation, len(g2.Members))
		}
	}

	// Fenced commits.
	owner := g.Owner("ev", 0)
	notOwner := g.Member("m1")
	if notOwner == owner {
		notOwner = g.Member("m2")
	}
	fenced := []struct {
		name string
		cmd  Command
		want error
	}{
		{"owner, current generation", memberCommit("g", "ev", owner.ID, gen, 0, 1), nil},
		{"stale generation", memberCommit("g", "ev", owner.ID, gen-1, 0, 2), ErrStaleGeneration},
		{"not the owner", memberCommit("g", "ev", notOwner.ID, gen, 0, 2), ErrNotAssigned},
		{"another topic", memberCommit("g", "other", owner.ID, gen, 0, 0), ErrNotAssigned},
		{"unknown member", memberCommit("g", "ev", "m9", gen, 0, 2), ErrNotAssigned},
		{"unknown group", memberCommit("h", "ev", owner.ID, gen, 0, 2), ErrStaleGeneration},
		{"owner, past the end", memberCommit("g", "ev", owner.ID, gen, 0, 9), ErrOffsetOutOfRange},
	}
	for _, f := range fenced {
		r := h.apply(1005, f.cmd)[0]
		if !errors.Is(r.Err, f.want) {
			t.Fatalf("%s: %v, want %v", f.name, r.Err, f.want)
		}
		if c, _ := h.s.Committed("ev", "g", 0); c != 1 {
			t.Fatalf("%s: committed %d, want 1", f.name, c)
		}
	}

	// Expiry names an incarnation: a member that left and joined again is
	// not expired for its former self.
	m3 := g.Member("m3")
	h.apply(1006, Command{Kind: CmdGroupLeave, Group: "g", MemberID: "m3"})
	h.apply(1007, join("g", "ev", "m3", StrategyUnset))
	if r := h.apply(1008, Command{Kind: CmdGroupExpire, Group: "g", Expired: []MemberRef{{"m3", m3.Incarnation}}})[0]; !r.Ignored {
		t.Fatalf("expiry of an old incarnation: %+v", r)
	}
	g, _ = h.s.Group("g")
	before := map[string][]int32{}
	for _, m := range g.Members {
		before[m.ID] = m.Partitions
	}
	r = h.apply(1009, Command{Kind: CmdGroupExpire, Group: "g", Expired: []MemberRef{{"m2", g.Member("m2").Incarnation}}})[0]
	if r.Count != 1 || r.Generation <= g.Generation {
		t.Fatalf("expiry: %+v", r)
	}
	after, _ := h.s.Group("g")
	if len(after.Members) != 2 {
		t.Fatalf("members after expiry: %d", len(after.Members))
	}
	for _, m := range after.Members {
		for _, p := range before[m.ID] {
			if !slices.Contains(m.Partitions, p) {
				t.Fatalf("sticky: %s lost partition %d when m2 expired (%v -> %v)", m.ID, p, before[m.ID], m.Partitions)
			}
		}
		if len(m.Partitions) != 3 {
			t.Fatalf("%s has %v after the expiry", m.ID, m.Partitions)
		}
	}
	// The old generation's commit is refused.
	if r := h.apply(1010, memberCommit("g", "ev", "m2", gen, 0, 1))[0]; !errors.Is(r.Err, ErrStaleGeneration) {
		t.Fatalf("commit from an expired member: %v", r.Err)
	}

	// Membership and the generation counter survive a restart.
	want, _ := h.s.Group("g")
	h.checkpointAndReopen()
	got, ok := h.s.Group("g")
	if !ok || got.Generation != want.Generation || len(got.Members) != len(want.Members) {
		t.Fatalf("after restart: %+v, want %+v", got, want)
	}
	for i, m := range got.Members {
		w := want.Members[i]
		if m.ID != w.ID || m.Topic != w.Topic || m.Incarnation != w.Incarnation || m.JoinedMs != w.JoinedMs ||
			m.SessionTimeoutMs != w.SessionTimeoutMs || !slices.Equal(m.Partitions, w.Partitions) {
			t.Fatalf("member %d after restart: %+v, want %+v", i, m, w)
		}
	}
	// Generations go on above every earlier one, even for a group that
	// emptied and was dropped.
	for _, m := range got.Members {
		h.apply(1011, Command{Kind: CmdGroupLeave, Group: "g", MemberID: m.ID})
	}
	if _, ok := h.s.Group("g"); ok {
		t.Fatal("an empty group is kept")
	}
	if r := h.apply(1012, join("g", "ev", "m1", StrategyRange))[0]; r.Generation <= want.Generation || r.Strategy != StrategyRange {
		t.Fatalf("a new life of the group: %+v (generation was %d)", r, want.Generation)
	}
}

func TestGroupCommandsRoundTrip(t *testing.T) {
	cmds := []Command{
		join("g", "ev", "m1", StrategyRoundRobin),
		{Kind: CmdGroupLeave, Group: "g", MemberID: "m1"},
		{Kind: CmdGroupExpire, Group: "g", Expired: []MemberRef{{"a", 1}, {"b", 99}}},
		memberCommit("g", "ev", "m1", 7, 3, 12),
	}
	for _, c := range cmds {
		b := AppendCommand(nil, &c)
		var got Command
		rest, err := DecodeCommand(b, &got, nil)
		if err != nil || len(rest) != 0 {
			t.Fatalf("kind %d: %v", c.Kind, err)
		}
		if got.Group != c.Group || got.MemberID != c.MemberID || got.TTLMs != c.TTLMs || got.Strategy != c.Strategy ||
			got.Generation != c.Generation || got.Partition != c.Partition || got.Offset != c.Offset || !slices.Equal(got.Expired, c.Expired) {
			t.Fatalf("kind %d: %+v, want %+v", c.Kind, got, c)
		}
	}
}

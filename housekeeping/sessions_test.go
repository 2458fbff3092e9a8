package housekeeping

import (
	"testing"
	"time"

	"keel/engine"
)

// A member that keeps sending heartbeats stays; one that stops is expired
// after its session timeout (and not long after), and its partitions go
// to the member that stayed.
func TestSessionExpiry(t *testing.T) {
	node, store, _ := single(t)
	propose(t, node, &engine.Command{Kind: engine.CmdCreateTopic, Topic: "ev", Partitions: 4})
	s := Start(Config{RetentionInterval: time.Hour, CompactionInterval: time.Hour, SessionCheckInterval: 20 * time.Millisecond}, node, store)
	defer s.Close()
	for _, m := range []string{"alive", "dead"} {
		propose(t, node, &engine.Command{Kind: engine.CmdGroupJoin, Topic: "ev", Group: "g", MemberID: m, TTLMs: 400})
		s.Heartbeat("g", m)
	}
	silentSince := time.Now()
	var gone time.Duration
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s.Heartbeat("g", "alive")
		g, _ := store.Group("g")
		if g.Member("dead") == nil {
			gone = time.Since(silentSince)
			break
		}
	}
	if gone == 0 {
		t.Fatal("the silent member was never expired")
	}
	if gone < 400*time.Millisecond || gone > 1400*time.Millisecond {
		t.Fatalf("expired %v after its last heartbeat; session timeout 400ms", gone)
	}
	g, _ := store.Group("g")
	if m := g.Member("alive"); m == nil || len(m.Partitions) != 4 {
		t.Fatalf("after the expiry: %+v", g.Members)
	}
	// The member that kept its heartbeats is still there a while later.
	for range 30 {
		s.Heartbeat("g", "alive")
		time.Sleep(20 * time.Millisecond)
	}
	if g, ok := store.Group("g"); !ok || g.Member("alive") == nil {
		t.Fatal("a member sending heartbeats was expired")
	}
	if st := s.Stats(); st.ExpiredMembers != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// A member never heard from by this leader (joined under an earlier
// leader, or before a restart) gets a full session from the first check.
func TestSessionStartsAtFirstSight(t *testing.T) {
	node, store, _ := single(t)
	propose(t, node, &engine.Command{Kind: engine.CmdCreateTopic, Topic: "ev", Partitions: 2})
	propose(t, node, &engine.Command{Kind: engine.CmdGroupJoin, Topic: "ev", Group: "g", MemberID: "m", TTLMs: 300})
	time.Sleep(400 * time.Millisecond) // longer than the session, before any leader looked
	s := Start(Config{RetentionInterval: time.Hour, CompactionInterval: time.Hour, SessionCheckInterval: 20 * time.Millisecond}, node, store)
	defer s.Close()
	time.Sleep(200 * time.Millisecond)
	if _, ok := store.Group("g"); !ok {
		t.Fatal("expired before a full session since the leader first saw it")
	}
	waitFor(t, "the expiry", func() bool { _, ok := store.Group("g"); return !ok })
}

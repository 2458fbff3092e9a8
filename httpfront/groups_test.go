package httpfront

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func partitionsOf(t *testing.T, r response) []int {
	t.Helper()
	as, _ := r.json["assignments"].([]any)
	if len(as) != 1 {
		t.Fatalf("assignments: %s", r.body)
	}
	var out []int
	for _, p := range as[0].(map[string]any)["partitions"].([]any) {
		out = append(out, int(p.(float64)))
	}
	return out
}

func TestGroupMembershipContract(t *testing.T) {
	ts := startServer(t, nil)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"ev","partitions":6}`), 200, "")
	for i := range 12 {
		ts.expect(ts.do("POST", fmt.Sprintf("/broker/topics/ev/produce?partition=%d", i%6), fmt.Sprintf("m%02d", i)), 200, "")
	}
	// A join without member_id gets one chosen by the server.
	r := ts.do("POST", "/broker/groups/g/join", `{"topic":"ev","session_timeout_ms":60000}`)
	ts.expect(r, 200, "")
	a := r.json["member_id"].(string)
	if !strings.HasPrefix(a, "m-") || r.num("members") != 1 || r.json["strategy"] != "sticky" || len(partitionsOf(t, r)) != 6 {
		t.Fatalf("first join: %s", r.body)
	}
	r = ts.do("POST", "/broker/groups/g/join", `{"topic":"ev","member_id":"b","strategy":"sticky"}`)
	ts.expect(r, 200, "")
	gen := uint64(r.num("generation"))
	bParts := partitionsOf(t, r)
	if r.num("members") != 2 || len(bParts) != 3 {
		t.Fatalf("second join: %s", r.body)
	}
	// The first member's heartbeat learns of the rebalance.
	r = ts.do("POST", "/broker/groups/g/heartbeat", fmt.Sprintf(`{"member_id":%q,"generation":1}`, a))
	ts.expect(r, 409, "rebalance_in_progress")
	if uint64(r.num("generation")) != gen || len(partitionsOf(t, r)) != 3 {
		t.Fatalf("rebalance answer: %s", r.body)
	}
	r = ts.do("POST", "/broker/groups/g/heartbeat", fmt.Sprintf(`{"member_id":%q,"generation":%d}`, a, gen))
	ts.expect(r, 200, "")
	aParts := partitionsOf(t, r)
	if len(aParts) != 3 || slices.ContainsFunc(aParts, func(p int) bool { return slices.Contains(bParts, p) }) {
		t.Fatalf("assignments overlap: %v %v", aParts, bParts)
	}

	// Refusals change nothing.
	refusals := []struct {
		path, body string
		status     int
		code       string
	}{
		{"/broker/groups/g/join", `{}`, 400, "missing_fields"},
		{"/broker/groups/g/join", `{"topic":"nope"}`, 404, "unknown_topic"},
		{"/broker/groups/g/join", `{"topic":"ev","strategy":"fastest"}`, 400, "invalid_strategy"},
		{"/broker/groups/g/join", `{"topic":"ev","strategy":"range","member_id":"c"}`, 409, "strategy_mismatch"},
		{"/broker/groups/g/join", `{"topic":"ev","session_timeout_ms":5}`, 400, "invalid_session_timeout"},
		{"/broker/groups/g/join", `{"topic":"ev","member_id":""}`, 400, "invalid_member"},
		{"/broker/groups/g/join", `{"topic":"bad/name"}`, 400, "invalid_topic"},
		{"/broker/groups/g/heartbeat", `{"member_id":"zz","generation":1}`, 409, "unknown_member"},
		{"/broker/groups/g/heartbeat", `{"member_id":"b"}`, 400, "missing_fields"},
		{"/broker/groups/g/heartbeat", `{"member_id":"b","generation":-1}`, 400, "invalid_generation"},
		{"/broker/groups/g/leave", `{"member_id":"zz"}`, 409, "unknown_member"},
		{"/broker/groups/g/leave", `{"generation":1}`, 400, "missing_fields"},
		{"/broker/groups/g/rejoin", `{}`, 404, "not_found"},
		{"/broker/commit", fmt.Sprintf(`{"topic":"ev","group":"g","partition":%d,"offset":0,"member_id":"b","generation":%d}`, aParts[0], gen), 409, "not_assigned"},
		{"/broker/commit", fmt.Sprintf(`{"topic":"ev","group":"g","partition":%d,"offset":0,"member_id":"b","generation":%d}`, bParts[0], gen-1), 409, "stale_generation"},
		{"/broker/commit", fmt.Sprintf(`{"topic":"ev","group":"g","partition":%d,"offset":0,"member_id":"b"}`, bParts[0]), 400, "missing_fields"},
	}
	for _, rf := range refusals {
		r := ts.do("POST", rf.path, rf.body)
		ts.expect(r, rf.status, rf.code)
		if rf.code == "stale_generation" && uint64(r.num("generation")) != gen {
			t.Fatalf("stale_generation names generation %v, want %d", r.json["generation"], gen)
		}
	}
	d := ts.do("GET", "/broker/groups/g", "")
	ts.expect(d, 200, "")
	if uint64(d.num("generation")) != gen || len(d.json["members"].([]any)) != 2 || d.num("lag") != 12 {
		t.Fatalf("describe after refusals: %s", d.body)
	}
	for _, p := range d.json["partitions"].([]any) {
		if p.(map[string]any)["committed_offset"] != nil {
			t.Fatalf("a refused commit was stored: %s", d.body)
		}
	}

	// Reading as a member: its partitions from the committed offset + 1.
	ts.expect(ts.do("POST", "/broker/commit", fmt.Sprintf(`{"topic":"ev","group":"g","partition":%d,"offset":0,"member_id":"b","generation":%d}`, bParts[0], gen)), 200, "")
	r = ts.do("GET", "/broker/consume/ev/g?member_id=b", "")
	ts.expect(r, 200, "")
	if r.num("count") != 5 || uint64(r.num("generation")) != gen || r.json["truncated"] != false {
		t.Fatalf("member page: %s", r.body)
	}
	for _, m := range r.json["messages"].([]any) {
		msg := m.(map[string]any)
		p, off := int(msg["partition"].(float64)), msg["offset"].(float64)
		if !slices.Contains(bParts, p) || p == bParts[0] && off == 0 {
			t.Fatalf("member read %v (partitions %v, committed 0 on %d)", msg, bParts, bParts[0])
		}
	}
	for _, n := range r.json["next_offsets"].([]any) {
		if n.(map[string]any)["next_offset"].(float64) != 2 {
			t.Fatalf("next_offsets: %s", r.body)
		}
	}
	r = ts.do("GET", "/broker/consume/ev/g?member_id=b&limit=2", "")
	if r.num("count") != 2 || r.json["truncated"] != false {
		t.Fatalf("limited member page: %s", r.body)
	}
	ts.expect(ts.do("GET", "/broker/consume/ev/g?member_id=zz", ""), 409, "unknown_member")
	ts.expect(ts.do("GET", "/broker/consume/ev/g", ""), 400, "invalid_member")
	ts.expect(ts.do("GET", "/broker/consume/ev/g?member_id=b&offset=3", ""), 400, "invalid_offset")
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"other","partitions":1}`), 200, "")
	ts.expect(ts.do("GET", "/broker/consume/other/g?member_id=b", ""), 409, "not_assigned")

	// Inspection and metrics.
	l := ts.do("GET", "/broker/groups", "")
	ts.expect(l, 200, "")
	if gs := l.json["groups"].([]any); len(gs) != 1 || gs[0].(map[string]any)["members"].(float64) != 2 {
		t.Fatalf("list: %s", l.body)
	}
	ts.expect(ts.do("GET", "/broker/groups/nope", ""), 404, "unknown_group")
	m := string(ts.do("GET", "/metrics", "").body)
	for _, want := range []string{`keel_group_members{group="g"} 2`, fmt.Sprintf(`keel_group_generation{group="g"} %d`, gen),
		fmt.Sprintf(`keel_group_lag{topic="ev",group="g",partition="%d"} 1`, bParts[0]), fmt.Sprintf(`keel_group_lag{topic="ev",group="g",partition="%d"} 2`, aParts[0])} {
		if !strings.Contains(m, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}

	// Leaving rebalances: the member that stays owns everything.
	r = ts.do("POST", "/broker/groups/g/leave", `{"member_id":"b"}`)
	ts.expect(r, 200, "")
	if r.num("members") != 1 || uint64(r.num("generation")) <= gen {
		t.Fatalf("leave: %s", r.body)
	}
	r = ts.do("POST", "/broker/groups/g/join", fmt.Sprintf(`{"topic":"ev","member_id":%q,"session_timeout_ms":60000}`, a))
	if got := partitionsOf(t, r); len(got) != 6 {
		t.Fatalf("after b left, %s holds %v", a, got)
	}
	// A group that only committed is listed too, without members.
	ts.expect(ts.do("POST", "/broker/commit", `{"topic":"ev","group":"plain","partition":0,"offset":0}`), 200, "")
	d = ts.do("GET", "/broker/groups/plain", "")
	if d.json["generation"] != nil || len(d.json["members"].([]any)) != 0 || d.num("lag") != 11 { // 1 after the commit on partition 0, 2 on each of the others
		t.Fatalf("describe a group without members: %s", d.body)
	}
}

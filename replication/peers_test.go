package replication

import (
	"strings"
	"testing"
)

func TestValidateMembers(t *testing.T) {
	m := func(name, addr string) Member { return Member{ID: RaftID(name), Name: name, RaftAddr: addr} }
	three := []Member{m("node1", "h:1"), m("node2", "h:2"), m("node3", "h:3")}
	for _, tc := range []struct {
		name    string
		self    string
		members []Member
		err     string // "" = valid
	}{
		{"three", "node2", three, ""},
		{"one", "node1", three[:1], ""},
		{"self missing", "node9", three, "not among the members"},
		{"self unset", "", three, "RF_HA_NODE_ID"},
		{"name twice", "node1", []Member{m("node1", "h:1"), m("node1", "h:2")}, "listed twice"},
		{"address twice", "node1", []Member{m("node1", "h:1"), m("node2", "h:1")}, "same raft address"},
		{"eight", "n1", []Member{m("n1", "a"), m("n2", "b"), m("n3", "c"), m("n4", "d"), m("n5", "e"), m("n6", "f"), m("n7", "g"), m("n8", "h")}, "1 to 7"},
		{"unnamed", "node1", []Member{m("node1", "h:1"), m("", "h:2")}, "no name"},
	} {
		err := ValidateMembers(tc.self, tc.members)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	if RaftID("node1") == RaftID("node2") || RaftID("node1") == 0 {
		t.Fatal("raft ids of distinct names collide, or are raft's none")
	}
}

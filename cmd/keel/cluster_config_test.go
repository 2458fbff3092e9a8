package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// TestClusterConfig: RF_HA_* settings that could never work, or that ask
// for what is not built, are refused at start with a clear message; the
// HTTP port follows the raft port unless given.
func TestClusterConfig(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes := "node1:127.0.0.1:7000:100,node2:127.0.0.1:7010,node3:127.0.0.1:7020:5"
	for _, tc := range []struct {
		name string
		o    options
		err  string // "" = valid
	}{
		{"three", options{haEnabled: true, haNodeID: "node2", haNodes: nodes}, ""},
		{"bad entry", options{haEnabled: true, haNodeID: "node1", haNodes: "node1,node2"}, "want id:host:raft_port[:priority]"},
		{"bad port", options{haEnabled: true, haNodeID: "node1", haNodes: "node1:h:70000"}, "want 1..65534"},
		{"bad priority", options{haEnabled: true, haNodeID: "node1", haNodes: "node1:h:7000:high"}, "priority"},
		{"not a member", options{haEnabled: true, haNodeID: "node9", haNodes: nodes}, "not among the members"},
		{"write concern majority", options{haEnabled: true, haNodeID: "node1", haNodes: nodes, haWriteConcern: "2"}, ""},
		{"write concern 1", options{haEnabled: true, haNodeID: "node1", haNodes: nodes, haWriteConcern: "1"}, ""},
		{"write concern all", options{haEnabled: true, haNodeID: "node1", haNodes: nodes, haWriteConcern: "3"}, ""},
		{"write concern above the size", options{haEnabled: true, haNodeID: "node1", haNodes: nodes, haWriteConcern: "4"}, "want a number of nodes, 1..3"},
		{"write concern nonsense", options{haEnabled: true, haNodeID: "node1", haNodes: nodes, haWriteConcern: "all"}, "want a number of nodes"},
		{"rocket", options{haEnabled: true, haNodeID: "node1", haNodes: nodes, rocket: true}, "single node only"},
		{"plaintext off loopback", options{haEnabled: true, haNodeID: "node1", haNodes: "node1:10.0.0.5:7000"}, "not loopback"},
		{"plaintext off loopback allowed", options{haEnabled: true, haNodeID: "node1", haNodes: "node1:10.0.0.5:7000", haInsecurePlaintext: true}, ""},
		{"tls without files", options{haEnabled: true, haNodeID: "node1", haNodes: nodes, haTLS: true}, "needs --ha-tls-ca"},
	} {
		o := tc.o
		c, err := clusterFrom(&o, log)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
			continue
		}
		if tc.name == "three" {
			if o.port != 7011 || c.self.Name != "node2" || len(c.members) != 3 || c.members[1].Priority != 0 || c.members[2].HTTPURL != "http://127.0.0.1:7021" {
				t.Errorf("three: port %d, self %+v, members %+v", o.port, c.self, c.members)
			}
		}
	}
	o := options{haEnabled: true, haNodeID: "node1", haNodes: nodes, port: 9999, portSet: true}
	c, err := clusterFrom(&o, log)
	if err != nil || o.port != 9999 || c.self.HTTPURL != "http://127.0.0.1:9999" {
		t.Fatalf("--port given: %v, port %d, self %+v", err, o.port, c.self)
	}
}

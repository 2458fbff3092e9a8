package main

import (
	"testing"

	"keel/chaos"
)

// newLinkProxy puts a cuttable proxy (the chaos suite's) on one directed
// link between two nodes: a listener on addr that stands for target's port
// in the dialing node's RF_HA_NODES. It is closed at the end of the test.
func newLinkProxy(t *testing.T, addr, target string) *chaos.LinkProxy {
	t.Helper()
	p, err := chaos.NewLinkProxy(addr, target)
	if err != nil {
		t.Fatalf("proxy on %s: %v", addr, err)
	}
	t.Cleanup(p.Close)
	return p
}

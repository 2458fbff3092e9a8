package engine

import (
	"errors"
	"fmt"
	"testing"
)

func kvPut(ns, key, value string, cas *uint64, ttlMs int64) Command {
	c := Command{Kind: CmdKVPut, Topic: ns, KVKey: []byte(key), KVValue: []byte(value), TTLMs: ttlMs}
	if cas != nil {
		c.HasCAS, c.CAS = true, *cas
	}
	return c
}

func kvDel(ns, key string, cas *uint64) Command {
	c := Command{Kind: CmdKVDelete, Topic: ns, KVKey: []byte(key)}
	if cas != nil {
		c.HasCAS, c.CAS = true, *cas
	}
	return c
}

func u64(v uint64) *uint64 { return &v }

// kvGet reads key at nowMs as a reader would: "" and false when absent
// or expired.
func (h *storeHarness) kvGet(ns, key string, nowMs int64) (string, uint64, bool) {
	h.t.Helper()
	n, ok := h.s.KV(ns)
	if !ok {
		return "", 0, false
	}
	e, ok := h.s.KVLookup(n, []byte(key))
	if !ok || e.Expired(nowMs) {
		return "", 0, false
	}
	v, err := h.s.KVValue(n, e, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(v), e.CAS, true
}

func TestKVCompareAndSet(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	steps := []struct {
		name    string
		cmd     Command
		wantErr error
		wantCAS uint64 // new cas, or the current one on a mismatch
		value   string // what a get returns after ("" = absent)
	}{
		{"create only, absent", kvPut("ns", "a/b", "1", u64(0), 0), nil, 1, "1"},
		{"create only, present", kvPut("ns", "a/b", "x", u64(0), 0), ErrCASMismatch, 1, "1"},
		{"unconditional", kvPut("ns", "a/b", "2", nil, 0), nil, 2, "2"},
		{"cas matches", kvPut("ns", "a/b", "3", u64(2), 0), nil, 3, "3"},
		{"cas stale", kvPut("ns", "a/b", "x", u64(2), 0), ErrCASMismatch, 3, "3"},
		{"cas on a missing key", kvPut("ns", "zz", "x", u64(5), 0), ErrCASMismatch, 0, "3"},
		{"cas on a missing namespace", kvPut("none", "zz", "x", u64(5), 0), ErrCASMismatch, 0, "3"},
		{"delete with a stale cas", kvDel("ns", "a/b", u64(1)), ErrCASMismatch, 3, "3"},
		{"delete with the cas", kvDel("ns", "a/b", u64(3)), nil, 3, ""},
		// Above the cas the key had before its delete: a cas read then
		// never matches again.
		{"recreate goes on above the deleted cas", kvPut("ns", "a/b", "4", u64(0), 0), nil, 4, "4"},
		{"the old cas does not match the new life", kvPut("ns", "a/b", "x", u64(1), 0), ErrCASMismatch, 4, "4"},
		{"empty value", kvPut("ns", "a/b", "", nil, 0), nil, 5, ""},
	}
	for _, st := range steps {
		r := h.apply(1000, st.cmd)[0]
		if !errors.Is(r.Err, st.wantErr) || r.CAS != st.wantCAS {
			t.Fatalf("%s: err %v cas %d; want %v, %d", st.name, r.Err, r.CAS, st.wantErr, st.wantCAS)
		}
		if r.Err != nil && r.ExpectedCAS != st.cmd.CAS {
			t.Fatalf("%s: expected cas %d in the mismatch, want %d", st.name, r.ExpectedCAS, st.cmd.CAS)
		}
		if v, _, _ := h.kvGet("ns", "a/b", 1000); v != st.value {
			t.Fatalf("%s: value %q, want %q", st.name, v, st.value)
		}
	}
	// Several commands in one entry see each other (CAS chains).
	r := h.apply(1000, kvPut("ns", "c", "1", u64(0), 0), kvPut("ns", "c", "2", u64(1), 0), kvPut("ns", "c", "x", u64(1), 0))
	if r[0].Err != nil || r[1].Err != nil || !errors.Is(r[2].Err, ErrCASMismatch) || r[2].CAS != 2 {
		t.Fatalf("CAS chain in one entry: %+v", r)
	}
	for _, c := range []Command{kvPut("ns", "", "v", nil, 0), kvPut("ns", string(make([]byte, KVKeyBytesMax+1)), "v", nil, 0)} {
		if r := h.apply(1000, c)[0]; !errors.Is(r.Err, ErrInvalidKey) {
			t.Fatalf("bad key: %v", r.Err)
		}
	}
	if r := h.apply(1000, kvPut("bad/ns", "k", "v", nil, 0))[0]; !errors.Is(r.Err, ErrInvalidTopic) {
		t.Fatalf("bad namespace: %v", r.Err)
	}
}

func TestKVTTL(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	h.apply(1000, kvPut("ns", "t", "v", nil, 500), kvPut("ns", "keep", "v", nil, 0))
	if _, _, ok := h.kvGet("ns", "t", 1499); !ok {
		t.Fatal("expired before its TTL")
	}
	if _, _, ok := h.kvGet("ns", "t", 1500); ok {
		t.Fatal("served after its TTL")
	}
	// At the leader's time in the entry, an expired key is absent: a
	// create-only put succeeds, above the expired cas.
	if r := h.apply(1600, kvPut("ns", "t", "w", u64(0), 0))[0]; r.Err != nil || r.CAS != 2 {
		t.Fatalf("create over an expired key: %+v", r)
	}
	h.apply(2000, kvPut("ns", "e1", "v", nil, 100), kvPut("ns", "e2", "v", nil, 100))
	if got := h.s.KVExpiries(2050, 100); len(got) != 0 {
		t.Fatalf("expiries before the TTL: %+v", got)
	}
	cmds := h.s.KVExpiries(2200, 100)
	if len(cmds) != 1 || len(cmds[0].KVExpired) != 2 {
		t.Fatalf("expiries: %+v", cmds)
	}
	// e2 is written again before the purge applies: it stays.
	h.apply(2300, kvPut("ns", "e2", "again", nil, 0))
	if r := h.apply(2300, *cmds[0])[0]; r.Count != 1 {
		t.Fatalf("purge removed %d keys, want 1", r.Count)
	}
	n, _ := h.s.KV("ns")
	if _, ok := h.s.KVLookup(n, []byte("e1")); ok {
		t.Fatal("e1 still indexed after the purge")
	}
	if v, _, ok := h.kvGet("ns", "e2", 1<<40); !ok || v != "again" {
		t.Fatalf("e2 after the purge: %q %v", v, ok)
	}
	// e1 is a deleted marker (its cas goes on) until its retention
	// passes; then a purge forgets it.
	if r := h.apply(2400, kvPut("ns", "e1", "new life", u64(0), 0))[0]; r.CAS != 2 {
		t.Fatalf("e1 recreated at cas %d, want 2", r.CAS)
	}
	h.apply(2500, kvDel("ns", "e1", nil))
	keys := h.s.KVLen(n)
	purge := h.s.KVExpiries(2500+KVTombstoneRetentionMs+1, 100)
	if len(purge) == 0 {
		t.Fatal("no purge of deleted markers past their retention")
	}
	for _, c := range purge {
		h.apply(2500+KVTombstoneRetentionMs+1, *c)
	}
	if got := h.s.KVLen(n); got >= keys {
		t.Fatalf("%d index entries after the markers' retention passed, %d before", got, keys)
	}
	if r := h.apply(2500+KVTombstoneRetentionMs+2, kvPut("ns", "e1", "third", u64(0), 0))[0]; r.CAS != 1 {
		t.Fatalf("e1 after its marker was forgotten: cas %d, want 1", r.CAS)
	}
}

func TestKVListAndRestart(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	var cmds []Command
	for i := range 120 {
		cmds = append(cmds, kvPut("ns", fmt.Sprintf("k/%03d", i), fmt.Sprintf("v%d-%0100d", i, 0), nil, 0))
	}
	cmds = append(cmds, kvPut("ns", "other", "o", nil, 0), kvPut("ns2", "x", "y", nil, 0))
	h.apply(1000, cmds...)
	h.apply(1001, kvPut("ns", "k/005", "five", nil, 0), kvDel("ns", "k/006", nil))
	check := func(when string) {
		t.Helper()
		n, ok := h.s.KV("ns")
		if !ok {
			t.Fatalf("%s: no namespace", when)
		}
		var keys []string
		after := ""
		for range 100 {
			page, more := h.s.KVList(n, "k/", after, 50)
			for _, e := range page {
				keys = append(keys, e.Key)
			}
			if !more {
				break
			}
			after = page[len(page)-1].Key
		}
		if len(keys) != 119 || keys[0] != "k/000" || keys[5] != "k/005" || keys[6] != "k/007" {
			t.Fatalf("%s: listed %d keys: %v...", when, len(keys), keys[:min(8, len(keys))])
		}
		if v, cas, ok := h.kvGet("ns", "k/005", 1001); !ok || v != "five" || cas != 2 {
			t.Fatalf("%s: k/005 = %q cas %d", when, v, cas)
		}
		if v, _, ok := h.kvGet("ns", "k/119", 1001); !ok || v != fmt.Sprintf("v119-%0100d", 0) {
			t.Fatalf("%s: k/119 = %q", when, v)
		}
		if _, _, ok := h.kvGet("ns", "k/006", 1001); ok {
			t.Fatalf("%s: deleted key readable", when)
		}
		if v, _, ok := h.kvGet("ns2", "x", 1001); !ok || v != "y" {
			t.Fatalf("%s: ns2/x = %q", when, v)
		}
	}
	check("before restart")
	h.reopenSmall()
	check("after restart from the checkpoint")
	// Writes after the checkpoint, replayed: simulated by applying more and
	// reopening without a checkpoint is replication's job; here the index
	// and the log must agree after a second checkpoint too.
	h.apply(1002, kvPut("ns", "k/005", "five", nil, 0))
	h.reopenSmall()
	if _, cas, _ := h.kvGet("ns", "k/005", 1001); cas != 3 {
		t.Fatalf("k/005 cas %d after a second restart, want 3", cas)
	}
	// The deleted marker survives too: k/006 was deleted at cas 1.
	if r := h.apply(1003, kvPut("ns", "k/006", "again", u64(0), 0))[0]; r.CAS != 2 {
		t.Fatalf("k/006 recreated at cas %d after restarts, want 2 (above its deleted cas 1)", r.CAS)
	}
}

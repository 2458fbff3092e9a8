package engine

import (
	"fmt"
	"strings"
	"testing"

	"keel/engine/logstore"
	"keel/engine/record"
)

// readRecords reads a partition that may hold holes: offset → (key, value).
func readRecords(t *testing.T, p *Partition) map[uint64][2]string {
	t.Helper()
	out := map[uint64][2]string{}
	if _, err := p.Log.Read(0, 1<<30, func(fr logstore.Frame) bool {
		m, err := record.DecodeMessage(fr.Offset, fr.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out[fr.Offset] = [2]string{string(m.Key), string(m.Value)}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func keyed(topic string, key, value string) Command {
	return Command{Kind: CmdProduce, Topic: topic, Partition: 0, Messages: []MessageIn{{Key: []byte(key), Value: []byte(value)}}}
}

func TestCompactTopic(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	h.apply(1, Command{Kind: CmdCreateTopic, Topic: "c", Partitions: 1},
		Command{Kind: CmdRetention, Topic: "c", Partition: -1, TTLMs: -1, MaxBytes: -1, Cleanup: CleanupCompact + 1})
	// 20 keys written 15 times each, keyless records between, a tombstone
	// for k0 (old) and k1 (recent), then more data so they are sealed.
	pad := strings.Repeat("p", 60)
	latest := map[string]uint64{}
	keyless := map[uint64]bool{}
	ts := int64(1000)
	for round := range 15 {
		for k := range 20 {
			ts++
			r := h.apply(ts, keyed("c", fmt.Sprintf("k%d", k), fmt.Sprintf("r%d-%s", round, pad)))[0]
			latest[fmt.Sprintf("k%d", k)] = r.Offset
		}
		ts++
		r := h.apply(ts, keyed("c", "", "keyless"))[0]
		keyless[r.Offset] = true
	}
	latest["k0"] = h.apply(2000, keyed("c", "k0", ""))[0].Offset    // an old tombstone
	latest["k1"] = h.apply(900_000, keyed("c", "k1", ""))[0].Offset // a recent one
	for i := range 100 {
		h.apply(900_001+int64(i), keyed("c", fmt.Sprintf("tail%d", i), pad))
	}
	p := h.partition("c", 0)
	end := p.Log.NextOffset()
	before := p.Log.Bytes()
	if err := h.s.Compact(900_000, 1000, nil); err != nil {
		t.Fatal(err)
	}
	if st := h.s.CompactionStats(); st.Segments != 0 {
		t.Fatalf("compacted without a checkpoint: %+v", st)
	}
	if err := h.s.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	// Tombstones older than 1 s at time 900,500 go; the recent one stays.
	if err := h.s.Compact(900_500, 1000, nil); err != nil {
		t.Fatal(err)
	}
	st := h.s.CompactionStats()
	if st.Segments == 0 || st.Removed < 200 || p.Log.Bytes() >= before {
		t.Fatalf("compaction: %+v, %d bytes before, %d after", st, before, p.Log.Bytes())
	}
	check := func(how string) {
		t.Helper()
		got := readRecords(t, p)
		sealedEnd := uint64(0)
		for _, sg := range p.Log.Segments() {
			if sg.Sealed {
				sealedEnd = sg.Next
			}
		}
		for off, kv := range got {
			key := kv[0]
			switch {
			case key == "":
				if !keyless[off] {
					t.Fatalf("%s: keyless record at %d was never written", how, off)
				}
			case off < sealedEnd && latest[key] != off && !strings.HasPrefix(key, "tail"):
				t.Fatalf("%s: superseded record of %s at %d kept (newest at %d)", how, key, off, latest[key])
			}
		}
		for k, off := range latest {
			_, kept := got[off]
			if want := k != "k0"; kept != want {
				t.Fatalf("%s: newest record of %s at %d kept %v, want %v", how, k, off, kept, want)
			}
		}
		for off := range keyless {
			if _, ok := got[off]; !ok {
				t.Fatalf("%s: keyless record at %d removed", how, off)
			}
		}
		if p.Log.NextOffset() != end {
			t.Fatalf("%s: end %d, want %d", how, p.Log.NextOffset(), end)
		}
	}
	check("compacted")
	h.reopenSmall()
	p = h.partition("c", 0)
	check("after a restart")

	// A pass asked to stop does nothing; once k1's tombstone is due, a pass
	// runs again with no new data and removes it.
	stop := make(chan struct{})
	close(stop)
	if err := h.s.Compact(902_000, 1000, stop); err != nil {
		t.Fatal(err)
	}
	if _, kept := readRecords(t, p)[latest["k1"]]; !kept {
		t.Fatal("a stopped pass removed the tombstone")
	}
	if err := h.s.Compact(902_000, 1000, nil); err != nil {
		t.Fatal(err)
	}
	if _, kept := readRecords(t, p)[latest["k1"]]; kept {
		t.Fatal("the tombstone is still there once due")
	}
}

func TestCompactKV(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	pad := strings.Repeat("v", 80)
	for round := range 20 {
		var cmds []Command
		for k := range 10 {
			cmds = append(cmds, kvPut("ns", fmt.Sprintf("k%d", k), fmt.Sprintf("r%d-%s", round, pad), nil, 0))
		}
		h.apply(int64(1000+round), cmds...)
	}
	h.apply(2000, kvDel("ns", "k9", nil))
	for i := range 60 { // more versions, so the rest is sealed
		h.apply(int64(3000+i), kvPut("ns", fmt.Sprintf("t%d", i), pad, nil, 0))
	}
	if err := h.s.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	n, _ := h.s.KV("ns")
	before := n.part.Log.Bytes()
	if err := h.s.Compact(5000, 1000, nil); err != nil {
		t.Fatal(err)
	}
	if after := n.part.Log.Bytes(); after >= before/2 {
		t.Fatalf("KV log %d bytes before compaction, %d after", before, after)
	}
	check := func(how string) {
		t.Helper()
		for k := range 9 {
			if v, _, ok := h.kvGet("ns", fmt.Sprintf("k%d", k), 0); !ok || v != "r19-"+pad {
				t.Fatalf("%s: k%d = %.10q %v", how, k, v, ok)
			}
		}
		if _, _, ok := h.kvGet("ns", "k9", 0); ok {
			t.Fatalf("%s: deleted key readable", how)
		}
	}
	check("compacted")
	h.reopenSmall()
	check("after a restart")
}

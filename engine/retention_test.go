package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel/engine/logstore"
)

// smallSegments: 4 KiB segments, so a few hundred messages span many.
var smallSegments = logstore.LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 256, BatchBytesMax: 2 << 10}

func newSmallSegmentHarness(t *testing.T, dir string) *storeHarness {
	s, _, err := OpenStore(StoreConfig{Dir: dir, Partition: smallSegments}, openBackend(t, "syscall"))
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	idx, _ := s.Applied()
	return &storeHarness{t: t, s: s, index: idx, dir: dir}
}

func (h *storeHarness) reopenSmall() {
	h.t.Helper()
	if err := h.s.Checkpoint(nil); err != nil {
		h.t.Fatal(err)
	}
	h.s.Close()
	s, _, err := OpenStore(StoreConfig{Dir: h.dir, Partition: smallSegments}, openBackend(h.t, "syscall"))
	if err != nil {
		h.t.Fatalf("reopen: %v", err)
	}
	h.t.Cleanup(func() { s.Close() })
	h.s = s
	h.index, _ = s.Applied()
}

// fill produces n messages of 100 bytes to topic/p, one entry each, at
// times t0, t0+1, ...
func (h *storeHarness) fill(topic string, p int32, n int, t0 int64) {
	h.t.Helper()
	for i := range n {
		h.apply(t0+int64(i), produce(topic, p, "", strings.Repeat("x", 100)))
	}
}

func (h *storeHarness) partition(topic string, p int32) *Partition {
	h.t.Helper()
	tp, ok := h.s.Topic(topic)
	if !ok {
		h.t.Fatalf("no topic %s", topic)
	}
	return tp.Partitions[p]
}

// waitJanitor waits until the janitor has nothing pending.
func (h *storeHarness) waitJanitor() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, pending := h.s.JanitorStats(); pending == 0 {
			time.Sleep(20 * time.Millisecond) // the set it took may still be in Remove
			if _, _, pending := h.s.JanitorStats(); pending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatal("janitor still busy after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeleteBefore(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	h.apply(1, Command{Kind: CmdCreateTopic, Topic: "a", Partitions: 2})
	h.fill("a", 0, 300, 1000)
	p := h.partition("a", 0)
	pdir := p.Log.Dir()
	before := dirBytes(t, pdir)

	cases := []struct {
		name        string
		offset      uint64
		wantDeleted uint64
		wantStart   uint64
	}{
		{"inside the log", 120, 120, 120},
		{"below the start: nothing", 50, 0, 120},
		{"the same offset again", 120, 0, 120},
		{"further", 200, 80, 200},
		{"past the end: clamped to it", 1 << 40, 100, 300},
	}
	var freed int64
	for _, tc := range cases {
		r := h.apply(2000, Command{Kind: CmdDeleteBefore, Topic: "a", Partition: 0, Offset: tc.offset})[0]
		if r.Err != nil || r.Deleted != tc.wantDeleted || p.Log.StartOffset() != tc.wantStart {
			t.Fatalf("%s: deleted %d (err %v), start %d; want %d, %d", tc.name, r.Deleted, r.Err, p.Log.StartOffset(), tc.wantDeleted, tc.wantStart)
		}
		freed += r.FreedBytes
	}
	h.waitJanitor()
	after := dirBytes(t, pdir)
	if freed == 0 || before-after < freed {
		t.Fatalf("disk: %d bytes before, %d after, %d reported freed", before, after, freed)
	}
	// The other partition is untouched; errors change nothing.
	for _, c := range []struct {
		cmd  Command
		want error
	}{
		{Command{Kind: CmdDeleteBefore, Topic: "nope", Partition: 0, Offset: 1}, ErrUnknownTopic},
		{Command{Kind: CmdDeleteBefore, Topic: "a", Partition: 2, Offset: 1}, ErrUnknownPartition},
	} {
		if r := h.apply(3000, c.cmd)[0]; !errors.Is(r.Err, c.want) {
			t.Fatalf("%+v: %v, want %v", c.cmd, r.Err, c.want)
		}
	}
	if got := h.partition("a", 1).Log.StartOffset(); got != 0 {
		t.Fatalf("partition 1 start %d", got)
	}
	// New writes continue at the end; the start survives a restart.
	h.fill("a", 0, 5, 4000)
	h.reopenSmall()
	p = h.partition("a", 0)
	if p.Log.StartOffset() != 300 || p.Log.NextOffset() != 305 {
		t.Fatalf("after reopen: start %d, end %d; want 300, 305", p.Log.StartOffset(), p.Log.NextOffset())
	}
	if got := h.values("a", 0); len(got) != 5 {
		t.Fatalf("after reopen: %d values readable, want 5", len(got))
	}
}

// A delete-before in the same entry as a produce applies after it.
func TestDeleteBeforeAfterStagedRecords(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	h.apply(1, Command{Kind: CmdCreateTopic, Topic: "a", Partitions: 1})
	r := h.apply(2, produce("a", 0, "", "1", "2", "3"), Command{Kind: CmdDeleteBefore, Topic: "a", Partition: 0, Offset: 2},
		produce("a", 0, "", "4"))
	if r[1].Deleted != 2 || r[3-1].Err != nil || r[2].Offset != 3 {
		t.Fatalf("results %+v", r)
	}
	if got := h.values("a", 0); strings.Join(got, ",") != "3,4" {
		t.Fatalf("values %v, want 3,4", got)
	}
}

func TestRetentionPolicy(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	h.apply(1, Command{Kind: CmdCreateTopic, Topic: "a", Partitions: 3}, Command{Kind: CmdCreateTopic, Topic: "b", Partitions: 1})
	pol := func(topic string, p int32) RetentionPolicy { return h.partition(topic, p).Retention() }
	steps := []struct {
		cmd  Command
		want map[string]RetentionPolicy // "topic/p" → policy
	}{
		{Command{Kind: CmdRetention, Topic: "a", Partition: 1, TTLMs: 60000, MaxBytes: -1},
			map[string]RetentionPolicy{"a/0": {}, "a/1": {TTLMs: 60000}, "b/0": {}}},
		{Command{Kind: CmdRetention, Topic: "a", Partition: -1, TTLMs: -1, MaxBytes: 1 << 20},
			map[string]RetentionPolicy{"a/0": {MaxBytes: 1 << 20}, "a/1": {TTLMs: 60000, MaxBytes: 1 << 20}, "b/0": {}}},
		{Command{Kind: CmdRetention, Topic: AllTopics, Partition: -1, TTLMs: 5000, MaxBytes: -1},
			map[string]RetentionPolicy{"a/0": {TTLMs: 5000, MaxBytes: 1 << 20}, "b/0": {TTLMs: 5000}}},
		{Command{Kind: CmdRetention, Topic: "a", Partition: 2, TTLMs: 0, MaxBytes: 0},
			map[string]RetentionPolicy{"a/2": {}, "a/1": {TTLMs: 5000, MaxBytes: 1 << 20}}},
	}
	for i, st := range steps {
		if r := h.apply(10, st.cmd)[0]; r.Err != nil {
			t.Fatalf("step %d: %v", i, r.Err)
		}
		for k, want := range st.want {
			topic, ps, _ := strings.Cut(k, "/")
			if got := pol(topic, int32(ps[0]-'0')); got != want {
				t.Fatalf("step %d: %s policy %+v, want %+v", i, k, got, want)
			}
		}
	}
	// A topic created after "*" starts with its policy.
	h.apply(11, Command{Kind: CmdCreateTopic, Topic: "c", Partitions: 1})
	if got := pol("c", 0); got != (RetentionPolicy{TTLMs: 5000}) {
		t.Fatalf("new topic's policy %+v", got)
	}
	for _, c := range []struct {
		cmd  Command
		want error
	}{
		{Command{Kind: CmdRetention, Topic: "nope", Partition: -1, TTLMs: 1, MaxBytes: -1}, ErrUnknownTopic},
		{Command{Kind: CmdRetention, Topic: "a", Partition: 3, TTLMs: 1, MaxBytes: -1}, ErrUnknownPartition},
	} {
		if r := h.apply(12, c.cmd)[0]; !errors.Is(r.Err, c.want) {
			t.Fatalf("%+v: %v, want %v", c.cmd, r.Err, c.want)
		}
	}
	// Policies, the default and a clear survive a restart.
	h.reopenSmall()
	for k, want := range map[string]RetentionPolicy{"a/0": {TTLMs: 5000, MaxBytes: 1 << 20}, "a/2": {}, "c/0": {TTLMs: 5000}} {
		topic, ps, _ := strings.Cut(k, "/")
		if got := pol(topic, int32(ps[0]-'0')); got != want {
			t.Fatalf("after reopen: %s policy %+v, want %+v", k, got, want)
		}
	}
	if got := h.s.DefaultRetention(); got != (RetentionPolicy{TTLMs: 5000}) {
		t.Fatalf("after reopen: default %+v", got)
	}
}

func TestRetentionTrims(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	h.apply(1, Command{Kind: CmdCreateTopic, Topic: "a", Partitions: 2})
	h.fill("a", 0, 300, 10_000) // timestamps 10000..10299
	h.fill("a", 1, 300, 10_000)
	if trims := h.s.RetentionTrims(1 << 40); len(trims) != 0 {
		t.Fatalf("trims without a policy: %+v", trims)
	}
	segs := h.partition("a", 0).Log.Segments()
	// TTL on partition 0: at time 10150+ttl, the sealed segments whose
	// newest record is older than 10150 go.
	h.apply(2, Command{Kind: CmdRetention, Topic: "a", Partition: 0, TTLMs: 1000, MaxBytes: -1})
	var want uint64
	for _, sg := range segs {
		if sg.Sealed && sg.MaxTimestampMs < 10150 {
			want = sg.Next
		}
	}
	trims := h.s.RetentionTrims(11150)
	if len(trims) != 1 || trims[0].Partition != 0 || trims[0].Offset != want || want == 0 {
		t.Fatalf("TTL trims %+v, want partition 0 before %d", trims, want)
	}
	// Size on partition 1: keep at most 10 KiB of whole segments.
	h.apply(3, Command{Kind: CmdRetention, Topic: "a", Partition: 1, TTLMs: -1, MaxBytes: 10 << 10})
	for _, c := range h.s.RetentionTrims(11150) {
		r := h.apply(11150, *c)[0]
		if r.Err != nil || r.Ignored {
			t.Fatalf("trim %+v: %+v", c, r)
		}
	}
	if got := h.partition("a", 1).Log.Bytes(); got > 10<<10 {
		t.Fatalf("partition 1 holds %d bytes after the size trim, policy 10 KiB", got)
	}
	if got := h.partition("a", 0).Log.StartOffset(); got != want {
		t.Fatalf("partition 0 starts at %d after the TTL trim, want %d", got, want)
	}
	// Nothing more to do until time moves on.
	if trims := h.s.RetentionTrims(11150); len(trims) != 0 {
		t.Fatalf("trims after trimming: %+v", trims)
	}
	// A trim proposed before the policy changed keeps everything: a
	// raised TTL, then a clear.
	trims = h.s.RetentionTrims(1 << 40)
	h.apply(4, Command{Kind: CmdRetention, Topic: "a", Partition: 0, TTLMs: 1 << 50, MaxBytes: -1})
	start0 := h.partition("a", 0).Log.StartOffset()
	for _, c := range trims {
		if c.Partition != 0 {
			continue
		}
		if r := h.apply(5, *c)[0]; !r.Ignored || h.partition("a", 0).Log.StartOffset() != start0 {
			t.Fatalf("trim under a lower TTL applied after the TTL was raised: %+v", r)
		}
	}
	h.apply(4, Command{Kind: CmdRetention, Topic: "a", Partition: -1, TTLMs: 0, MaxBytes: 0})
	start := h.partition("a", 0).Log.StartOffset()
	for _, c := range trims {
		if r := h.apply(5, *c)[0]; !r.Ignored {
			t.Fatalf("trim after the clear not ignored: %+v", r)
		}
	}
	if got := h.partition("a", 0).Log.StartOffset(); got != start {
		t.Fatalf("start moved from %d to %d after the policy was cleared", start, got)
	}
}

func TestExpiredBefore(t *testing.T) {
	h := newSmallSegmentHarness(t, t.TempDir())
	h.apply(1, Command{Kind: CmdCreateTopic, Topic: "a", Partitions: 1})
	p := h.partition("a", 0)
	if _, ok := p.ExpiredBefore(5000); ok {
		t.Fatal("a partition without TTL reports a cutoff")
	}
	h.apply(2, Command{Kind: CmdRetention, Topic: "a", Partition: 0, TTLMs: 1000, MaxBytes: -1})
	if cut, ok := p.ExpiredBefore(5000); !ok || cut != 4000 {
		t.Fatalf("cutoff %d, %v; want 4000", cut, ok)
	}
}

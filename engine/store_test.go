package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"keel/engine/logstore"
	"keel/engine/record"
	"keel/engine/vfs"
)

// testLimits: a 1 s idempotency window and 3 keys, to test eviction.
var testLimits = EntryLimits{IdempotencyWindowMs: 1000, IdempotencyKeysMax: 3, PartitionsMax: PartitionsMaxDefault, TopicsMax: 5,
	PartitionsTotalMax: 12, OffsetsMax: 4}

func entry(nowMs int64, cmds ...Command) []byte {
	b := AppendEntryHeader(nil, nowMs, testLimits)
	for i := range cmds {
		b = AppendCommand(b, &cmds[i])
	}
	return b
}

func produce(topic string, partition int32, idem string, values ...string) Command {
	c := Command{Kind: CmdProduce, Topic: topic, Partition: partition, AutoCreatePartitions: 4, IdempotencyKey: []byte(idem)}
	for _, v := range values {
		c.Messages = append(c.Messages, MessageIn{Value: []byte(v)})
	}
	return c
}

type storeHarness struct {
	t     *testing.T
	s     *Store
	index uint64
	dir   string
}

func newStoreHarness(t *testing.T, dir string) *storeHarness {
	return newStoreHarnessFS(t, dir, nil)
}

// newStoreHarnessFS opens the store with fs for its metadata I/O.
func newStoreHarnessFS(t *testing.T, dir string, fs vfs.FS) *storeHarness {
	s, _, err := OpenStore(StoreConfig{Dir: dir, FS: fs}, openBackend(t, "syscall"))
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	idx, _ := s.Applied()
	return &storeHarness{t: t, s: s, index: idx, dir: dir}
}

func (h *storeHarness) apply(nowMs int64, cmds ...Command) []Result {
	h.t.Helper()
	for i := range cmds {
		cmds[i].ReqID = uint64(i + 1)
	}
	h.index++
	res, err := h.s.ApplyEntry(h.index, 1, entry(nowMs, cmds...), nil)
	if err != nil {
		h.t.Fatalf("ApplyEntry: %v", err)
	}
	if len(res) != len(cmds) {
		h.t.Fatalf("%d results for %d commands", len(res), len(cmds))
	}
	return res
}

// checkpointAndReopen writes a state checkpoint, closes the store and
// opens it again from that checkpoint.
func (h *storeHarness) checkpointAndReopen() {
	h.t.Helper()
	if err := h.s.Checkpoint(nil); err != nil {
		h.t.Fatal(err)
	}
	h.s.Close()
	s, _, err := OpenStore(StoreConfig{Dir: h.dir}, openBackend(h.t, "syscall"))
	if err != nil {
		h.t.Fatalf("reopen: %v", err)
	}
	h.s = s
	h.index, _ = s.Applied()
}

func (h *storeHarness) values(topic string, p int32) []string {
	h.t.Helper()
	tp, ok := h.s.Topic(topic)
	if !ok {
		h.t.Fatalf("no topic %s", topic)
	}
	var out []string
	for off, payload := range readAllOrdered(h.t, tp.Partitions[p].Log) {
		m, err := record.DecodeMessage(uint64(off), payload)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, string(m.Value))
	}
	return out
}

// readAllOrdered reads the whole log and checks its offsets are dense.
func readAllOrdered(t *testing.T, l *logstore.Log) [][]byte {
	t.Helper()
	var out [][]byte
	want := l.StartOffset()
	for from := want; ; {
		next, err := l.Read(from, 1<<16, func(fr logstore.Frame) bool {
			if fr.Offset != want {
				t.Fatalf("read offset %d, want %d", fr.Offset, want)
			}
			want++
			out = append(out, append([]byte(nil), fr.Payload...))
			return true
		})
		if err != nil {
			t.Fatalf("Read(%d): %v", from, err)
		}
		if next == from {
			return out
		}
		from = next
	}
}

func TestStoreApply(t *testing.T) {
	h := newStoreHarness(t, t.TempDir())
	res := h.apply(1000,
		Command{Kind: CmdCreateTopic, Topic: "events", Partitions: 2},
		Command{Kind: CmdCreateTopic, Topic: "events", Partitions: 2},
		Command{Kind: CmdCreateTopic, Topic: "events", Partitions: 3},
		Command{Kind: CmdCreateTopic, Topic: "bad/name", Partitions: 1},
		Command{Kind: CmdCreateTopic, Topic: "zero", Partitions: 0},
	)
	wantErr := []error{nil, nil, ErrTopicExists, ErrInvalidTopic, ErrInvalidPartitions}
	for i, w := range wantErr {
		if !errors.Is(res[i].Err, w) {
			t.Errorf("create %d: %v, want %v", i, res[i].Err, w)
		}
	}
	if !res[0].Created || res[1].Created {
		t.Errorf("Created flags: %v %v", res[0].Created, res[1].Created)
	}
	res = h.apply(1001,
		produce("events", 0, "", "a"),
		produce("events", 0, "", "b", "c"),
		produce("events", 1, "", "x"),
		produce("events", 5, "", "out of range"),
		produce("events", 0, "k1", "first"),
		produce("events", 0, "k1", "retry"), // same entry: a duplicate already
		produce("auto", -1, "", "r0"),
		produce("auto", -1, "", "r1"),
	)
	checks := []struct {
		part  int32
		off   uint64
		count int
		dup   bool
		err   error
	}{{0, 0, 1, false, nil}, {0, 1, 2, false, nil}, {1, 0, 1, false, nil}, {0, 0, 0, false, ErrInvalidPartition},
		{0, 3, 1, false, nil}, {0, 3, 1, true, nil}, {0, 0, 1, false, nil}, {1, 0, 1, false, nil}}
	for i, c := range checks {
		r := res[i]
		if !errors.Is(r.Err, c.err) || (c.err == nil && (r.Partition != c.part || r.Offset != c.off || r.Count != c.count || r.Duplicate != c.dup)) {
			t.Errorf("produce %d: got %+v, want %+v", i, r, c)
		}
	}
	if got := fmt.Sprint(h.values("events", 0)); got != "[a b c first]" {
		t.Fatalf("partition 0 holds %s", got)
	}
	res = h.apply(1002,
		Command{Kind: CmdCommit, Topic: "events", Group: "g", Partition: 0, Offset: 2},
		Command{Kind: CmdCommit, Topic: "events", Group: "g", Partition: 0, Offset: 1},
		Command{Kind: CmdCommit, Topic: "events", Group: "g", Partition: 0, Offset: 5},
		Command{Kind: CmdCommit, Topic: "events", Group: "g", Partition: 9, Offset: 0},
		Command{Kind: CmdCommit, Topic: "nope", Group: "g", Partition: 0, Offset: 0},
	)
	if res[0].Err != nil || res[0].Ignored || !res[1].Ignored || res[1].Offset != 2 ||
		!errors.Is(res[2].Err, ErrOffsetOutOfRange) || !errors.Is(res[3].Err, ErrUnknownPartition) || !errors.Is(res[4].Err, ErrUnknownTopic) {
		t.Fatalf("commit results: %+v", res)
	}
	if off, ok := h.s.Committed("events", "g", 0); !ok || off != 2 {
		t.Fatalf("committed %d %v, want 2", off, ok)
	}
}

// TestEntryVersionRules: an entry applies under the rules of the version
// it was proposed with, so a replay of an older WAL decides as before.
func TestEntryVersionRules(t *testing.T) {
	h := newStoreHarness(t, t.TempDir())
	h.apply(1, produce("t", 0, "", "a", "b")) // log end offset 2
	withVersion := func(v byte, cmds ...Command) []Result {
		b := entry(2, cmds...)
		if v == 1 { // a version-1 header has no node-wide limits
			b = append(b[:entryHeaderBytesV1:entryHeaderBytesV1], b[entryHeaderBytes:]...)
		}
		b[0] = v
		h.index++
		res, err := h.s.ApplyEntry(h.index, 1, b, nil)
		if err != nil {
			t.Fatalf("ApplyEntry v%d: %v", v, err)
		}
		return res
	}
	cases := []struct {
		version   byte
		cmd       Command
		err       error
		topicMade string // a topic that must exist afterwards ("" = none checked)
		noTopic   string // a topic that must not exist afterwards
	}{
		{1, Command{Kind: CmdCommit, Topic: "t", Group: "g", Partition: 0, Offset: 2}, ErrOffsetOutOfRange, "", ""},
		{2, Command{Kind: CmdCommit, Topic: "t", Group: "g", Partition: 0, Offset: 2}, nil, "", ""},
		{2, Command{Kind: CmdCommit, Topic: "t", Group: "g", Partition: 0, Offset: 3}, ErrOffsetOutOfRange, "", ""},
		{1, produce("ghost1", 4, "", "x"), ErrInvalidPartition, "ghost1", ""},
		{2, produce("ghost2", 4, "", "x"), ErrInvalidPartition, "", "ghost2"},
		{2, produce("ghost3", 3, "", "x"), nil, "ghost3", ""},
	}
	for i, c := range cases {
		c.cmd.ReqID = 1
		res := withVersion(c.version, c.cmd)
		if !errors.Is(res[0].Err, c.err) {
			t.Errorf("case %d (v%d): err %v, want %v", i, c.version, res[0].Err, c.err)
		}
		if _, ok := h.s.Topic(c.topicMade); c.topicMade != "" && !ok {
			t.Errorf("case %d: topic %s missing", i, c.topicMade)
		}
		if _, ok := h.s.Topic(c.noTopic); c.noTopic != "" && ok {
			t.Errorf("case %d: a refused produce created topic %s", i, c.noTopic)
		}
	}
	for _, v := range []byte{0, 3} {
		h.index++
		b := entry(3, produce("t", 0, "", "z"))
		b[0] = v
		if _, err := h.s.ApplyEntry(h.index, 1, b, nil); err == nil {
			t.Errorf("entry version %d: want an error", v)
		}
		h.index-- // refused: the applied index did not move
	}
}

// TestNodeWideLimits: creates past PartitionsTotalMax and new consumer
// offsets past OffsetsMax are refused in apply, from the limits in the
// entry, and change nothing; existing offsets still move.
func TestNodeWideLimits(t *testing.T) {
	h := newStoreHarness(t, t.TempDir()) // 12 partitions, 4 offsets
	create := func(name string, n int) Command { return Command{Kind: CmdCreateTopic, Topic: name, Partitions: n} }
	commit := func(group string, off uint64) Command {
		return Command{Kind: CmdCommit, Topic: "a", Group: group, Partition: 0, Offset: off}
	}
	res := h.apply(1, create("a", 8), create("b", 5), create("c", 4), produce("auto", 0, "", "x"), produce("a", 0, "", "m1", "m2"))
	want := []error{nil, ErrTooManyPartitions, nil, ErrTooManyPartitions, nil}
	for i, w := range want {
		if !errors.Is(res[i].Err, w) {
			t.Errorf("command %d: %v, want %v", i, res[i].Err, w)
		}
	}
	if _, ok := h.s.Topic("b"); ok {
		t.Fatal("a refused create made the topic")
	}
	if topics, parts, _ := h.s.Counts(); topics != 2 || parts != 12 {
		t.Fatalf("counts: %d topics, %d partitions; want 2, 12", topics, parts)
	}
	res = h.apply(2, commit("g1", 0), commit("g2", 0), commit("g3", 0), commit("g4", 0), commit("g5", 0), commit("g1", 1))
	want = []error{nil, nil, nil, nil, ErrTooManyOffsets, nil}
	for i, w := range want {
		if !errors.Is(res[i].Err, w) {
			t.Errorf("commit %d: %v, want %v", i, res[i].Err, w)
		}
	}
	if _, ok := h.s.Committed("a", "g5", 0); ok {
		t.Fatal("a refused commit was stored")
	}
	// The counts survive a checkpoint and restart.
	h.checkpointAndReopen()
	if topics, parts, offsets := h.s.Counts(); topics != 2 || parts != 12 || offsets != 4 {
		t.Fatalf("after restart: %d topics, %d partitions, %d offsets", topics, parts, offsets)
	}
}

func TestStoreIdempotencyWindow(t *testing.T) {
	h := newStoreHarness(t, t.TempDir()) // window 1000 ms, 3 keys
	h.apply(0, produce("t", 0, "a", "1"))
	if r := h.apply(999, produce("t", 0, "a", "1")); !r[0].Duplicate {
		t.Fatal("within the window: want a duplicate")
	}
	if r := h.apply(1001, produce("t", 0, "a", "1")); r[0].Duplicate {
		t.Fatal("past the window: want a new write")
	}
	// Per-partition scope: the same key on another partition is new.
	if r := h.apply(1002, produce("t", 1, "a", "1")); r[0].Duplicate {
		t.Fatal("other partition: want a new write")
	}
	// Key limit: the oldest goes first.
	h.apply(1003, produce("t", 0, "b", "1"), produce("t", 0, "c", "1"), produce("t", 0, "d", "1"))
	if r := h.apply(1004, produce("t", 0, "b", "1")); !r[0].Duplicate {
		t.Fatal("b should still be remembered")
	}
	if r := h.apply(1005, produce("t", 0, "a", "x")); r[0].Duplicate {
		t.Fatal("a should have been evicted by the key limit")
	}
}

// TestStoreCheckpointRecovery writes, checkpoints, writes more (as the WAL
// would replay), reopens, and checks the partitions are cut back to the
// checkpoint and that replaying gives the same result.
func TestStoreCheckpointRecovery(t *testing.T) {
	dir := t.TempDir()
	h := newStoreHarness(t, dir)
	h.apply(10, produce("t", 0, "k", "a", "b"), Command{Kind: CmdCreateTopic, Topic: "u", Partitions: 1})
	h.apply(11, Command{Kind: CmdCommit, Topic: "t", Group: "g", Partition: 0, Offset: 1})
	if err := h.s.Checkpoint([]byte("raft-blob")); err != nil {
		t.Fatal(err)
	}
	after := []Command{produce("t", 0, "", "c"), produce("late", -1, "", "z"), Command{Kind: CmdCommit, Topic: "t", Group: "g", Partition: 0, Offset: 2}}
	h.apply(12, after...)
	h.s.Close()

	s2, blob, err := OpenStore(StoreConfig{Dir: dir}, openBackend(t, "syscall"))
	if err != nil {
		t.Fatal(err)
	}
	h2 := &storeHarness{t: t, s: s2, dir: dir}
	h2.index, _ = s2.Applied()
	if string(blob) != "raft-blob" || h2.index != 2 {
		t.Fatalf("blob %q applied %d", blob, h2.index)
	}
	if got := fmt.Sprint(h2.values("t", 0)); got != "[a b]" {
		t.Fatalf("after recovery partition holds %s, want the checkpointed [a b]", got)
	}
	if _, ok := s2.Topic("late"); ok {
		t.Fatal("a topic created after the checkpoint survived recovery before replay")
	}
	if off, _ := s2.Committed("t", "g", 0); off != 1 {
		t.Fatalf("committed %d, want 1", off)
	}
	h2.apply(12, after...) // the WAL's replay of the entry after the checkpoint
	if got := fmt.Sprint(h2.values("t", 0)); got != "[a b c]" {
		t.Fatalf("after replay partition holds %s", got)
	}
	if r := h2.apply(13, produce("t", 0, "k", "dup")); !r[0].Duplicate || r[0].Offset != 0 {
		t.Fatalf("idempotency key lost across the checkpoint: %+v", r[0])
	}
	s2.Close()
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []Command{
		{Kind: CmdCreateTopic, ReqID: 1, Topic: "events", Partitions: 8},
		{Kind: CmdProduce, ReqID: 2, Topic: "t", Partition: -1, AutoCreatePartitions: 8, PartitionKey: []byte("user"),
			IdempotencyKey: []byte("idem"), Messages: []MessageIn{{Key: []byte("k"), Value: []byte("v")}, {Value: []byte{}}}},
		{Kind: CmdProduce, ReqID: 3, Topic: "t", Partition: 7},
		{Kind: CmdCommit, ReqID: 1 << 60, Topic: "t", Group: "g 1", Partition: 3, Offset: 1 << 50},
	}
	for _, c := range cmds {
		b := AppendCommand(nil, &c)
		if body := commandBodyBytes(&c); len(b) != 1+8+uvarintLen(uint64(body))+body {
			t.Fatalf("commandBodyBytes %d, encoded %d", body, len(b))
		}
		var got Command
		rest, err := DecodeCommand(append(b, 0xEE), &got, nil)
		if err != nil || len(rest) != 1 {
			t.Fatalf("decode %+v: %v (rest %d)", c, err, len(rest))
		}
		if fmt.Sprint(normalize(got)) != fmt.Sprint(normalize(c)) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
		}
	}
}

func normalize(c Command) Command {
	if len(c.Messages) == 0 {
		c.Messages = nil
	}
	for i := range c.Messages {
		if len(c.Messages[i].Key) == 0 {
			c.Messages[i].Key = nil
		}
		if len(c.Messages[i].Value) == 0 {
			c.Messages[i].Value = nil
		}
	}
	if len(c.PartitionKey) == 0 {
		c.PartitionKey = nil
	}
	if len(c.IdempotencyKey) == 0 {
		c.IdempotencyKey = nil
	}
	return c
}

// FuzzDecodeCommand: decoding never panics, and what decodes re-encodes to
// the same bytes.
func FuzzDecodeCommand(f *testing.F) {
	c := produce("t", -1, "k", "v1", "v2")
	f.Add(AppendCommand(nil, &c))
	c2 := Command{Kind: CmdCommit, Topic: "t", Group: "g", Offset: 9}
	f.Add(AppendCommand(nil, &c2))
	c3 := Command{Kind: CmdDeleteBefore, Topic: "t", Partition: 3, Offset: 1 << 40, Reason: TrimByRetention, TTLMs: 60000}
	f.Add(AppendCommand(nil, &c3))
	c4 := Command{Kind: CmdRetention, Topic: AllTopics, Partition: -1, TTLMs: 60000, MaxBytes: -1}
	f.Add(AppendCommand(nil, &c4))
	for _, c := range []Command{
		join("g", "t", "m1", StrategyRange),
		{Kind: CmdGroupLeave, Group: "g", MemberID: "m1"},
		{Kind: CmdGroupExpire, Group: "g", Expired: []MemberRef{{"m1", 3}, {"m2", 9}}},
		memberCommit("g", "t", "m1", 7, 2, 100),
	} {
		f.Add(AppendCommand(nil, &c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Command
		rest, err := DecodeCommand(b, &c, nil)
		if err != nil {
			return
		}
		enc := AppendCommand(nil, &c)
		if !bytes.Equal(enc, b[:len(b)-len(rest)]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc, b[:len(b)-len(rest)])
		}
	})
}

func TestStoreTopicLimit(t *testing.T) {
	h := newStoreHarness(t, t.TempDir()) // testLimits: 5 topics
	var cmds []Command
	for i := 0; i < 7; i++ {
		cmds = append(cmds, Command{Kind: CmdCreateTopic, Topic: fmt.Sprintf("t%d", i), Partitions: 1})
	}
	res := h.apply(1, cmds...)
	for i, r := range res {
		if wantFull := i >= 5; errors.Is(r.Err, ErrTooManyTopics) != wantFull {
			t.Errorf("create %d: %v", i, r.Err)
		}
	}
	if r := h.apply(2, produce("auto", -1, "", "x")); !errors.Is(r[0].Err, ErrTooManyTopics) {
		t.Fatalf("auto-create past the limit: %v", r[0].Err)
	}
	if r := h.apply(3, produce("t0", 0, "", "x")); r[0].Err != nil {
		t.Fatalf("produce to an existing topic at the limit: %v", r[0].Err)
	}
}

// TestStateVersion1IdempotencyKeys: a state checkpoint of version 1 (full
// composite idempotency keys) loads into the digest-keyed table, and a
// retry of a key it holds is still a duplicate.
func TestStateVersion1IdempotencyKeys(t *testing.T) {
	dir := t.TempDir()
	composite := append([]byte("t\x00"), 0, 0, 0, 0, 0) // topic t, partition 0 scope
	composite = append(composite, "order-7"...)
	p := binary.AppendUvarint(nil, 1) // version 1
	p = binary.AppendUvarint(p, 0)    // applied index
	p = binary.AppendUvarint(p, 0)    // applied term
	p = appendBytes(p, nil)           // replication blob
	p = binary.AppendUvarint(p, 0)    // topics
	p = binary.AppendUvarint(p, 0)    // offsets
	p = binary.AppendUvarint(p, 1)    // idempotency entries
	p = appendBytes(p, composite)     // the composite key in full
	p = binary.AppendVarint(p, 0)     // partition
	p = binary.AppendUvarint(p, 41)   // offset
	p = binary.AppendUvarint(p, 1)    // count
	p = binary.AppendVarint(p, 1_000) // time ms
	file := append([]byte(stateMagic), make([]byte, 12)...)
	binary.LittleEndian.PutUint64(file[8:16], uint64(len(p)))
	binary.LittleEndian.PutUint32(file[16:20], crc32.Checksum(p, record.Castagnoli))
	if err := os.WriteFile(filepath.Join(dir, stateFileName), append(file, p...), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newStoreHarness(t, dir)
	h.apply(1_500, Command{Kind: CmdCreateTopic, Topic: "t", Partitions: 1})
	r := h.apply(1_500, produce("t", 0, "order-7", "retry"))
	if !r[0].Duplicate || r[0].Offset != 41 {
		t.Fatalf("retry of a key from a version-1 checkpoint: %+v", r[0])
	}
	if len(idemKey("t", 0, []byte("order-7"))) != idemDigestBytes || len(idemKey("t", 0, make([]byte, 1024))) != idemDigestBytes {
		t.Fatal("stored keys must have a fixed size")
	}
}

// TestIdempotencyMemoryFixed: the table's memory per key does not depend
// on the key's length (1 KiB keys once cost ~3 KB each in memory and
// 1.2 KB each in every checkpoint).
func TestIdempotencyMemoryFixed(t *testing.T) {
	if testing.Short() {
		t.Skip("applies 50,000 produces")
	}
	h := newStoreHarness(t, t.TempDir())
	const keys = 50_000
	lim := testLimits
	lim.IdempotencyKeysMax, lim.IdempotencyWindowMs = keys, 1<<40
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	key := bytes.Repeat([]byte("k"), 1024)
	for i := 0; i < keys; i += 500 {
		b := AppendEntryHeader(nil, 1, lim)
		for j := i; j < i+500; j++ {
			copy(key, fmt.Sprintf("%08d", j))
			c := produce("t", 0, string(key), "v")
			c.ReqID = uint64(j)
			b = AppendCommand(b, &c)
		}
		h.index++
		if _, err := h.s.ApplyEntry(h.index, 1, b, nil); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perKey := (int64(after.HeapInuse) - int64(before.HeapInuse)) / keys
	ckpt := len(h.s.encodeState(nil)) / keys
	t.Logf("idempotency table: %d bytes of heap and %d bytes of checkpoint per 1 KiB key", perKey, ckpt)
	if perKey > 300 || ckpt > 64 {
		t.Fatalf("%d bytes of heap, %d of checkpoint per key: the table is sized by what clients send", perKey, ckpt)
	}
}

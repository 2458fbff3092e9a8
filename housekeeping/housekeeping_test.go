package housekeeping

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel/engine"
	"keel/engine/logstore"
	"keel/replication"
	"keel/ring"
)

// single runs a one-node group over a store with 4 KiB segments.
func single(t *testing.T) (*replication.Node, *engine.Store, string) {
	t.Helper()
	dir := t.TempDir()
	io, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	store, blob, err := engine.OpenStore(engine.StoreConfig{Dir: dir, Partition: logstore.LogConfig{SegmentBytes: 4 << 10, BatchBytesMax: 4 << 10}}, io)
	if err != nil {
		t.Fatal(err)
	}
	node, err := replication.Open(replication.Config{WALDir: filepath.Join(dir, "wal"), IO: io, Store: store, StoreBlob: blob})
	if err != nil {
		t.Fatal(err)
	}
	node.Start()
	t.Cleanup(func() { node.Close(); store.Close(); io.Close() })
	if !node.WaitServing(time.Now().Add(5 * time.Second)) {
		t.Fatal("node not serving")
	}
	return node, store, dir
}

func propose(t *testing.T, node *replication.Node, c *engine.Command) replication.Outcome {
	t.Helper()
	out, err := node.Propose(c, time.Now().Add(5*time.Second))
	if err == nil {
		err = out.Err
	}
	if err != nil {
		t.Fatalf("propose %+v: %v", c, err)
	}
	return out
}

func produce(t *testing.T, node *replication.Node, topic string, p int32, n int) {
	t.Helper()
	for range n {
		propose(t, node, &engine.Command{Kind: engine.CmdProduce, Topic: topic, Partition: p,
			Messages: []engine.MessageIn{{Value: []byte(strings.Repeat("v", 100))}}})
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestSweepTrimsByTTLAndSize(t *testing.T) {
	node, store, dir := single(t)
	propose(t, node, &engine.Command{Kind: engine.CmdCreateTopic, Topic: "ttl", Partitions: 1})
	propose(t, node, &engine.Command{Kind: engine.CmdCreateTopic, Topic: "size", Partitions: 1})
	produce(t, node, "ttl", 0, 200)
	produce(t, node, "size", 0, 200)
	ttlDir := filepath.Join(dir, "topics", "ttl")
	sizeDir := filepath.Join(dir, "topics", "size")
	ttlBefore, sizeBefore := dirBytes(t, ttlDir), dirBytes(t, sizeDir)

	sw := Start(Config{RetentionInterval: time.Hour}, node, store) // swept by hand below
	defer sw.Close()
	sw.Sweep()
	if st := sw.Stats(); st.Trims != 0 || st.Sweeps != 1 {
		t.Fatalf("a sweep without policies trimmed: %+v", st)
	}
	time.Sleep(50 * time.Millisecond)
	propose(t, node, &engine.Command{Kind: engine.CmdRetention, Topic: "ttl", Partition: -1, TTLMs: 20, MaxBytes: -1})
	propose(t, node, &engine.Command{Kind: engine.CmdRetention, Topic: "size", Partition: -1, TTLMs: -1, MaxBytes: 8 << 10})
	sw.Sweep()
	tp, _ := store.Topic("ttl")
	sp, _ := store.Topic("size")
	ttlLog, sizeLog := tp.Partitions[0].Log, sp.Partitions[0].Log
	// Every sealed segment expired: the start is the active segment's base.
	segs := ttlLog.Segments()
	if got, want := ttlLog.StartOffset(), segs[len(segs)-1].Base; got != want || want == 0 {
		t.Fatalf("TTL sweep: start %d, want the active segment's base %d", got, want)
	}
	if got := sizeLog.Bytes(); got > 8<<10 {
		t.Fatalf("size sweep: %d bytes left, policy 8 KiB", got)
	}
	st := sw.Stats()
	if st.Trims != 2 || st.TrimmedOffsets != ttlLog.StartOffset()+sizeLog.StartOffset() || st.TrimmedBytes == 0 {
		t.Fatalf("stats %+v", st)
	}
	// The janitor gives the space back.
	waitFor(t, "the disk to shrink", func() bool {
		return ttlBefore-dirBytes(t, ttlDir) >= 8<<10 && sizeBefore-dirBytes(t, sizeDir) >= 8<<10
	})
	// Nothing more to do.
	sw.Sweep()
	if got := sw.Stats().Trims; got != 2 {
		t.Fatalf("second sweep trimmed again: %d trims", got)
	}
}

// A node that is not the leader proposes nothing.
type follower struct{ *replication.Node }

func (f follower) Status() replication.Status {
	st := f.Node.Status()
	st.Role = "follower"
	return st
}

func TestSweepOnlyOnLeader(t *testing.T) {
	node, store, _ := single(t)
	propose(t, node, &engine.Command{Kind: engine.CmdCreateTopic, Topic: "t", Partitions: 1})
	produce(t, node, "t", 0, 200)
	propose(t, node, &engine.Command{Kind: engine.CmdRetention, Topic: "t", Partition: -1, TTLMs: -1, MaxBytes: 1})
	sw := Start(Config{RetentionInterval: time.Hour}, follower{node}, store)
	defer sw.Close()
	sw.Sweep()
	tp, _ := store.Topic("t")
	if st := sw.Stats(); st.Sweeps != 0 || tp.Partitions[0].Log.StartOffset() != 0 {
		t.Fatalf("a follower swept: %+v, start %d", st, tp.Partitions[0].Log.StartOffset())
	}
}

func TestSweepExpiresKVKeys(t *testing.T) {
	node, store, _ := single(t)
	propose(t, node, &engine.Command{Kind: engine.CmdKVPut, Topic: "ns", KVKey: []byte("short"), KVValue: []byte("v"), TTLMs: 30})
	propose(t, node, &engine.Command{Kind: engine.CmdKVPut, Topic: "ns", KVKey: []byte("long"), KVValue: []byte("v"), TTLMs: 3_600_000})
	time.Sleep(60 * time.Millisecond)
	sw := Start(Config{RetentionInterval: time.Hour}, node, store)
	defer sw.Close()
	sw.Sweep()
	n, _ := store.KV("ns")
	if _, ok := store.KVLookup(n, []byte("short")); ok {
		t.Fatal("an expired key is still indexed after the sweep")
	}
	if _, ok := store.KVLookup(n, []byte("long")); !ok {
		t.Fatal("a live key was removed")
	}
	if got := sw.Stats().ExpiredKeys; got != 1 {
		t.Fatalf("ExpiredKeys %d, want 1", got)
	}
}

package engine

import (
	"fmt"
	"time"

	"github.com/google/btree"

	"keel/engine/logstore"
	"keel/engine/record"
)

// Log compaction keeps, in a topic with cleanup "compact", only the newest
// record of each key in its sealed segments, and in a KV namespace only
// the versions its index names. Compaction is local to each node (it
// changes no state: which superseded records a reader still sees is not
// part of the contract), runs off the apply loop, and rewrites only
// segments below the log's end in the last durable state checkpoint, so
// recovery never cuts into a compacted segment. Offsets are never
// renumbered: removed records become holes that readers skip
// (logstore.Log.Compact).
//
// A record with a key and an empty value is a tombstone: it is kept while
// it is the key's newest record, until it is older than the tombstone
// retention, so that consumers catching up learn of the delete.

// CompactionStats counts what compaction did since the store opened.
type CompactionStats struct {
	Passes     uint64 // passes over a log that rewrote something
	Segments   uint64 // segments rewritten
	Removed    uint64 // records removed
	FreedBytes int64  // bytes the rewrites saved
	Skipped    uint64 // logs skipped: more keys than CompactionKeysMax
}

// snapshotQuiet is how long after the last snapshot read compaction waits.
const snapshotQuiet = time.Minute

// CompactionKeysMax bounds the keys one pass over a topic partition
// holds in memory (about 50 bytes plus the key each); a partition with
// more is not compacted, and counted in CompactionStats.Skipped.
const CompactionKeysMax = 4_000_000

// CompactionStats returns what compaction did so far.
func (s *Store) CompactionStats() CompactionStats {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	return s.compaction
}

// checkpointWritten notes a durable state checkpoint: each log's end in
// it, and the KV indexes it holds.
func (s *Store) checkpointWritten(c *StateCapture) {
	for _, e := range c.ends {
		e.p.checkpointed.Store(e.next)
	}
	s.kvMu.Lock()
	for _, k := range c.kvs {
		s.kvCheckpointed[k.name] = kvCheckpointed{tree: k.tree, next: k.next}
	}
	s.kvMu.Unlock()
}

// kvCheckpointed is a namespace in the last durable state checkpoint: its
// log's end and its index, read together (compaction's bound and what it
// must keep).
type kvCheckpointed struct {
	tree *btree.BTreeG[kvItem]
	next uint64
}

// Compact runs one compaction pass over every topic partition with
// cleanup "compact" and every KV namespace, at nowMs (this node's clock:
// compaction changes no state), removing tombstones older than
// tombstoneMs. It returns early, between segments, once stop is closed
// (nil: never). Call it from one goroutine at a time.
func (s *Store) Compact(nowMs, tombstoneMs int64, stop <-chan struct{}) error {
	if time.Since(time.UnixMilli(s.snapshotServed.Load())) < snapshotQuiet {
		// A follower is fetching a snapshot: a rewrite would make it
		// start over (ReadSnapshotFile refuses a replaced file).
		return nil
	}
	for _, t := range s.Topics() {
		for _, p := range t.Partitions {
			if p.Retention().Cleanup != CleanupCompact {
				continue
			}
			if stopped(stop) {
				return nil
			}
			if err := s.compactPartition(p, nowMs, tombstoneMs, stop); err != nil {
				return fmt.Errorf("engine: compact %s/%d: %w", t.Name, p.ID, err)
			}
		}
	}
	for _, n := range s.KVNamespaces() {
		if stopped(stop) {
			return nil
		}
		if err := s.compactKV(n, stop); err != nil {
			return fmt.Errorf("engine: compact kv %s: %w", n.Name, err)
		}
	}
	return nil
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func (s *Store) compactPartition(p *Partition, nowMs, tombstoneMs int64, stop <-chan struct{}) error {
	below := p.checkpointed.Load()
	if below <= p.compactedBelow && (p.tombstoneDueMs == 0 || nowMs < p.tombstoneDueMs) {
		return nil // nothing sealed and checkpointed since the last pass, and no tombstone due
	}
	// The newest offset of every key, over the whole log.
	latest := map[string]uint64{}
	tooMany := false
	for from, end := p.Log.StartOffset(), p.Log.NextOffset(); from < end && !tooMany && !stopped(stop); {
		next, err := p.Log.Read(from, 4<<20, func(fr logstore.Frame) bool {
			m, err := record.DecodeMessage(fr.Offset, fr.Payload)
			if err != nil || len(m.Key) == 0 {
				return true
			}
			if _, ok := latest[string(m.Key)]; !ok && len(latest) >= CompactionKeysMax {
				tooMany = true
				return false
			}
			latest[string(m.Key)] = fr.Offset
			return true
		})
		if err != nil {
			return err
		}
		if next <= from {
			break
		}
		from = next
	}
	if tooMany {
		s.compactMu.Lock()
		s.compaction.Skipped++
		s.compactMu.Unlock()
		return nil
	}
	if stopped(stop) {
		return nil
	}
	dueMs := int64(0) // the oldest kept tombstone's time to go
	st, err := p.Log.Compact(below, stop, func(fr logstore.Frame) (bool, bool) {
		m, err := record.DecodeMessage(fr.Offset, fr.Payload)
		if err != nil || len(m.Key) == 0 {
			return false, false // keyless records stay
		}
		if latest[string(m.Key)] != fr.Offset {
			return true, false // a newer record of the key follows
		}
		if len(m.Value) == 0 {
			if m.TimestampMs < nowMs-tombstoneMs {
				return true, true // a tombstone past its retention goes, however little else does
			}
			if due := m.TimestampMs + tombstoneMs; dueMs == 0 || due < dueMs {
				dueMs = due
			}
		}
		return false, false
	})
	s.noteCompaction(st)
	if err == nil && !stopped(stop) {
		p.compactedBelow, p.tombstoneDueMs = below, dueMs
	}
	return err
}

func (s *Store) compactKV(n *KVNamespace, stop <-chan struct{}) error {
	s.kvMu.RLock()
	c := s.kvCheckpointed[n.Name]
	s.kvMu.RUnlock()
	below, ckpt := c.next, c.tree
	if below <= n.part.compactedBelow {
		return nil
	}
	named := func(t *btree.BTreeG[kvItem], key []byte, off uint64) bool {
		if t == nil {
			return false
		}
		it, ok := t.Get(kvItem{key: string(key)})
		return ok && !it.deleted && it.offset == off
	}
	st, err := n.part.Log.Compact(below, stop, func(fr logstore.Frame) (bool, bool) {
		m, err := record.DecodeMessage(fr.Offset, fr.Payload)
		if err != nil {
			return false, false
		}
		s.kvMu.RLock()
		current := named(n.tree, m.Key, fr.Offset)
		s.kvMu.RUnlock()
		// ckpt is an immutable clone: read without the lock.
		return !current && !named(ckpt, m.Key, fr.Offset), false
	})
	s.noteCompaction(st)
	if err == nil && !stopped(stop) {
		n.part.compactedBelow = below
	}
	return err
}

func (s *Store) noteCompaction(st logstore.CompactStats) {
	if st.Segments == 0 {
		return
	}
	s.compactMu.Lock()
	s.compaction.Passes++
	s.compaction.Segments += uint64(st.Segments)
	s.compaction.Removed += st.Removed
	s.compaction.FreedBytes += st.BytesBefore - st.BytesAfter
	s.compactMu.Unlock()
}

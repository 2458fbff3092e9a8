package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"

	"keel/engine/logstore"
	"keel/engine/record"
	"keel/engine/vfs"
	"keel/ring"
)

// The state checkpoint (file state.ckpt, replaced atomically) holds all
// state-machine state at one applied index, after every partition log was
// fsynced up to it:
//
//	"KEELSTAT" | payload length u64 LE | crc32c(payload) u32 LE | payload
//
// payload (uvarint numbers, length-prefixed strings):
//
//	version | applied index | applied term | replication blob |
//	topics: count, (name, partitions, created ms, rr,
//	        (next, start, ttl ms, max bytes, cleanup)*)* |
//	offsets: count, (topic, group, partition, offset)* |
//	idempotency: count, (key, partition, offset, count, time ms)* |
//	retention default: ttl ms, max bytes, cleanup |
//	kv: count, (namespace, next, start, keys,
//	    (key, cas, offset, expires ms, deleted u8)*)* |
//	groups: epoch, count, (name, generation, strategy u8, members,
//	    (id, topic, session ms, joined ms, incarnation, partitions,
//	    partition*)*)*
//
// Version 2 stores each idempotency key as its 16-byte digest (see
// idemKey); version 1 stored the composite key in full, and is digested
// when loaded. Version 3 added the retention policies (per partition,
// and the default for topics created later); earlier versions have none.
// Version 4 added the KV namespaces; version 5 their deleted markers;
// version 6 the cleanup policy (log compaction); version 7 the consumer
// groups' membership.
//
// Recovery loads it, cuts each partition back to its checkpointed end and
// replays the Raft log after the applied index: restart time is bounded by
// the checkpoint interval, not by the data stored.
const (
	stateFileName     = "state.ckpt"
	stateMagic        = "KEELSTAT"
	stateVersion      = 7
	stateVersionMin   = 1
	stateHeaderBytes  = len(stateMagic) + 12
	statePayloadLimit = 1 << 34 // sanity bound (a version-1 idempotency table could hold ~1.3 GB at its limits)
)

// OpenStore opens the state machine in cfg.Dir and recovers it to its last
// checkpoint. It returns the opaque blob that replication saved with that
// checkpoint (nil on a fresh store).
func OpenStore(cfg StoreConfig, io ring.Backend) (*Store, []byte, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Partition.Validate(); err != nil {
		return nil, nil, err
	}
	s := &Store{
		cfg:     cfg,
		io:      io,
		topics:  map[string]*Topic{},
		offsets: map[offsetKey]uint64{},
		kvs:     map[string]*KVNamespace{},
		groups:  map[string]*ConsumerGroup{},

		kvCheckpointed: map[string]kvCheckpointed{},
		idem:           newIdempotencyTable(),
	}
	if err := vfs.EnsureDir(cfg.FS, cfg.Dir); err != nil {
		return nil, nil, err
	}
	// A snapshot install a crash interrupted after it was decided.
	if err := completeSnapshotInstall(cfg.FS, cfg.Dir); err != nil {
		return nil, nil, err
	}
	if err := vfs.EnsureDir(cfg.FS, s.topicsDir()); err != nil {
		return nil, nil, err
	}
	b, err := s.cfg.FS.ReadFile(filepath.Join(cfg.Dir, stateFileName))
	if errors.Is(err, os.ErrNotExist) {
		if err := removeStrayTopicDirs(s.cfg.FS, s.topicsDir(), s.topics); err != nil {
			return nil, nil, err
		}
		if err := removeStrayDirs(s.cfg.FS, s.kvDir(), func(name string) bool { return false }); err != nil {
			return nil, nil, err
		}
		s.janitor = newJanitor(slog.Default())
		return s, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("engine: read state checkpoint: %w", err)
	}
	blob, err := s.decodeState(b)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	if err := removeStrayTopicDirs(s.cfg.FS, s.topicsDir(), s.topics); err != nil {
		s.Close()
		return nil, nil, err
	}
	if err := removeStrayDirs(s.cfg.FS, s.kvDir(), func(name string) bool { _, ok := s.kvs[name]; return ok }); err != nil {
		s.Close()
		return nil, nil, err
	}
	s.recovery = s.summarizeRecovery()
	s.janitor = newJanitor(slog.Default())
	return s, blob, nil
}

// RecoverySummary is what opening the store found and did over every
// partition log (each log's logstore.RecoveryReport, added up).
type RecoverySummary struct {
	Logs           int    // partition logs opened
	Segments       int    // their segment files
	ScannedBytes   int64  // bytes of active segments read and checked
	ScannedRecords uint64 // valid records in them
	CutLogs        int    // logs whose torn tail was cut
	CutBytes       int64  // bytes cut (written after the last fsync: never acknowledged)
	CutPaths       []string
}

// cutPathsMax bounds the log directories a summary names.
const cutPathsMax = 10

func (s *Store) summarizeRecovery() RecoverySummary {
	var sum RecoverySummary
	var parts []*Partition
	for _, t := range s.topics {
		parts = append(parts, t.Partitions...)
	}
	for _, n := range s.kvs {
		parts = append(parts, n.part)
	}
	for _, p := range parts {
		r := p.Log.Recovery()
		sum.Logs++
		sum.Segments += r.Segments
		sum.ScannedBytes += r.ScannedBytes
		sum.ScannedRecords += r.ScannedRecords
		if r.CutBytes > 0 {
			sum.CutLogs++
			sum.CutBytes += r.CutBytes
			if len(sum.CutPaths) < cutPathsMax {
				sum.CutPaths = append(sum.CutPaths, p.Log.Dir())
			}
		}
	}
	return sum
}

// Recovery returns what opening the store found and did.
func (s *Store) Recovery() RecoverySummary { return s.recovery }

// Checkpoint fsyncs every partition, then atomically writes the state with
// blob (replication's own state at this applied index). Call it from the
// apply goroutine, between entries.
func (s *Store) Checkpoint(blob []byte) error {
	return s.Capture(blob).Write()
}

// StateCapture is the state at one applied index, taken on the apply
// goroutine and written later (possibly on another goroutine, while
// applying goes on).
type StateCapture struct {
	fs     vfs.FS
	dir    string
	state  []byte      // the payload before the KV section
	kvs    []kvCapture // encoded by Write
	groups []byte      // the groups section, after the KV one

	ends    []capturedEnd // each log's end as of the capture: compaction's bound once durable
	store   *Store
	syncs   []func() error // fsync each partition's active segment as of the capture
	dirs    []string       // directories holding names of partitions created since the last capture
	newLogs []newLogDirs   // those partitions
}

// Capture encodes the state with blob and notes which segment of each
// partition holds its newest records. It is fast (no I/O); call it from the
// apply goroutine, between entries.
func (s *Store) Capture(blob []byte) *StateCapture {
	c := &StateCapture{fs: s.cfg.FS, dir: s.cfg.Dir, state: s.encodeState(blob), store: s}
	s.mu.RLock()
	epoch := s.groupEpoch
	s.mu.RUnlock()
	c.groups = appendGroupState(nil, epoch, s.Groups())
	seen := map[string]bool{}
	parts := []*Partition{}
	for _, t := range s.Topics() {
		parts = append(parts, t.Partitions...)
	}
	s.kvMu.Lock() // Clone marks the tree copy-on-write
	for _, n := range s.KVNamespaces() {
		c.kvs = append(c.kvs, kvCapture{name: n.Name, tree: n.tree.Clone(), next: n.part.Log.NextOffset(), start: n.part.Log.StartOffset()})
		parts = append(parts, n.part)
	}
	s.kvMu.Unlock()
	for _, p := range parts {
		// New partitions' directory names, each directory once (a
		// topic's partitions share its directory and the topics one).
		if dirs := p.Log.PendingDirs(); len(dirs) > 0 {
			c.newLogs = append(c.newLogs, newLogDirs{p.Log, dirs})
			for _, d := range dirs {
				if !seen[d] {
					seen[d] = true
					c.dirs = append(c.dirs, d)
				}
			}
		}
		c.syncs = append(c.syncs, p.Log.ActiveSyncer())
		c.ends = append(c.ends, capturedEnd{p, p.Log.NextOffset()})
	}
	return c
}

// newLogDirs is a log created with DeferDirSync and the directories whose
// syncs make its names durable.
type newLogDirs struct {
	log  *logstore.Log
	dirs []string
}

// Write makes the captured state durable: it fsyncs every partition up to
// the capture, then replaces the state checkpoint atomically. Until Write
// returns, the previous checkpoint stays the one recovery uses.
func (c *StateCapture) Write() error {
	for _, d := range c.dirs {
		if err := vfs.SyncDir(c.fs, d); err != nil {
			return err
		}
	}
	for _, n := range c.newLogs {
		n.log.DirsSynced(n.dirs)
	}
	for _, sync := range c.syncs {
		if err := sync(); err != nil {
			return err
		}
	}
	if err := vfs.WriteFileAtomic(c.fs, c.dir, stateFileName, frameState(append(appendKVState(c.state, c.kvs), c.groups...))); err != nil {
		return err
	}
	c.store.checkpointWritten(c)
	return nil
}

// capturedEnd is a log's end at a state capture.
type capturedEnd struct {
	p    *Partition
	next uint64
}

// frameState puts the header (magic, length, checksum) before a payload.
func frameState(p []byte) []byte {
	out := make([]byte, 0, stateHeaderBytes+len(p))
	out = append(out, stateMagic...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(p)))
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(p, record.Castagnoli))
	return append(out, p...)
}

func (s *Store) encodeState(blob []byte) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := binary.AppendUvarint(nil, stateVersion)
	p = binary.AppendUvarint(p, s.applied)
	p = binary.AppendUvarint(p, s.appliedTerm)
	p = appendBytes(p, blob)
	p = binary.AppendUvarint(p, uint64(len(s.topics)))
	for _, t := range s.topics {
		p = appendString(p, t.Name)
		p = binary.AppendUvarint(p, uint64(len(t.Partitions)))
		p = binary.AppendVarint(p, t.CreatedMs)
		p = binary.AppendUvarint(p, t.rr)
		for _, part := range t.Partitions {
			p = binary.AppendUvarint(p, part.Log.NextOffset())
			p = binary.AppendUvarint(p, part.Log.StartOffset())
			pol := part.Retention()
			p = binary.AppendUvarint(p, uint64(pol.TTLMs))
			p = binary.AppendUvarint(p, uint64(pol.MaxBytes))
			p = append(p, pol.Cleanup)
		}
	}
	p = binary.AppendUvarint(p, uint64(len(s.offsets)))
	for k, v := range s.offsets {
		p = appendString(p, k.topic)
		p = appendString(p, k.group)
		p = binary.AppendUvarint(p, uint64(k.partition))
		p = binary.AppendUvarint(p, v)
	}
	live := s.idem.live()
	p = binary.AppendUvarint(p, uint64(len(live)))
	for _, e := range live {
		p = appendString(p, e.key)
		p = binary.AppendVarint(p, int64(e.partition))
		p = binary.AppendUvarint(p, e.offset)
		p = binary.AppendUvarint(p, uint64(e.count))
		p = binary.AppendVarint(p, e.tsMs)
	}
	p = binary.AppendUvarint(p, uint64(s.retentionDefault.TTLMs))
	p = binary.AppendUvarint(p, uint64(s.retentionDefault.MaxBytes))
	p = append(p, s.retentionDefault.Cleanup)
	return p // the KV section follows (StateCapture.Write)
}

// decodeState restores s from a state checkpoint and opens its partitions.
func (s *Store) decodeState(b []byte) ([]byte, error) {
	path := filepath.Join(s.cfg.Dir, stateFileName)
	corrupt := func(why string) error { return &logstore.CorruptionError{Path: path, Reason: why} }
	if len(b) < stateHeaderBytes || string(b[:len(stateMagic)]) != stateMagic {
		return nil, corrupt("not a state checkpoint")
	}
	n := binary.LittleEndian.Uint64(b[8:16])
	if n > statePayloadLimit || n != uint64(len(b)-stateHeaderBytes) {
		return nil, corrupt("length mismatch")
	}
	p := b[stateHeaderBytes:]
	if crc32.Checksum(p, record.Castagnoli) != binary.LittleEndian.Uint32(b[16:20]) {
		return nil, corrupt("checksum mismatch")
	}
	d := decoder{b: p}
	version := d.uvarint()
	if version < stateVersionMin || version > stateVersion {
		return nil, corrupt(fmt.Sprintf("version %d, this build reads %d to %d", version, stateVersionMin, stateVersion))
	}
	s.applied, s.appliedTerm = d.uvarint(), d.uvarint()
	blob := append([]byte(nil), d.bytes()...)
	if err := s.decodeTopics(&d, version, corrupt); err != nil {
		return nil, err
	}
	for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ {
		k := offsetKey{topic: string(d.bytes()), group: string(d.bytes()), partition: int32(d.int())}
		s.offsets[k] = d.uvarint()
	}
	for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ {
		key := d.bytes()
		if version == 1 {
			key = []byte(digestIdemKey(key))
		}
		e := &idemEntry{key: string(key), partition: int32(d.varint()), offset: d.uvarint()}
		e.count, e.tsMs = uint32(d.uvarint()), d.varint()
		s.idem.byKey[e.key] = e
		s.idem.fifo = append(s.idem.fifo, e)
	}
	if version >= 3 {
		s.retentionDefault = RetentionPolicy{TTLMs: d.int64(), MaxBytes: d.int64()}
		if version >= 6 {
			s.retentionDefault.Cleanup = d.byte()
		}
	}
	if version >= 4 {
		if err := s.decodeKVState(&d, version, corrupt); err != nil {
			return nil, err
		}
	}
	if version >= 7 {
		if err := s.decodeGroupState(&d, corrupt); err != nil {
			return nil, err
		}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, corrupt("payload does not decode")
	}
	return blob, nil
}

func (s *Store) decodeTopics(d *decoder, version uint64, corrupt func(string) error) error {
	for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ {
		name, parts := string(d.bytes()), d.int()
		created, rr := d.varint(), d.uvarint()
		if d.err != nil || !ValidTopicName(name) || parts < 1 || parts > partitionsLimit {
			return corrupt("bad topic record")
		}
		t, err := s.openTopic(name, parts, created)
		if err != nil {
			return err
		}
		t.rr = rr
		s.topics[name] = t
		s.partitionsTotal += parts
		for _, p := range t.Partitions {
			next, start := d.uvarint(), d.uvarint()
			if version >= 3 {
				pol := RetentionPolicy{TTLMs: d.int64(), MaxBytes: d.int64()}
				if version >= 6 {
					pol.Cleanup = d.byte()
				}
				p.setRetention(pol)
			}
			if d.err != nil {
				return corrupt("bad partition record")
			}
			if err := restorePartition(p, next, start); err != nil {
				return err
			}
			p.checkpointed.Store(next)
		}
	}
	return nil
}

// restorePartition cuts a partition back to its checkpointed end (the WAL
// replay re-applies what followed) and moves its start up to the
// checkpointed start.
func restorePartition(p *Partition, next, start uint64) error {
	if got := p.Log.NextOffset(); got < next {
		return &logstore.CorruptionError{Path: p.Log.Dir(), Reason: fmt.Sprintf(
			"the state checkpoint vouches for offsets below %d but the partition ends at %d", next, got)}
	}
	if err := p.Log.TruncateTo(next); err != nil {
		return err
	}
	if start > p.Log.StartOffset() {
		if _, _, err := p.Log.DeleteBefore(start); err != nil {
			return err
		}
	}
	return nil
}

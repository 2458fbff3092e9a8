package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/google/btree"

	"keel/engine/logstore"
	"keel/engine/record"
)

// The KV store (api.md "KV store"): each namespace is a log of versions
// (a partition log in kv/<ns>/) plus an in-memory ordered index from key to
// the offset of its current version, its cas and its expiry. Values live
// only on disk, so memory holds about 60 bytes plus the key per live key.
//
// A version is a message whose key is the KV key and whose value is
//
//	cas u64 LE | expires at ms i64 LE (0: never) | value
//
// and a delete is a tombstone: a message with the key and an empty value
// (so the namespace is a log that compaction can reduce to its live keys).
//
// Compare-and-set is decided when the command is applied, in log order,
// so it is atomic on one node and across the cluster. Expiry is decided
// from the leader's time in the entry (a put or a CAS on an expired key
// treats it as absent); reads compare expiry with the local clock, and the
// leader proposes CmdKVExpire for expired keys in the background.

// KV errors.
var (
	ErrCASMismatch = errors.New("kv: cas mismatch")
	ErrInvalidKey  = errors.New("kv: invalid key")
	ErrKVNotFound  = errors.New("kv: not found")
	// ErrKVVersionGone: the version an entry named is no longer in the
	// log (superseded since the lookup, and compacted away): look again.
	ErrKVVersionGone = errors.New("kv: version no longer in the log")
	errKVVersionBad  = errors.New("kv: stored version does not decode")
)

// KV limits.
const (
	KVKeyBytesMax        = 1024
	kvVersionHeaderBytes = 16
	kvExpireBatchMax     = 1000 // keys per CmdKVExpire
)

// KVNamespace is one namespace: its log and its index.
type KVNamespace struct {
	Name string
	part *Partition // the log of versions; Changed wakes watchers

	tree *btree.BTreeG[kvItem] // guarded by Store.kvMu
}

// kvItem is one key in the index: live, expired (until purged), or a
// deleted marker. A marker keeps a deleted key's last cas for
// KVTombstoneRetentionMs, so that a key created again goes on above it and
// a cas read from its earlier life does not match again (no ABA) unless
// that read is older than the retention.
type kvItem struct {
	key       string
	cas       uint64
	offset    uint64 // of the current version (a marker: of the tombstone) in the namespace log
	expiresMs int64  // 0: never; a marker: when it is purged
	deleted   bool   // a deleted marker
}

// KVTombstoneRetentionMs is how long a deleted or expired key's cas is
// remembered (leader time; a constant, so that every replica purges
// alike). The marker costs index memory meanwhile, and counts as a key.
const KVTombstoneRetentionMs = 60 * 60 * 1000

func kvLess(a, b kvItem) bool { return a.key < b.key }

func newKVTree() *btree.BTreeG[kvItem] { return btree.NewG(32, kvLess) }

// KVEntry is what a read of one key finds.
type KVEntry struct {
	Key       string
	CAS       uint64
	ExpiresMs int64 // 0: never
	Offset    uint64
}

// Expired reports whether the entry is past its TTL at nowMs.
func (e KVEntry) Expired(nowMs int64) bool { return e.ExpiresMs != 0 && e.ExpiresMs <= nowMs }

// ValidKVKey reports whether key is a KV key: 1 to KVKeyBytesMax bytes of
// UTF-8 (keys are listed as JSON strings, which must give them back
// exactly).
func ValidKVKey(key []byte) bool {
	return len(key) > 0 && len(key) <= KVKeyBytesMax && utf8.Valid(key)
}

func (s *Store) kvDir() string { return filepath.Join(s.cfg.Dir, "kv") }

// KV returns the named namespace.
func (s *Store) KV(ns string) (*KVNamespace, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.kvs[ns]
	return n, ok
}

// KVNamespaces returns every namespace, sorted by name.
func (s *Store) KVNamespaces() []*KVNamespace {
	s.mu.RLock()
	out := make([]*KVNamespace, 0, len(s.kvs))
	for _, n := range s.kvs {
		out = append(out, n)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Len is the number of keys in the namespace (expired ones not yet
// purged included).
func (s *Store) KVLen(n *KVNamespace) int {
	s.kvMu.RLock()
	defer s.kvMu.RUnlock()
	return n.tree.Len()
}

// KVKeys is the number of keys in every namespace together.
func (s *Store) KVKeys() int {
	total := 0
	for _, n := range s.KVNamespaces() {
		total += s.KVLen(n)
	}
	return total
}

// KVHeld reports whether the index holds key in any form (live, expired
// or a deleted marker): writing it adds no entry.
func (s *Store) KVHeld(n *KVNamespace, key []byte) bool {
	if n == nil {
		return false
	}
	s.kvMu.RLock()
	defer s.kvMu.RUnlock()
	return n.tree.Has(kvItem{key: string(key)})
}

// KVLookup returns the key's entry, if the index holds it (it may be
// expired: see KVEntry.Expired).
func (s *Store) KVLookup(n *KVNamespace, key []byte) (KVEntry, bool) {
	if n == nil {
		return KVEntry{}, false
	}
	s.kvMu.RLock()
	it, ok := n.tree.Get(kvItem{key: string(key)})
	s.kvMu.RUnlock()
	if !ok || it.deleted {
		return KVEntry{}, false
	}
	return KVEntry{Key: it.key, CAS: it.cas, ExpiresMs: it.expiresMs, Offset: it.offset}, true
}

// KVChanged returns a channel closed at the next change to the namespace.
func (n *KVNamespace) Changed() <-chan struct{} { return n.part.Changed() }

// KVList returns up to limit entries in key order whose key starts with
// prefix and sorts after after.
func (s *Store) KVList(n *KVNamespace, prefix, after string, limit int) (out []KVEntry, more bool) {
	from := max(prefix, after)
	s.kvMu.RLock()
	defer s.kvMu.RUnlock()
	n.tree.AscendGreaterOrEqual(kvItem{key: from}, func(it kvItem) bool {
		if it.key == after && after != "" {
			return true
		}
		if len(prefix) > 0 && (len(it.key) < len(prefix) || it.key[:len(prefix)] != prefix) {
			return false
		}
		if it.deleted {
			return true
		}
		if len(out) == limit {
			more = true
			return false
		}
		out = append(out, KVEntry{Key: it.key, CAS: it.cas, ExpiresMs: it.expiresMs, Offset: it.offset})
		return true
	})
	return out, more
}

// KVValue reads the value of e (an entry KVLookup returned), appending it
// to dst. The version may not be in the log yet for a moment (the index
// moves when a command applies, the log when its entry is flushed): the
// read waits for it, at most a second.
func (s *Store) KVValue(n *KVNamespace, e KVEntry, dst []byte) ([]byte, error) {
	if e.Offset >= n.part.Log.NextOffset() {
		deadline := time.Now().Add(time.Second)
		for {
			changed := n.part.Changed()
			if e.Offset < n.part.Log.NextOffset() {
				break
			}
			t := time.NewTimer(time.Until(deadline))
			select {
			case <-changed:
			case <-t.C:
				return dst, fmt.Errorf("kv: version %d of %s not in the log after a second", e.Offset, n.Name)
			}
			t.Stop()
		}
	}
	var derr error
	found, err := n.part.Log.ReadOne(e.Offset, func(fr logstore.Frame) {
		m, err := record.DecodeMessage(fr.Offset, fr.Payload)
		if err != nil || len(m.Value) < kvVersionHeaderBytes {
			derr = errKVVersionBad
			return
		}
		dst = append(dst, m.Value[kvVersionHeaderBytes:]...)
	})
	if err == nil {
		err = derr
	}
	if err == nil && !found {
		err = fmt.Errorf("%w: %d of %s", ErrKVVersionGone, e.Offset, n.Name)
	}
	return dst, err
}

// kvNamespaceFor returns the namespace, creating it (a command's first
// put) when create is set.
func (s *Store) kvNamespaceFor(ns string, create bool, nowMs int64) (*KVNamespace, error) {
	if n, ok := s.KV(ns); ok || !create {
		if !ok {
			return nil, ErrKVNotFound
		}
		return n, nil
	}
	if !ValidTopicName(ns) {
		return nil, ErrInvalidTopic
	}
	s.mu.RLock()
	noRoom := s.stage.lim.PartitionsTotalMax > 0 && s.partitionsTotal+1 > s.stage.lim.PartitionsTotalMax
	s.mu.RUnlock()
	if noRoom {
		return nil, ErrTooManyPartitions
	}
	n, err := s.openKVNamespace(ns)
	if err != nil {
		s.stage.fault = fmt.Errorf("engine: create kv namespace %s: %w", ns, err)
		return nil, s.stage.fault
	}
	s.mu.Lock()
	s.kvs[ns] = n
	s.partitionsTotal++
	s.mu.Unlock()
	return n, nil
}

func (s *Store) openKVNamespace(ns string) (*KVNamespace, error) {
	l, err := logstore.OpenLog(filepath.Join(s.kvDir(), ns), s.io, s.cfg.Partition)
	if err != nil {
		return nil, err
	}
	return &KVNamespace{Name: ns, part: &Partition{Topic: ns, ID: 0, Log: l}, tree: newKVTree()}, nil
}

// current returns the key's live item at nowMs (absent when expired).
func (n *KVNamespace) current(key []byte, nowMs int64) (kvItem, bool) {
	it, ok := n.tree.Get(kvItem{key: string(key)})
	if !ok || it.deleted || it.expiresMs != 0 && it.expiresMs <= nowMs {
		return kvItem{}, false
	}
	return it, true
}

func (s *Store) applyKVPut(c *Command, nowMs int64) Result {
	if !ValidKVKey(c.KVKey) {
		return Result{Err: ErrInvalidKey}
	}
	if _, ok := s.KV(c.Topic); !ok && c.HasCAS && c.CAS != 0 {
		// Refused before anything changes: no namespace for a 409.
		return Result{Err: ErrCASMismatch, CAS: 0, ExpectedCAS: c.CAS}
	}
	n, err := s.kvNamespaceFor(c.Topic, true, nowMs)
	if err != nil {
		return Result{Err: err}
	}
	cur, exists := n.current(c.KVKey, nowMs)
	if c.HasCAS && (c.CAS == 0 && exists || c.CAS != 0 && (!exists || cur.cas != c.CAS)) {
		return Result{Err: ErrCASMismatch, CAS: cur.cas, ExpectedCAS: c.CAS}
	}
	prev := cur.cas
	if held, ok := n.tree.Get(kvItem{key: string(c.KVKey)}); ok && !exists {
		prev = held.cas // expired, or a deleted marker: go on above it
	}
	item := kvItem{key: string(c.KVKey), cas: prev + 1}
	if c.TTLMs > 0 {
		item.expiresMs = nowMs + c.TTLMs
	}
	hdr := make([]byte, kvVersionHeaderBytes, kvVersionHeaderBytes+len(c.KVValue))
	binary.LittleEndian.PutUint64(hdr[0:8], item.cas)
	binary.LittleEndian.PutUint64(hdr[8:16], uint64(item.expiresMs))
	item.offset = s.stageKV(n, nowMs, c.KVKey, append(hdr, c.KVValue...))
	s.kvMu.Lock()
	n.tree.ReplaceOrInsert(item)
	s.kvMu.Unlock()
	return Result{CAS: item.cas}
}

func (s *Store) applyKVDelete(c *Command, nowMs int64) Result {
	if !ValidKVKey(c.KVKey) {
		return Result{Err: ErrInvalidKey}
	}
	n, ok := s.KV(c.Topic)
	var cur kvItem
	exists := false
	if ok {
		cur, exists = n.current(c.KVKey, nowMs)
	}
	if c.HasCAS && (!exists || cur.cas != c.CAS) {
		return Result{Err: ErrCASMismatch, CAS: cur.cas, ExpectedCAS: c.CAS}
	}
	if !ok {
		return Result{}
	}
	held, ok := n.tree.Get(kvItem{key: string(c.KVKey)})
	if !ok || held.deleted {
		return Result{}
	}
	s.markDeleted(n, held, nowMs)
	return Result{KVDeleted: exists, CAS: cur.cas}
}

func (s *Store) applyKVExpire(c *Command, nowMs int64) Result {
	n, ok := s.KV(c.Topic)
	if !ok {
		return Result{}
	}
	removed := 0
	for _, v := range c.KVExpired {
		it, held := n.tree.Get(kvItem{key: string(v.Key)})
		if !held || it.cas != v.CAS || it.expiresMs == 0 || it.expiresMs > nowMs {
			continue // written again, or not expired at the leader's time
		}
		if it.deleted { // its retention passed: forget it
			s.kvMu.Lock()
			n.tree.Delete(it)
			s.kvMu.Unlock()
			continue
		}
		s.markDeleted(n, it, nowMs)
		removed++
	}
	return Result{Count: removed}
}

// markDeleted writes a tombstone for it and keeps it as a deleted marker
// until KVTombstoneRetentionMs after nowMs.
func (s *Store) markDeleted(n *KVNamespace, it kvItem, nowMs int64) {
	off := s.stageKV(n, nowMs, []byte(it.key), nil)
	s.kvMu.Lock()
	n.tree.ReplaceOrInsert(kvItem{key: it.key, cas: it.cas, offset: off, expiresMs: nowMs + KVTombstoneRetentionMs, deleted: true})
	s.kvMu.Unlock()
}

// stageKV stages a version (or, with a nil version, a tombstone) of key
// in n's log and returns its offset.
func (s *Store) stageKV(n *KVNamespace, nowMs int64, key, version []byte) uint64 {
	sp := s.stage.partition(n.part)
	off := sp.next
	buf := s.stage.arena.alloc(record.MessagePayloadBytes(key, version))
	sp.recs = append(sp.recs, logstore.Record{Type: logstore.RecordMessage, Payload: record.AppendMessage(buf, nowMs, key, version)})
	sp.next++
	return off
}

// KVExpiries returns CmdKVExpire commands for keys past their TTL, and
// deleted markers past their retention, at nowMs (the proposing leader's
// clock), at most limit keys in all.
func (s *Store) KVExpiries(nowMs int64, limit int) []*Command {
	var out []*Command
	for _, n := range s.KVNamespaces() {
		var batch []KVVersion
		s.kvMu.RLock()
		n.tree.Ascend(func(it kvItem) bool {
			if it.expiresMs != 0 && it.expiresMs <= nowMs {
				batch = append(batch, KVVersion{Key: []byte(it.key), CAS: it.cas})
			}
			return len(batch) < min(limit, kvExpireBatchMax)
		})
		s.kvMu.RUnlock()
		if len(batch) > 0 {
			out = append(out, &Command{Kind: CmdKVExpire, Topic: n.Name, KVExpired: batch})
			limit -= len(batch)
		}
		if limit <= 0 {
			break
		}
	}
	return out
}

// kvCapture is a namespace as of a state capture: its index is a clone
// (copy-on-write), encoded later off the apply loop.
type kvCapture struct {
	name        string
	tree        *btree.BTreeG[kvItem]
	next, start uint64
}

// appendKVState appends the namespaces and their indexes to a state
// checkpoint payload: count, (name, next, start, keys, (key, cas, offset,
// expires ms, deleted u8)*)*.
func appendKVState(p []byte, kvs []kvCapture) []byte {
	p = binary.AppendUvarint(p, uint64(len(kvs)))
	for _, c := range kvs {
		p = appendString(p, c.name)
		p = binary.AppendUvarint(p, c.next)
		p = binary.AppendUvarint(p, c.start)
		p = binary.AppendUvarint(p, uint64(c.tree.Len()))
		c.tree.Ascend(func(it kvItem) bool {
			p = appendString(p, it.key)
			p = binary.AppendUvarint(p, it.cas)
			p = binary.AppendUvarint(p, it.offset)
			p = binary.AppendVarint(p, it.expiresMs)
			p = append(p, boolByte(it.deleted))
			return true
		})
	}
	return p
}

// decodeKVState restores the namespaces of a state checkpoint.
func (s *Store) decodeKVState(d *decoder, version uint64, corrupt func(string) error) error {
	for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ {
		name := string(d.bytes())
		next, start, keys := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err != nil || !ValidTopicName(name) || keys > uint64(len(d.b)) {
			return corrupt("bad kv namespace record")
		}
		ns, err := s.openKVNamespace(name)
		if err != nil {
			return err
		}
		s.kvs[name] = ns
		s.partitionsTotal++
		var prev string
		for j := uint64(0); j < keys && d.err == nil; j++ {
			it := kvItem{key: string(d.bytes()), cas: d.uvarint(), offset: d.uvarint(), expiresMs: d.varint()}
			if version >= 5 {
				switch d.byte() {
				case 0:
				case 1:
					it.deleted = true
				default:
					return corrupt("bad kv index flag")
				}
			}
			if j > 0 && it.key <= prev || it.offset >= next {
				return corrupt("kv index out of order or past its log")
			}
			prev = it.key
			ns.tree.ReplaceOrInsert(it)
		}
		if d.err != nil {
			return corrupt("bad kv index")
		}
		if err := restorePartition(ns.part, next, start); err != nil {
			return err
		}
		ns.part.checkpointed.Store(next)
		s.kvMu.Lock()
		s.kvCheckpointed[name] = kvCheckpointed{tree: ns.tree.Clone(), next: next}
		s.kvMu.Unlock()
	}
	return nil
}

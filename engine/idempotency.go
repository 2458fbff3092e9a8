package engine

import "crypto/sha256"

// idempotencyTable remembers where a write with an idempotency key landed,
// for a window of leader time and at most keysMax keys, oldest evicted
// first. Only the apply goroutine touches it; eviction depends only on the
// leader timestamps in the log, so every replica evicts the same keys.
type idempotencyTable struct {
	byKey map[string]*idemEntry
	fifo  []*idemEntry // insertion order; fifo[head:] are live or stale
	head  int
}

type idemEntry struct {
	key       string
	partition int32
	offset    uint64
	count     uint32
	tsMs      int64
}

func newIdempotencyTable() *idempotencyTable {
	return &idempotencyTable{byKey: map[string]*idemEntry{}}
}

// idemScopeAny scopes a key to the whole topic (the server chose the partition).
const idemScopeAny = -1

// idemKey returns the table's key for an idempotency key of topic in
// scope: a 16-byte digest (SHA-256, truncated) of topic, scope and key,
// so that an entry costs the same whatever the client sent (keys of up to
// 1 KiB once made 523K entries take 1.6 GB). 128 bits make an accidental
// collision negligible (birthday bound ~2^64 keys), and a cryptographic
// hash keeps a client from crafting one that would hand it another key's
// offset.
func idemKey(topic string, scope int32, key []byte) string {
	var b [64]byte
	buf := append(b[:0], topic...)
	buf = append(buf, 0, byte(scope>>24), byte(scope>>16), byte(scope>>8), byte(scope), 0)
	return digestIdemKey(append(buf, key...))
}

// idemDigestBytes is the size of a stored idempotency key.
const idemDigestBytes = 16

// digestIdemKey digests a composite key (topic, 0, scope, 0, key), the
// form state checkpoints of version 1 stored in full.
func digestIdemKey(composite []byte) string {
	sum := sha256.Sum256(composite)
	return string(sum[:idemDigestBytes])
}

// The window and key limit come from the entry being applied (EntryLimits).

func (t *idempotencyTable) get(key string, nowMs int64, lim EntryLimits) (*idemEntry, bool) {
	t.expire(nowMs, lim)
	e, ok := t.byKey[key]
	return e, ok
}

func (t *idempotencyTable) put(e *idemEntry, lim EntryLimits) {
	t.byKey[e.key] = e
	t.fifo = append(t.fifo, e)
	t.expire(e.tsMs, lim)
}

// expire drops keys older than the window and keys over the limit.
func (t *idempotencyTable) expire(nowMs int64, lim EntryLimits) {
	for t.head < len(t.fifo) {
		e := t.fifo[t.head]
		if len(t.byKey) <= lim.IdempotencyKeysMax && e.tsMs >= nowMs-lim.IdempotencyWindowMs {
			break
		}
		if t.byKey[e.key] == e {
			delete(t.byKey, e.key)
		}
		t.fifo[t.head] = nil
		t.head++
	}
	if t.head > 1024 && t.head > len(t.fifo)/2 {
		t.fifo = append(t.fifo[:0:0], t.fifo[t.head:]...)
		t.head = 0
	}
}

// live returns the remembered entries, oldest first.
func (t *idempotencyTable) live() []*idemEntry {
	out := make([]*idemEntry, 0, len(t.byKey))
	for _, e := range t.fifo[t.head:] {
		if t.byKey[e.key] == e {
			out = append(out, e)
		}
	}
	return out
}

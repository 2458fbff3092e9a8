package engine

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"keel/engine/logstore"
	"keel/engine/vfs"
	"keel/ring"
)

// StoreConfig holds the state machine's settings and limits.
type StoreConfig struct {
	Dir       string
	Partition logstore.LogConfig // for every partition log

	// FS does the store's metadata I/O, and its partition logs' (vfs.Default
	// when nil).
	FS vfs.FS

	// Limits are written into every entry this node proposes (as leader):
	// the entry, not the applying node's flags, decides what apply does
	// (see EntryLimits). Zero fields take the defaults.
	Limits EntryLimits
}

// Name limits (api.md).
const (
	TopicNameBytesMax = 249
	GroupNameBytesMax = 249
)

// Errors of applied commands; httpfront maps them to status codes. They are
// deterministic: every replica reaches the same one for the same entry.
var (
	ErrUnknownTopic      = errors.New("unknown topic")
	ErrUnknownPartition  = errors.New("unknown partition")
	ErrInvalidPartition  = errors.New("partition out of range")
	ErrTopicExists       = errors.New("topic exists with another partition count")
	ErrOffsetOutOfRange  = errors.New("offset past the log end")
	ErrInvalidTopic      = errors.New("invalid topic name")
	ErrInvalidGroup      = errors.New("invalid group name")
	ErrInvalidPartitions = errors.New("invalid partition count")
	ErrTooManyTopics     = errors.New("topic limit reached")
	ErrTooManyPartitions = errors.New("node-wide partition limit reached")
	ErrTooManyOffsets    = errors.New("consumer offset limit reached")
)

// topicNameByte marks the bytes a topic name may hold: [A-Za-z0-9._-].
var topicNameByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['.'], t['_'], t['-'] = true, true, true
	return t
}()

// ValidTopicName reports whether name is a topic name: 1–249 characters
// of [A-Za-z0-9._-], and not "." or ".." (they name directories). It runs
// on every produce and consume, so it is a table lookup, not a regexp.
func ValidTopicName(name string) bool {
	if len(name) == 0 || len(name) > TopicNameBytesMax || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !topicNameByte[name[i]] {
			return false
		}
	}
	return true
}

// ValidGroupName reports whether name is a consumer group name: 1–249
// printable bytes (no control characters).
func ValidGroupName(name string) bool {
	if len(name) == 0 || len(name) > GroupNameBytesMax {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] == 0x7f {
			return false
		}
	}
	return true
}

// Store is the deterministic state machine: topics with their partition
// logs, consumer offsets and the idempotency table. Apply runs on one
// goroutine; the read side (Topic, Committed, Topics) is safe concurrently.
type Store struct {
	cfg StoreConfig
	io  ring.Backend

	mu              sync.RWMutex
	topics          map[string]*Topic
	partitionsTotal int // partitions of all topics
	offsets         map[offsetKey]uint64
	applied         uint64
	appliedTerm     uint64
	// retentionDefault is the policy set for "*": topics created later
	// start with it.
	retentionDefault RetentionPolicy

	janitor *janitor // deletes segment files below log starts

	// groups holds consumer group membership (group.go); groupEpoch is
	// the last generation handed out, to any group. Guarded by mu.
	groups        map[string]*ConsumerGroup
	groupEpoch    uint64
	groupsChanged chan struct{} // closed at the next change (GroupsChanged)

	kvs  map[string]*KVNamespace // guarded by mu
	kvMu sync.RWMutex            // guards every namespace's index (written by apply only)
	// kvCheckpointed holds each namespace's index as of the last durable
	// state checkpoint (clones; guarded by kvMu): compaction keeps the
	// versions they name too, so a snapshot of that checkpoint finds them.
	kvCheckpointed map[string]kvCheckpointed

	snapshotServed atomic.Int64 // Unix ms of the last snapshot manifest or read: compaction waits for quiet

	compaction CompactionStats // guarded by compactMu
	compactMu  sync.Mutex

	recovery RecoverySummary // what OpenStore found and did

	idem  *idempotencyTable // apply goroutine only
	stage entryStage        // apply goroutine only
}

// Counts returns how many topics, partitions (all topics together) and
// committed consumer offsets the store holds: what the node-wide limits
// (EntryLimits) are checked against.
func (s *Store) Counts() (topics, partitions, offsets int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.topics), s.partitionsTotal, len(s.offsets)
}

type offsetKey struct {
	topic, group string
	partition    int32
}

// Topic is a topic and its partitions. Partitions never change after
// creation; rr (round-robin position) belongs to the apply goroutine.
type Topic struct {
	Name       string
	Partitions []*Partition
	CreatedMs  int64
	rr         uint64
}

// Partition is one partition's log plus a way to wait for new records.
type Partition struct {
	Topic string
	ID    int32
	Log   *logstore.Log

	policy partitionPolicy // retention

	// checkpointed is the log's end in the last durable state checkpoint:
	// compaction rewrites only below it, so recovery (which cuts back to
	// it and replays) never cuts into a compacted segment.
	checkpointed   atomic.Uint64
	compactedBelow uint64 // compaction goroutine only: the bound of the last pass
	tombstoneDueMs int64  // compaction goroutine only: when the oldest tombstone that pass kept may go (0: none)

	mu      sync.Mutex
	changed chan struct{} // closed at the next append; nil while nobody waits
}

// Changed returns a channel closed at the next append to the partition.
func (p *Partition) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

func (p *Partition) notify() {
	p.mu.Lock()
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
	p.mu.Unlock()
}

func (c StoreConfig) withDefaults() StoreConfig {
	c.FS = vfs.OrDefault(c.FS)
	c.Partition.FS = c.FS
	c.Partition.TailUnordered = true
	c.Partition.DeferDirSync = true // the Raft WAL rebuilds a partition a crash left half-created
	c.Partition = c.Partition.WithDefaults()
	c.Limits = c.Limits.WithDefaults()
	return c
}

// Limits returns the limits this node writes into the entries it proposes
// (StoreConfig.Limits, defaults filled in).
func (s *Store) Limits() EntryLimits { return s.cfg.Limits }

// AppendEntryHeader starts a Raft entry proposed at leader time
// leaderTimeMs (Unix milliseconds) under this node's limits: what
// replication writes before the commands of an entry it proposes.
func (s *Store) AppendEntryHeader(dst []byte, leaderTimeMs int64) []byte {
	return AppendEntryHeader(dst, leaderTimeMs, s.cfg.Limits)
}

func (s *Store) topicsDir() string { return filepath.Join(s.cfg.Dir, "topics") }

func (s *Store) partitionDir(topic string, p int) string {
	return filepath.Join(s.topicsDir(), topic, strconv.Itoa(p))
}

// Topic returns the named topic.
func (s *Store) Topic(name string) (*Topic, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.topics[name]
	return t, ok
}

// Topics returns every topic, sorted by name.
func (s *Store) Topics() []*Topic {
	s.mu.RLock()
	out := make([]*Topic, 0, len(s.topics))
	for _, t := range s.topics {
		out = append(out, t)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// WriteBehindFailures counts the write-behind hints the kernel refused
// over every partition (see logstore.LogConfig.WriteBehindBytes).
func (s *Store) WriteBehindFailures() uint64 {
	var n uint64
	for _, t := range s.Topics() {
		for _, p := range t.Partitions {
			n += p.Log.WriteBehindFailures()
		}
	}
	return n
}

// Committed returns the group's committed offset on a partition.
func (s *Store) Committed(topic, group string, partition int32) (uint64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	off, ok := s.offsets[offsetKey{topic, group, partition}]
	return off, ok
}

// GroupOffset is one committed consumer offset.
type GroupOffset struct {
	Topic, Group string
	Partition    int32
	Offset       uint64
}

// Offsets returns every committed offset.
func (s *Store) Offsets() []GroupOffset {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]GroupOffset, 0, len(s.offsets))
	for k, v := range s.offsets {
		out = append(out, GroupOffset{k.topic, k.group, k.partition, v})
	}
	return out
}

// Applied returns the index and term of the last applied Raft entry.
func (s *Store) Applied() (index, term uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied, s.appliedTerm
}

// Close closes every partition log (making it durable).
func (s *Store) Close() error {
	s.janitor.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, t := range s.topics {
		for _, p := range t.Partitions {
			if err := p.Log.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	for _, n := range s.kvs {
		if err := n.part.Log.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// createTopicLocked opens (creating) the partition logs of a new topic.
func (s *Store) openTopic(name string, partitions int, createdMs int64) (*Topic, error) {
	t := &Topic{Name: name, CreatedMs: createdMs}
	for p := 0; p < partitions; p++ {
		l, err := logstore.OpenLog(s.partitionDir(name, p), s.io, s.cfg.Partition)
		if err != nil {
			for _, q := range t.Partitions {
				q.Log.Close()
			}
			return nil, err
		}
		t.Partitions = append(t.Partitions, &Partition{Topic: name, ID: int32(p), Log: l})
	}
	return t, nil
}

// partitionFor picks a partition deterministically: explicit, else the
// key's hash, else round-robin.
func (t *Topic) partitionFor(c *Command) (int32, error) {
	n := len(t.Partitions)
	switch {
	case c.Partition >= 0:
		if int(c.Partition) >= n {
			return 0, ErrInvalidPartition
		}
		return c.Partition, nil
	case len(c.PartitionKey) > 0:
		h := fnv.New32a()
		h.Write(c.PartitionKey)
		return int32(h.Sum32() % uint32(n)), nil
	default:
		p := int32(t.rr % uint64(n))
		t.rr++
		return p, nil
	}
}

func removeStrayTopicDirs(fs vfs.FS, dir string, keep map[string]*Topic) error {
	return removeStrayDirs(fs, dir, func(name string) bool { _, ok := keep[name]; return ok })
}

// removeStrayDirs removes the entries of dir that keep refuses: logs
// created after the state checkpoint, which the WAL replay creates again.
func removeStrayDirs(fs vfs.FS, dir string, keep func(name string) bool) error {
	entries, err := fs.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("engine: list %s: %w", dir, err)
	}
	for _, e := range entries {
		if keep(e.Name()) {
			continue
		}
		// Created after the checkpoint: the WAL replay creates it again.
		if err := fs.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("engine: remove %s: %w", e.Name(), err)
		}
	}
	return vfs.SyncDir(fs, dir)
}

package engine

import (
	"fmt"

	"keel/engine/logstore"
	"keel/engine/record"
	"keel/invariant"
)

// Result is the outcome of one applied command, for the request that
// proposed it (matched by ReqID).
type Result struct {
	ReqID     uint64
	Err       error // a deterministic command error (ErrUnknownTopic, ...)
	Partition int32
	Offset    uint64 // first offset written (or originally written, for a duplicate)
	Count     int
	Duplicate bool
	Created   bool // CmdCreateTopic: the topic is new
	Ignored   bool // CmdCommit: lower than the stored offset; CmdDeleteBefore by retention: the policy is gone
	TimeMs    int64

	Deleted    uint64 // CmdDeleteBefore: offsets that stopped being readable
	FreedBytes int64  // CmdDeleteBefore: bytes of the segment files deleted (by the janitor, just after)

	CAS         uint64 // CmdKVPut: the new cas; CmdKVDelete: the deleted key's; ErrCASMismatch: the current one (0: no key)
	ExpectedCAS uint64 // ErrCASMismatch: the cas the command asked for
	KVDeleted   bool   // CmdKVDelete: a live key was deleted

	// CmdGroupJoin: the group's generation, its strategy and the member's
	// partitions (Count: the group's members); CmdGroupLeave and
	// CmdGroupExpire: the new generation (Count: members left, members
	// removed); ErrStaleGeneration, ErrNotAssigned, ErrStrategyMismatch:
	// the group's current generation.
	Generation uint64
	Strategy   uint8
	Assigned   []int32
}

// entryStage collects the records of one entry per partition, so each
// partition gets one write per entry however many commands touched it.
type entryStage struct {
	parts  []*stagedPartition
	byPart map[*Partition]*stagedPartition
	arena  arena // message payloads of this entry
	cmd    Command
	lim    EntryLimits // of the entry being applied
	fault  error       // a storage fault met while applying it
}

type stagedPartition struct {
	p    *Partition
	next uint64 // offset the next staged record gets
	recs []logstore.Record
}

func (st *entryStage) partition(p *Partition) *stagedPartition {
	if sp, ok := st.byPart[p]; ok {
		return sp
	}
	if st.byPart == nil {
		st.byPart = map[*Partition]*stagedPartition{}
	}
	// Reuse the staged partitions of earlier entries (and their record
	// slices) instead of allocating new ones.
	var sp *stagedPartition
	if n := len(st.parts); n < cap(st.parts) && st.parts[:n+1][n] != nil {
		sp = st.parts[:n+1][n]
		*sp = stagedPartition{recs: sp.recs[:0]}
	} else {
		sp = &stagedPartition{}
	}
	sp.p, sp.next = p, p.Log.NextOffset()
	st.byPart[p] = sp
	st.parts = append(st.parts, sp)
	return sp
}

// internTopic returns the stored name of an existing topic (no
// allocation), or a new string.
func (s *Store) internTopic(b []byte) string {
	s.mu.RLock()
	t, ok := s.topics[string(b)]
	s.mu.RUnlock()
	if ok {
		return t.Name
	}
	return string(b)
}

// ApplyEntry applies one committed Raft entry and appends one Result per
// command to results. An error return is a storage fault (not a command
// error): the node must stop, since replicas would diverge.
func (s *Store) ApplyEntry(index, term uint64, data []byte, results []Result) ([]Result, error) {
	invariant.Check(index == s.applied+1, "applying entry %d after entry %d: the applied index moves by one", index, s.applied)
	if len(data) > 0 {
		var err error
		if results, err = s.applyCommands(data, results); err != nil {
			return results, err
		}
	}
	s.mu.Lock()
	s.applied, s.appliedTerm = index, term
	s.mu.Unlock()
	return results, nil
}

func (s *Store) applyCommands(data []byte, results []Result) ([]Result, error) {
	nowMs, lim, rest, err := DecodeEntryHeader(data)
	if err != nil {
		return results, err
	}
	st := &s.stage
	st.lim, st.fault = lim, nil
	st.arena.reset()
	for n := 0; len(rest) > 0; n++ {
		if n >= commandsPerEntry {
			return results, fmt.Errorf("%w: more than %d commands", errCommand, commandsPerEntry)
		}
		if rest, err = DecodeCommand(rest, &st.cmd, s.internTopic); err != nil {
			return results, err
		}
		res := s.applyCommand(&st.cmd, nowMs)
		if st.fault != nil {
			return results, st.fault
		}
		res.ReqID, res.TimeMs = st.cmd.ReqID, nowMs
		results = append(results, res)
	}
	return results, s.flushStage()
}

func (s *Store) applyCommand(c *Command, nowMs int64) Result {
	switch c.Kind {
	case CmdCreateTopic:
		return s.applyCreate(c.Topic, c.Partitions, nowMs)
	case CmdProduce:
		return s.applyProduce(c, nowMs)
	case CmdCommit:
		return s.applyCommit(c)
	case CmdDeleteBefore:
		return s.applyDeleteBefore(c)
	case CmdRetention:
		return s.applyRetention(c)
	case CmdKVPut:
		return s.applyKVPut(c, nowMs)
	case CmdKVDelete:
		return s.applyKVDelete(c, nowMs)
	case CmdKVExpire:
		return s.applyKVExpire(c, nowMs)
	case CmdGroupJoin:
		return s.applyGroupJoin(c, nowMs)
	case CmdGroupLeave:
		return s.applyGroupLeave(c)
	case CmdGroupExpire:
		return s.applyGroupExpire(c)
	case CmdMemberCommit:
		return s.applyMemberCommit(c)
	}
	return Result{Err: fmt.Errorf("%w: kind %d", errCommand, c.Kind)}
}

func (s *Store) applyCreate(name string, partitions int, nowMs int64) Result {
	if !ValidTopicName(name) {
		return Result{Err: ErrInvalidTopic}
	}
	if partitions < 1 || partitions > s.stage.lim.PartitionsMax {
		return Result{Err: ErrInvalidPartitions}
	}
	if t, ok := s.Topic(name); ok {
		if len(t.Partitions) != partitions {
			return Result{Err: ErrTopicExists, Count: len(t.Partitions)}
		}
		return Result{Count: partitions}
	}
	s.mu.RLock()
	full := len(s.topics) >= s.stage.lim.TopicsMax
	noRoom := s.stage.lim.PartitionsTotalMax > 0 && s.partitionsTotal+partitions > s.stage.lim.PartitionsTotalMax
	s.mu.RUnlock()
	switch {
	case full:
		return Result{Err: ErrTooManyTopics}
	case noRoom:
		// Checked here, from the limit in the entry, so that a create the
		// node cannot hold never reaches openTopic: a replay decides the
		// same, and no accepted entry meets a descriptor fault.
		return Result{Err: ErrTooManyPartitions}
	}
	t, err := s.openTopic(name, partitions, nowMs)
	if err != nil {
		// Creating files failed (disk full, too many open files): not a
		// command error, since a replay could succeed and shift every
		// later offset. The node must stop (a storage fault).
		s.stage.fault = fmt.Errorf("engine: create topic %s: %w", name, err)
		return Result{Err: s.stage.fault}
	}
	s.mu.Lock()
	for _, p := range t.Partitions {
		p.setRetention(s.retentionDefault)
	}
	s.topics[name] = t
	s.partitionsTotal += partitions
	s.mu.Unlock()
	return Result{Created: true, Count: partitions}
}

func (s *Store) applyProduce(c *Command, nowMs int64) Result {
	t, ok := s.Topic(c.Topic)
	if !ok {
		if c.AutoCreatePartitions == 0 {
			return Result{Err: ErrUnknownTopic}
		}
		if s.stage.lim.Version >= 2 && int(c.Partition) >= c.AutoCreatePartitions {
			// Refused before anything changes: a 4xx leaves no topic behind.
			return Result{Err: ErrInvalidPartition}
		}
		if r := s.applyCreate(c.Topic, c.AutoCreatePartitions, nowMs); r.Err != nil {
			return r
		}
		t, _ = s.Topic(c.Topic)
	}
	pid, err := t.partitionFor(c)
	if err != nil {
		return Result{Err: err}
	}
	var key string
	if len(c.IdempotencyKey) > 0 {
		scope := int32(idemScopeAny)
		if c.Partition >= 0 {
			scope = c.Partition
		}
		key = idemKey(c.Topic, scope, c.IdempotencyKey)
		if e, ok := s.idem.get(key, nowMs, s.stage.lim); ok {
			return Result{Partition: e.partition, Offset: e.offset, Count: int(e.count), Duplicate: true}
		}
	}
	sp := s.stage.partition(t.Partitions[pid])
	first := sp.next
	for _, m := range c.Messages {
		buf := s.stage.arena.alloc(record.MessagePayloadBytes(m.Key, m.Value))
		sp.recs = append(sp.recs, logstore.Record{Type: logstore.RecordMessage, Payload: record.AppendMessage(buf, nowMs, m.Key, m.Value)})
	}
	sp.next += uint64(len(c.Messages))
	if key != "" {
		s.idem.put(&idemEntry{key: key, partition: pid, offset: first, count: uint32(len(c.Messages)), tsMs: nowMs}, s.stage.lim)
	}
	return Result{Partition: pid, Offset: first, Count: len(c.Messages)}
}

func (s *Store) applyCommit(c *Command) Result {
	t, ok := s.Topic(c.Topic)
	if !ok {
		return Result{Err: ErrUnknownTopic}
	}
	if !ValidGroupName(c.Group) {
		return Result{Err: ErrInvalidGroup}
	}
	if c.Partition < 0 || int(c.Partition) >= len(t.Partitions) {
		return Result{Err: ErrUnknownPartition}
	}
	p := t.Partitions[c.Partition]
	end := p.Log.NextOffset()
	if sp, ok := s.stage.byPart[p]; ok {
		end = sp.next
	}
	// The log end offset itself is a valid commit (scripts commit the
	// next_offset a consume returned); only past it is out of range.
	// Entries of version 1 kept the older, stricter rule.
	if c.Offset > end || c.Offset == end && s.stage.lim.Version < 2 {
		return Result{Err: ErrOffsetOutOfRange, Partition: c.Partition, Offset: end}
	}
	k := offsetKey{c.Topic, c.Group, c.Partition}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.offsets[k]
	if ok && c.Offset < cur {
		return Result{Partition: c.Partition, Offset: cur, Ignored: true}
	}
	invariant.Check(!ok || c.Offset >= cur, "consumer offset of %s/%s/%d moving back from %d to %d", c.Topic, c.Group, c.Partition, cur, c.Offset)
	if !ok && s.stage.lim.OffsetsMax > 0 && len(s.offsets) >= s.stage.lim.OffsetsMax {
		return Result{Err: ErrTooManyOffsets}
	}
	s.offsets[k] = c.Offset
	return Result{Partition: c.Partition, Offset: c.Offset}
}

// flushStage writes each touched partition's records (no fsync: the WAL is
// the durable copy) and wakes readers waiting on them.
func (s *Store) flushStage() error {
	st := &s.stage
	for _, sp := range st.parts {
		for recs := sp.recs; len(recs) > 0; {
			n := batchPrefixRecords(recs, s.cfg.Partition.BatchBytesMax)
			if _, _, err := sp.p.Log.AppendBatch(recs[:n], false); err != nil {
				return fmt.Errorf("engine: apply to %s/%d: %w", sp.p.Topic, sp.p.ID, err)
			}
			recs = recs[n:]
		}
		invariant.Check(sp.p.Log.NextOffset() == sp.next, "partition %s/%d ends at %d after applying up to %d: offsets must stay dense",
			sp.p.Topic, sp.p.ID, sp.p.Log.NextOffset(), sp.next)
		sp.p.notify()
		clear(sp.recs)
		sp.recs = sp.recs[:0]
		delete(st.byPart, sp.p)
		sp.p = nil
	}
	// Keep the stagedPartition values (in the spare capacity) for reuse.
	st.parts = st.parts[:0]
	return nil
}

// batchPrefixRecords returns how many records fit in one batch (at least one).
func batchPrefixRecords(recs []logstore.Record, max int) int {
	total := 0
	for i, r := range recs {
		total += record.FrameBytes(len(r.Payload))
		if i > 0 && total > max {
			return i
		}
	}
	return len(recs)
}

// arena hands out byte slices from large chunks that stay put until reset,
// so staged records can point into it while more is allocated.
type arena struct {
	chunks [][]byte
	cur    int
}

const arenaChunkBytes = 1 << 20

// alloc returns an empty slice with capacity n that no later alloc touches.
func (a *arena) alloc(n int) []byte {
	if n > arenaChunkBytes {
		return make([]byte, 0, n)
	}
	for {
		if a.cur == len(a.chunks) {
			a.chunks = append(a.chunks, make([]byte, 0, arenaChunkBytes))
		}
		c := a.chunks[a.cur]
		if cap(c)-len(c) >= n {
			a.chunks[a.cur] = c[:len(c)+n]
			return c[len(c) : len(c) : len(c)+n]
		}
		a.cur++
	}
}

func (a *arena) reset() {
	for i := range a.chunks[:min(a.cur+1, len(a.chunks))] {
		a.chunks[i] = a.chunks[i][:0]
	}
	a.cur = 0
	if len(a.chunks) > 64 { // keep at most 64 MiB between entries
		a.chunks = a.chunks[:64]
	}
}

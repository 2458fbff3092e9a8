package engine

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"keel/engine/logstore"
)

// Retention keeps a partition bounded by age and size (api.md
// "Retention"). The log start is state: it moves only by applying a
// CmdDeleteBefore, from a client (POST /broker/delete-before) or from the
// leader's retention sweep (RetentionTrims, proposed by package
// housekeeping), so every replica trims at the same offset. A replica then
// deletes its own whole segments below the start, off the apply loop (the
// janitor). Between sweeps, reads filter records past their TTL
// (Partition.ExpiredBefore), so an expired record is never served.

// RetentionPolicy bounds a partition: records older than TTLMs and the
// oldest whole segments beyond MaxBytes are deleted (0 means no bound);
// with Cleanup CleanupCompact, sealed segments also keep only the newest
// record of each key (log compaction, compact.go).
type RetentionPolicy struct {
	TTLMs    int64
	MaxBytes int64
	Cleanup  uint8
}

// Cleanup policies.
const (
	CleanupDelete  uint8 = 0 // retention by age and size only
	CleanupCompact uint8 = 1 // and log compaction
)

// IsZero reports whether the policy bounds nothing by age or size.
func (p RetentionPolicy) IsZero() bool { return p.TTLMs == 0 && p.MaxBytes == 0 }

// with returns p changed by a CmdRetention's fields (-1 unchanged, 0
// cleared).
func (p RetentionPolicy) with(ttlMs, maxBytes int64, cleanup uint8) RetentionPolicy {
	if ttlMs >= 0 {
		p.TTLMs = ttlMs
	}
	if maxBytes >= 0 {
		p.MaxBytes = maxBytes
	}
	if cleanup > 0 {
		p.Cleanup = cleanup - 1
	}
	return p
}

// partitionPolicy is a partition's policy, read by consumers while apply
// changes it.
type partitionPolicy struct {
	ttlMs    atomic.Int64
	maxBytes atomic.Int64
	cleanup  atomic.Uint32
}

// Retention returns the partition's policy.
func (p *Partition) Retention() RetentionPolicy {
	return RetentionPolicy{TTLMs: p.policy.ttlMs.Load(), MaxBytes: p.policy.maxBytes.Load(), Cleanup: uint8(p.policy.cleanup.Load())}
}

func (p *Partition) setRetention(r RetentionPolicy) {
	p.policy.ttlMs.Store(r.TTLMs)
	p.policy.maxBytes.Store(r.MaxBytes)
	p.policy.cleanup.Store(uint32(r.Cleanup))
}

// ExpiredBefore returns the timestamp (Unix ms) below which the
// partition's records are past their TTL at nowMs, and false when it has
// no TTL. Readers skip such records until the sweep deletes them.
func (p *Partition) ExpiredBefore(nowMs int64) (int64, bool) {
	ttl := p.policy.ttlMs.Load()
	if ttl <= 0 {
		return 0, false
	}
	return nowMs - ttl, true
}

// DefaultRetention returns the policy set for "*", which topics created
// later start with.
func (s *Store) DefaultRetention() RetentionPolicy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.retentionDefault
}

func (s *Store) applyDeleteBefore(c *Command) Result {
	t, ok := s.Topic(c.Topic)
	if !ok {
		return Result{Err: ErrUnknownTopic}
	}
	if c.Partition < 0 || int(c.Partition) >= len(t.Partitions) {
		return Result{Err: ErrUnknownPartition}
	}
	p := t.Partitions[c.Partition]
	if pol := p.Retention(); c.Reason == TrimByRetention && (pol.TTLMs != c.TTLMs || pol.MaxBytes != c.MaxBytes) {
		// The policy changed (or was cleared) after the sweep proposed
		// this: the next sweep decides under the new one.
		return Result{Partition: c.Partition, Ignored: true}
	}
	// Records staged by earlier commands of this entry reach the log
	// first, so the start may move past them.
	if err := s.flushStage(); err != nil {
		s.stage.fault = err
		return Result{Err: err}
	}
	moved, d, err := p.Log.AdvanceStart(c.Offset)
	if err != nil {
		s.stage.fault = err
		return Result{Err: err}
	}
	s.janitor.add(d)
	return Result{Partition: c.Partition, Offset: p.Log.StartOffset(), Deleted: moved, FreedBytes: d.Bytes()}
}

func (s *Store) applyRetention(c *Command) Result {
	var parts []*Partition
	if c.Topic == AllTopics {
		s.mu.Lock()
		s.retentionDefault = s.retentionDefault.with(c.TTLMs, c.MaxBytes, c.Cleanup)
		s.mu.Unlock()
		for _, t := range s.Topics() {
			parts = append(parts, t.Partitions...)
		}
	} else {
		t, ok := s.Topic(c.Topic)
		switch {
		case !ok:
			return Result{Err: ErrUnknownTopic}
		case c.Partition >= int32(len(t.Partitions)):
			return Result{Err: ErrUnknownPartition}
		case c.Partition >= 0:
			parts = t.Partitions[c.Partition : c.Partition+1]
		default:
			parts = t.Partitions
		}
	}
	for _, p := range parts {
		p.setRetention(p.Retention().with(c.TTLMs, c.MaxBytes, c.Cleanup))
	}
	return Result{Partition: c.Partition, Count: len(parts)}
}

// RetentionTrims returns the CmdDeleteBefore commands that bring every
// partition within its policy at nowMs (the proposing leader's clock):
// whole sealed segments whose newest record is past the TTL, and the
// oldest sealed segments while the partition holds more than MaxBytes.
// The active segment is never trimmed (its records stay until it rolls;
// reads filter the expired ones).
func (s *Store) RetentionTrims(nowMs int64) []*Command {
	var out []*Command
	for _, t := range s.Topics() {
		for _, p := range t.Partitions {
			pol := p.Retention()
			if pol.IsZero() {
				continue
			}
			start := p.Log.StartOffset()
			target := start
			segs := p.Log.Segments()
			var total int64
			for _, sg := range segs {
				total += sg.Bytes
			}
			for _, sg := range segs {
				if !sg.Sealed {
					break
				}
				expired := pol.TTLMs > 0 && sg.MaxTimestampMs < nowMs-pol.TTLMs
				over := pol.MaxBytes > 0 && total > pol.MaxBytes
				if !expired && !over {
					break
				}
				total -= sg.Bytes
				target = max(target, sg.Next)
			}
			if target > start {
				out = append(out, &Command{Kind: CmdDeleteBefore, Topic: t.Name, Partition: p.ID, Offset: target, Reason: TrimByRetention,
					TTLMs: pol.TTLMs, MaxBytes: pol.MaxBytes})
			}
		}
	}
	return out
}

// ReclaimBelowStart detaches the sealed segments that lie wholly below
// their partition's start (left by a start that moved inside the active
// segment before it rolled, or by a crash before the janitor ran) and
// hands them to the janitor. It changes no state; any goroutine may call
// it.
func (s *Store) ReclaimBelowStart() {
	for _, t := range s.Topics() {
		for _, p := range t.Partitions {
			if _, d, err := p.Log.AdvanceStart(0); err == nil {
				s.janitor.add(d)
			}
		}
	}
}

// janitor deletes detached segment files on its own goroutine, oldest
// first, so that neither the apply loop nor a request waits for a file
// system that frees blocks slowly. A set that fails stays first and is
// tried again (a later set of the same log must not go first: that would
// leave a gap between the older files and the rest of the log).
type janitor struct {
	mu      sync.Mutex
	pending []logstore.Detached
	epoch   uint64 // moved by dropAndPause: a set taken before is stale
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	work    sync.Mutex // held while a set is removed, and by dropAndPause's caller
	log     *slog.Logger

	freed   atomic.Int64 // bytes given back to the disk so far
	removed atomic.Int64 // segments deleted so far
}

// janitorRetry is the pause before a failed set is tried again.
const janitorRetry = time.Second

func newJanitor(log *slog.Logger) *janitor {
	j := &janitor{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), log: log}
	go j.run()
	return j
}

func (j *janitor) add(d logstore.Detached) {
	if d.Len() == 0 {
		return
	}
	j.mu.Lock()
	j.pending = append(j.pending, d)
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (j *janitor) run() {
	defer close(j.done)
	for {
		select {
		case <-j.stop:
			return
		case <-j.wake:
		}
		for {
			select {
			case <-j.stop:
				return
			default:
			}
			j.mu.Lock()
			if len(j.pending) == 0 {
				j.mu.Unlock()
				break
			}
			d, epoch := j.pending[0], j.epoch
			j.mu.Unlock()
			j.work.Lock()
			j.mu.Lock()
			stale := j.epoch != epoch
			j.mu.Unlock()
			var err error
			if !stale {
				err = d.Remove()
			}
			j.work.Unlock()
			if stale {
				continue
			}
			if err != nil {
				// Left first: files below a log start are never read, and
				// the next try finishes the set (Remove skips what is gone).
				j.log.Warn("deleting segments below the log start failed; trying again", "err", err, "retry_in", janitorRetry.String())
				select {
				case <-j.stop:
					return
				case <-time.After(janitorRetry):
				}
				continue
			}
			j.mu.Lock()
			if j.epoch == epoch && len(j.pending) > 0 {
				j.pending = j.pending[1:]
			}
			j.mu.Unlock()
			j.freed.Add(d.Bytes())
			j.removed.Add(int64(d.Len()))
		}
	}
}

// dropAndPause forgets every pending set and waits for the one being
// removed; nothing is removed until the returned function is called. A
// snapshot install calls it: the logs it replaces are deleted whole, and
// the paths of their detached segments may name the new logs' files.
func (j *janitor) dropAndPause() (resume func()) {
	j.mu.Lock()
	j.pending, j.epoch = nil, j.epoch+1
	j.mu.Unlock()
	j.work.Lock()
	return j.work.Unlock
}

// close stops the janitor (after the set being removed, if any); sets
// still pending stay on disk below their log's start, and the next open
// deletes them (recovery trims each log to its checkpointed start).
func (j *janitor) close() {
	if j == nil {
		return // the store did not open
	}
	select {
	case <-j.stop:
	default:
		close(j.stop)
	}
	<-j.done
}

// JanitorStats returns how many segments the janitor deleted and the
// bytes they held, and how many detached sets still wait.
func (s *Store) JanitorStats() (segments, bytes int64, pending int) {
	s.janitor.mu.Lock()
	pending = len(s.janitor.pending)
	s.janitor.mu.Unlock()
	return s.janitor.removed.Load(), s.janitor.freed.Load(), pending
}

package query

import (
	"fmt"
	"math"
	"time"

	"keel/engine"
	"keel/engine/logstore"
	"keel/engine/record"
)

// Store is the engine's read side as a query uses it (*engine.Store).
type Store interface {
	Topic(name string) (*engine.Topic, bool)
	Committed(topic, group string, partition int32) (uint64, bool)
}

// Message is one stored message handed to a query.
type Message struct {
	Offset      uint64
	TimestampMs int64 // the broker's timestamp
	Value       []byte
}

// messages is what a query reads: messages in offset order.
type messages interface {
	// scan calls fn for each message until fn returns false or the
	// source's limit or end is reached. It returns the offset to read
	// next and how many messages fn saw.
	scan(fn func(Message) bool) (next uint64, consumed int, err error)
}

// source is a resolved SourceSpec.
type source struct {
	spec      *SourceSpec
	partition int32
	from      uint64
	limit     int
	logEnd    uint64 // the log end offset when the source was resolved
	messages  messages
}

// stoppedBy says which budget ended the source's scan early: "bytes"
// (--query-scan-bytes-max), "time" (--query-time-max), or "".
func (src *source) stoppedBy() string {
	if pm, ok := src.messages.(*partitionMessages); ok {
		return pm.stoppedBy
	}
	return ""
}

// readChunkBytes is how much of a log one read step hands out.
const readChunkBytes = 4 << 20

// resolveSource finds a source's partition and where it starts reading
// (api.md "Stream queries": explicit offset, a negative one meaning the
// log start; else the group's committed offset + 1; else the log start).
func resolveSource(st Store, spec *SourceSpec, what string, lim Limits, nowMs int64) (*source, error) {
	if spec == nil || spec.Topic == "" {
		return nil, badRequest("missing_source", "%s needs a topic", what)
	}
	if !engine.ValidTopicName(spec.Topic) {
		return nil, fmt.Errorf("%s: %w", what, engine.ErrInvalidTopic)
	}
	if spec.Group != "" && !engine.ValidGroupName(spec.Group) {
		return nil, fmt.Errorf("%s: %w", what, engine.ErrInvalidGroup)
	}
	var pid int64
	if spec.Partition != nil {
		pid = *spec.Partition
	}
	if pid < 0 || pid > math.MaxInt32 {
		return nil, badRequest("invalid_partition", "%s.partition must be a non-negative integer", what)
	}
	limit := int64(lim.ScanMax)
	if spec.Limit != nil {
		limit = *spec.Limit
	}
	if limit < 1 || limit > int64(lim.ScanMax) {
		return nil, badRequest("invalid_limit", "%s.limit must be 1 to %d (--query-scan-max)", what, lim.ScanMax)
	}
	t, ok := st.Topic(spec.Topic)
	if !ok {
		return nil, fmt.Errorf("%s: %w", what, engine.ErrUnknownTopic)
	}
	if pid >= int64(len(t.Partitions)) {
		return nil, fmt.Errorf("%s: %w", what, engine.ErrUnknownPartition)
	}
	p := t.Partitions[pid]
	src := &source{spec: spec, partition: int32(pid), limit: int(limit), from: p.Log.StartOffset()}
	switch {
	case spec.Offset != nil && *spec.Offset >= 0:
		src.from = uint64(*spec.Offset)
	case spec.Offset != nil:
	case spec.Group != "":
		if c, ok := st.Committed(spec.Topic, spec.Group, int32(pid)); ok {
			src.from = c + 1
		}
	}
	src.messages = &partitionMessages{p: p, what: fmt.Sprintf("%s/%d", spec.Topic, pid), from: src.from, limit: src.limit, nowMs: nowMs,
		bytesMax: lim.ScanBytesMax, deadline: time.UnixMilli(nowMs).Add(lim.TimeMax)}
	src.logEnd = p.Log.NextOffset()
	return src, nil
}

// partitionMessages reads a partition's log as consume does: from the
// log start at the earliest, past records removed by compaction, and
// past records the partition's TTL has expired (the retention sweep may
// not have deleted them yet). Besides its limit of messages, a scan
// stops after bytesMax bytes of values or at deadline, and says so in
// stoppedBy; the answer's next_offset is where to go on.
type partitionMessages struct {
	p         *engine.Partition
	what      string // "topic/partition", for errors
	from      uint64
	limit     int
	nowMs     int64
	bytesMax  int64
	deadline  time.Time
	stoppedBy string // "", "bytes" or "time"
}

// deadlineCheckMessages is how often a scan looks at the clock.
const deadlineCheckMessages = 4096

// start is where reading begins: from, moved up to the log start and past
// the records the TTL has expired.
func (s *partitionMessages) start(end uint64) (uint64, int64, bool, error) {
	log := s.p.Log
	from := max(s.from, log.StartOffset())
	expiredBefore, ttl := s.p.ExpiredBefore(s.nowMs)
	if ttl {
		fresh, ok, err := log.OffsetForTime(expiredBefore)
		if err != nil {
			return from, 0, false, fmt.Errorf("query: %s: find the first record within the TTL: %w", s.what, err)
		}
		if !ok {
			fresh = end
		}
		from = max(from, fresh)
	}
	return from, expiredBefore, ttl, nil
}

func (s *partitionMessages) scan(fn func(Message) bool) (uint64, int, error) {
	end := s.p.Log.NextOffset()
	from, expiredBefore, ttl, err := s.start(end)
	if err != nil {
		return from, 0, err
	}
	n := 0
	var bytes int64
	more := true
	var decodeErr error
	for from < end && more && decodeErr == nil {
		next, err := s.p.Log.Read(from, readChunkBytes, func(fr logstore.Frame) bool {
			m, err := record.DecodeMessage(fr.Offset, fr.Payload)
			if err != nil {
				decodeErr = fmt.Errorf("query: %s: offset %d: %w", s.what, fr.Offset, err)
				return false
			}
			if ttl && m.TimestampMs < expiredBefore {
				return true
			}
			n++
			bytes += int64(len(m.Value))
			more = fn(Message{Offset: m.Offset, TimestampMs: m.TimestampMs, Value: m.Value}) && n < s.limit && s.budgetLeft(n, bytes)
			return more
		})
		if err != nil {
			return from, n, fmt.Errorf("query: read %s at %d: %w", s.what, from, err)
		}
		if next <= from {
			break
		}
		from = next
	}
	return from, n, decodeErr
}

// budgetLeft reports whether the scan may read on after n messages of
// bytes bytes.
func (s *partitionMessages) budgetLeft(n int, bytes int64) bool {
	switch {
	case s.bytesMax > 0 && bytes >= s.bytesMax:
		s.stoppedBy = "bytes"
	case n%deadlineCheckMessages == 0 && !s.deadline.IsZero() && time.Now().After(s.deadline):
		s.stoppedBy = "time"
	default:
		return true
	}
	return false
}

// sliceMessages is a source over messages held in memory (tests).
type sliceMessages struct {
	msgs  []Message
	limit int
}

func (s *sliceMessages) scan(fn func(Message) bool) (uint64, int, error) {
	var next uint64
	n := 0
	for _, m := range s.msgs {
		if s.limit > 0 && n >= s.limit {
			break
		}
		n++
		next = m.Offset + 1
		if !fn(m) {
			break
		}
	}
	return next, n, nil
}

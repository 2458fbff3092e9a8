package logstore

import (
	"fmt"
	"io"
	"sort"
	"sync"

	"keel/engine/record"
)

// readChunkBytes is how much a read fetches from a segment at a time.
const readChunkBytes = 64 << 10

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readChunkBytes); return &b }}

// readView is a snapshot of one segment taken under Log.mu: what a reader
// may look at without holding the lock.
type readView struct {
	seg      *segment
	size     int64
	startRel uint32
	startPos int64
	chunk    int // bytes fetched at a time (0: readChunkBytes)
}

// Read calls fn for records from offset from on, in order, until fn returns
// false, the payload bytes handed out reach maxBytes (at least one record
// is always handed out), or the end of the log. It returns the offset to
// read next. An offset below StartOffset reads from StartOffset. The
// frame's payload is valid only during fn.
func (l *Log) Read(from uint64, maxBytes int, fn func(Frame) bool) (next uint64, err error) {
	bufp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bufp)
	budget := maxBytes
	handed := 0
	for {
		view, ok := l.view(&from)
		if !ok {
			return from, nil
		}
		var stop bool
		from, stop, err = readSegment(view, from, bufp, func(fr Frame) (taken, more bool) {
			if handed > 0 && len(fr.Payload) > budget {
				return false, false
			}
			handed++
			budget -= len(fr.Payload)
			return true, fn(fr) && budget > 0
		}, nil)
		if err != nil && l.detachedFrom(view.seg, err) {
			continue // deleted under the reader: go on from the new start
		}
		if err != nil || stop {
			return from, err
		}
	}
}

// ReadOne calls fn with the record at offset, if the log holds it (false
// otherwise: outside the log, or removed by compaction), fetching from the segment only what lies between the nearest
// index entry and that record (about one index interval) instead of a
// read's usual 64 KiB: a point lookup (a KV get) costs one small read. The
// frame's payload is valid only during fn.
func (l *Log) ReadOne(offset uint64, fn func(Frame)) (bool, error) {
	bufp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bufp)
	for {
		from := offset
		view, ok := l.view(&from)
		if !ok || from != offset {
			return false, nil // past the end, or below the start
		}
		view.chunk = int(l.cfg.IndexIntervalBytes) + record.HeaderBytes
		found := false
		_, _, err := readSegment(view, offset, bufp, func(fr Frame) (bool, bool) {
			if found = fr.Offset == offset; found { // else offset is in a hole
				fn(fr)
			}
			return true, false
		}, nil)
		if err != nil && l.detachedFrom(view.seg, err) {
			continue // deleted under the reader: look again
		}
		return found, err
	}
}

// view finds the segment holding *from (clamped to the log start) and
// snapshots it; ok is false at the end of the log.
func (l *Log) view(from *uint64) (readView, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if *from < l.start {
		*from = l.start
	}
	if *from >= l.next {
		return readView{}, false
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > *from }) - 1
	seg := l.segs[i]
	rel, pos := seg.index.lookup(uint32(*from - seg.base))
	return readView{seg: seg, size: seg.size, startRel: rel, startPos: pos}, true
}

// readSegment decodes frames of one segment from the view's start, skips
// those below from, and offers the rest to fn, which says whether it took
// the record and whether it wants more. stop reports that fn asked to stop
// (as opposed to reaching the end of the segment); next is one past the
// last record taken or skipped. When at is not nil it receives the byte
// position of the record offered last.
func readSegment(v readView, from uint64, bufp *[]byte, fn func(Frame) (taken, more bool), at *int64) (next uint64, stop bool, err error) {
	pos, want := v.startPos, v.seg.base+uint64(v.startRel)
	buf := (*bufp)[:0]
	bufStart := pos
	for pos < v.size {
		rel := int(pos - bufStart)
		fr, n, derr := record.DecodeFrame(buf[rel:])
		if derr == record.ErrShort {
			frameNeed := record.HeaderBytes
			if l, ok := record.HeaderLength(buf[rel:]); ok {
				frameNeed = record.FrameBytes(l)
			}
			if buf, err = fill(v, buf[rel:], pos, frameNeed, bufp); err != nil {
				return want, false, err
			}
			bufStart = pos
			if len(buf) < frameNeed {
				// The frame claims more bytes than the segment holds.
				return want, false, &CorruptionError{Path: v.seg.path, Pos: pos, Reason: fmt.Sprintf(
					"record %d runs past the end of the segment (%d bytes)", want, v.size)}
			}
			continue
		}
		if derr != nil || fr.Offset != want {
			return want, false, &CorruptionError{Path: v.seg.path, Pos: pos, Reason: fmt.Sprintf(
				"record %d does not decode on read (%v, offset field %d)", want, derr, fr.Offset)}
		}
		span, ok := record.Span(fr)
		if !ok {
			return want, false, &CorruptionError{Path: v.seg.path, Pos: pos, Reason: fmt.Sprintf("hole at %d has a bad span", want)}
		}
		if fr.Type == RecordHole {
			// Offsets compaction removed: nothing to offer, read on.
			pos += int64(n)
			want += span
			continue
		}
		if fr.Offset >= from {
			if at != nil {
				*at = pos
			}
			taken, more := fn(fr)
			if !taken {
				return want, true, nil
			}
			if !more {
				return want + 1, true, nil
			}
		}
		pos += int64(n)
		want++
	}
	return want, false, nil
}

// fill keeps the undecoded rest of buf and reads more of the segment after
// it, so that at least need bytes (or all that remain) are buffered.
func fill(v readView, rest []byte, pos int64, need int, bufp *[]byte) ([]byte, error) {
	chunk := v.chunk
	if chunk == 0 {
		chunk = readChunkBytes
	}
	want := min(int64(max(need, chunk)), v.size-pos)
	if int64(cap(*bufp)) < want {
		nb := make([]byte, want)
		*bufp = nb
	}
	buf := (*bufp)[:want]
	copy(buf, rest)
	f, err := sealedFiles.acquire(v.seg)
	if err != nil {
		return nil, err
	}
	n, err := f.ReadAt(buf[len(rest):], pos+int64(len(rest)))
	sealedFiles.release(v.seg)
	if err != nil && !(err == io.EOF && n == len(buf)-len(rest)) {
		return nil, fmt.Errorf("engine: read %s at %d: %w", v.seg.path, pos, err)
	}
	return buf, nil
}

package logstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"keel/engine/vfs"
)

// SegmentInfo describes one segment of a log: what a retention sweep
// decides on.
type SegmentInfo struct {
	Base           uint64 // first offset in the segment
	Next           uint64 // one past its last offset
	Bytes          int64  // bytes of its records
	MaxTimestampMs int64  // newest message timestamp in it (math.MinInt64: none)
	Sealed         bool   // no longer appended to
}

// Segments describes the log's segments, oldest first. The first may
// begin below StartOffset (its records there are no longer readable).
func (l *Log) Segments() []SegmentInfo {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]SegmentInfo, len(l.segs))
	for i, s := range l.segs {
		out[i] = SegmentInfo{Base: s.base, Next: s.base + s.count, Bytes: s.size, MaxTimestampMs: s.index.maxTs, Sealed: s.sealed}
	}
	return out
}

// OffsetForTime returns the first offset at or after the log start whose
// record's timestamp is at or after tsMs, and false when no record is
// (Kafka's offsets-for-times, ListOffsets with a timestamp). Timestamps are
// the leader's clock when the record was applied, so after a leader change
// they may step back; the answer is still the first such offset in log
// order. Each segment's sparse time index (its newest timestamp before
// each indexed record) bounds the scan to one index interval per segment
// that may hold the answer.
func (l *Log) OffsetForTime(tsMs int64) (uint64, bool, error) {
	bufp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bufp)
	from := uint64(0)
	for {
		view, ok := l.timeView(&from, tsMs)
		if !ok {
			return 0, false, nil
		}
		found, at := false, uint64(0)
		next, _, err := readSegment(view, from, bufp, func(fr Frame) (bool, bool) {
			if frameTime(fr) >= tsMs {
				found, at = true, fr.Offset
				return true, false
			}
			return true, true
		}, nil)
		switch {
		case l.detachedFrom(view.seg, err):
			continue // the start moved past it meanwhile: look again from the start
		case err != nil:
			return 0, false, err
		case found:
			return at, true, nil
		}
		from = next
	}
}

// timeView finds the first segment at or after *from (clamped to the log
// start) that may hold a record at or after tsMs, and a view starting at
// its last indexed record before which every record is older.
func (l *Log) timeView(from *uint64, tsMs int64) (readView, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	*from = max(*from, l.start)
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > *from }) - 1
	for ; i >= 0 && i < len(l.segs); i++ {
		seg := l.segs[i]
		if seg.base+seg.count <= *from || seg.index.maxTs < tsMs {
			continue
		}
		*from = max(*from, seg.base)
		rel, pos := seg.index.lookupTime(tsMs)
		if want := uint32(*from - seg.base); rel < want {
			// Start from the requested offset's own index entry when it
			// is further on.
			if r, p := seg.index.lookup(want); r > rel {
				rel, pos = r, p
			}
		}
		return readView{seg: seg, size: seg.size, startRel: rel, startPos: pos}, true
	}
	return readView{}, false
}

// Detached is a set of segments taken out of a log by AdvanceStart whose
// files are still on disk: Remove deletes them, off the apply path.
type Detached struct {
	fs   vfs.FS
	dir  string
	segs []*segment
}

// Bytes is what removing the detached segments gives back to the disk.
func (d Detached) Bytes() int64 {
	var n int64
	for _, s := range d.segs {
		n += s.size
	}
	return n
}

// Len is the number of detached segments.
func (d Detached) Len() int { return len(d.segs) }

// Remove deletes the detached segments' files, oldest first: each index
// file, then the segment renamed to a .tmp name (OpenLog removes leftover
// .tmp files) with the directory fsynced, then freed gently (see
// removeGently) so that the fsyncs of the WAL on the same disk do not
// stall. A crash part-way leaves a prefix of them removed, never a gap. A
// file already gone (the log was replaced by a snapshot meanwhile) is
// skipped.
func (d Detached) Remove() error {
	for _, s := range d.segs {
		sealedFiles.close(s)
		if err := removeIfExists(d.fs, filepath.Join(d.dir, indexName(s.base))); err != nil {
			return err
		}
		doomed := s.path + ".tmp"
		if err := d.fs.Rename(s.path, doomed); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("engine: take segment %s out of the log: %w", s.path, err)
		}
		if err := vfs.SyncDir(d.fs, d.dir); err != nil {
			return err
		}
		// Out of the log now: a file a failure leaves here is a .tmp
		// file, which OpenLog removes; a retry of the set skips it.
		if err := removeGently(d.fs, doomed); err != nil {
			return err
		}
	}
	return nil
}

// AdvanceStart moves the log start up to offset (clamped to the log end;
// never down) and detaches the sealed segments whose records all lie below
// the start, for the caller to Remove. It does no I/O, so a state machine
// can apply it on its loop: the start is state (the state checkpoint holds
// it and a replay moves it again), and files left below it by a crash are
// accepted at recovery and detached by the next call. moved is how many
// offsets stopped being readable. Readers reading a detached segment
// continue from the new start.
func (l *Log) AdvanceStart(offset uint64) (moved uint64, d Detached, err error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.appendable(); err != nil {
		return 0, Detached{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	offset = min(offset, l.next)
	if offset > l.start {
		moved = offset - l.start
		l.start = offset
	}
	d = Detached{fs: l.cfg.FS, dir: l.dir}
	for len(l.segs) > 1 && l.segs[0].sealed && l.segs[0].base+l.segs[0].count <= l.start {
		d.segs = append(d.segs, l.segs[0])
		l.segs = l.segs[1:]
	}
	return moved, d, nil
}

// detachedFrom reports whether seg left the log (AdvanceStart, or Compact
// replacing it): a reader that met its closed file then looks again.
func (l *Log) detachedFrom(seg *segment, err error) bool {
	if !errors.Is(err, errSegmentClosed) && !errors.Is(err, os.ErrClosed) {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base >= seg.base })
	return i == len(l.segs) || l.segs[i] != seg // deleted, or replaced by a compacted copy
}

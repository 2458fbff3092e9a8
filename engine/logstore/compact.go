package logstore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"keel/engine/record"
	"keel/engine/vfs"
)

// Log compaction rewrites sealed segments without the records a caller
// no longer needs (older versions of a key, old tombstones). Offsets are
// never renumbered: the removed records become hole frames
// (record.TypeHole), each standing for a run of consecutive offsets, so
// every segment still covers its offsets densely, the sparse index still
// maps offsets to positions, and recovery checks a compacted segment as
// any other. Readers skip holes.
//
// A segment is rewritten into a .tmp file, fsynced and checked by a full
// scan, then renamed over the original (atomic), the directory fsynced,
// and its index file written again. A crash before the rename leaves a
// .tmp file (OpenLog removes it); after it, an index file that no longer
// matches the segment's size, so recovery scans the segment and writes
// it again. The original's blocks are freed a megabyte at a time through
// a descriptor kept open across the rename, as WAL segments are.

// CompactStats says what Compact did.
type CompactStats struct {
	Segments    int    // segments rewritten
	Removed     uint64 // records turned into holes
	BytesBefore int64  // size of the rewritten segments before
	BytesAfter  int64  // and after
}

// CompactGainMin is the share of a segment's bytes a rewrite must save
// for Compact to make it as a rule: below it the segment is left as it is.
const CompactGainMin = 0.1

// Drop says whether compaction removes a record (its frame; the payload
// is valid only during the call), and whether it must go now even if
// the segment's rewrite saves little.
type Drop func(Frame) (drop, now bool)

// Compact rewrites each sealed segment whose offsets all lie below below,
// turning into holes the records drop reports (drop sees each record's
// frame; its payload is valid only during the call). It returns what it
// did. Appends go on meanwhile; only the swap of a rewritten segment
// holds the append lock. It returns early, between segments, once stop is
// closed (nil: never).
//
// A segment is rewritten only when that saves at least CompactGainMin of
// its bytes, or when drop says a record must go now (Drop's second
// result: a tombstone whose retention passed).
func (l *Log) Compact(below uint64, stop <-chan struct{}, drop Drop) (CompactStats, error) {
	var st CompactStats
	l.mu.RLock()
	var segs []*segment
	for _, s := range l.segs {
		if s.sealed && s.base+s.count <= below && s.base+s.count > l.start {
			segs = append(segs, s)
		}
	}
	l.mu.RUnlock()
	for _, seg := range segs {
		select {
		case <-stop:
			return st, nil
		default:
		}
		l.appendMu.Lock()
		err := l.appendable() // closed (a snapshot install): stop
		l.appendMu.Unlock()
		if err != nil {
			return st, nil
		}
		before, after, removed, err := l.compactSegment(seg, drop)
		if err != nil {
			return st, err
		}
		if after > 0 {
			st.Segments++
			st.Removed += removed
			st.BytesBefore += before
			st.BytesAfter += after
		}
	}
	return st, nil
}

// compactSegment rewrites seg if that saves CompactGainMin of it, or a
// record must go now. after is 0 when it was left alone.
func (l *Log) compactSegment(seg *segment, drop Drop) (before, after int64, removed uint64, err error) {
	f, err := l.cfg.FS.OpenFile(seg.path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, 0, nil // deleted meanwhile (retention)
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("engine: compact: open %s: %w", seg.path, err)
	}
	defer f.Close()
	l.mu.RLock()
	size := seg.size
	l.mu.RUnlock()
	if size == 0 {
		return 0, 0, 0, nil
	}
	// Read, not mapped: retention may shrink the file under us (the
	// janitor frees a detached segment gently), and a read of a mapping
	// past a file's new end is a fault that kills the process. A short
	// read means the segment left the log: leave it.
	data := make([]byte, size)
	if n, err := f.ReadAt(data, 0); int64(n) != size {
		if errors.Is(err, io.EOF) {
			return 0, 0, 0, nil
		}
		return 0, 0, 0, fmt.Errorf("engine: compact: read %s: %w", seg.path, err)
	}

	// First pass: what a rewrite would save.
	saved, urgent, err := compactPlan(data, seg, drop)
	if err != nil || saved <= 0 || !urgent && float64(saved) < CompactGainMin*float64(size) {
		return 0, 0, 0, err
	}
	tmp := seg.path + ".compact.tmp"
	out, err := l.cfg.FS.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("engine: compact: %w", err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	removed, err = compactWrite(data, seg, drop, w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		l.cfg.FS.Remove(tmp)
		return 0, 0, 0, fmt.Errorf("engine: compact %s: %w", seg.path, err)
	}
	return l.swapCompacted(seg, tmp, size, removed)
}

// compactPlan walks a segment's frames and returns how many bytes
// dropping would save (holes cost a frame each run).
func compactPlan(data []byte, seg *segment, drop Drop) (int64, bool, error) {
	var saved int64
	inRun, urgent := false, false
	err := walkFrames(data, seg, func(fr Frame, raw []byte) error {
		gone := fr.Type == RecordHole
		if !gone {
			d, now := drop(fr)
			gone, urgent = d, urgent || d && now
		}
		if gone {
			saved += int64(len(raw))
			if !inRun {
				saved -= int64(record.FrameBytes(8))
			}
		}
		inRun = gone
		return nil
	})
	return saved, urgent, err
}

// compactWrite writes the segment's frames to w: kept ones byte for byte,
// dropped ones and existing holes merged into one hole per run.
func compactWrite(data []byte, seg *segment, drop Drop, w *bufio.Writer) (uint64, error) {
	var removed uint64
	var run struct {
		on          bool
		start, span uint64
		batch       uint32
		flags       uint8
	}
	flush := func() error {
		if !run.on {
			return nil
		}
		run.on = false
		_, err := w.Write(record.AppendHole(nil, run.batch, run.flags, run.start, run.span))
		return err
	}
	err := walkFrames(data, seg, func(fr Frame, raw []byte) error {
		span, _ := record.Span(fr)
		if d, _ := drop(fr); fr.Type != RecordHole && !d {
			if err := flush(); err != nil {
				return err
			}
			_, err := w.Write(raw)
			return err
		}
		if fr.Type != RecordHole {
			removed++
		}
		if !run.on {
			run.on, run.start, run.span = true, fr.Offset, 0
		}
		run.span += span
		run.batch, run.flags = fr.Batch, fr.Flags // the last replaced: the segment's last batch never moves back
		return nil
	})
	if err == nil {
		err = flush()
	}
	return removed, err
}

// walkFrames calls fn for every frame of a sealed segment's bytes, with
// the frame's raw bytes, checking offsets cover the segment densely.
func walkFrames(data []byte, seg *segment, fn func(Frame, []byte) error) error {
	want := seg.base
	for pos := 0; pos < len(data); {
		fr, n, err := record.DecodeFrame(data[pos:])
		span, ok := record.Span(fr)
		if err != nil || fr.Offset != want || !ok {
			return &CorruptionError{Path: seg.path, Pos: int64(pos), Reason: fmt.Sprintf("record %d does not decode for compaction (%v)", want, err)}
		}
		if err := fn(fr, data[pos:pos+n]); err != nil {
			return err
		}
		pos += n
		want += span
	}
	if want != seg.base+seg.count {
		return &CorruptionError{Path: seg.path, Reason: fmt.Sprintf("segment ends at %d, its index at %d", want, seg.base+seg.count)}
	}
	return nil
}

// swapCompacted checks the rewritten file by a full scan and puts it in
// seg's place.
func (l *Log) swapCompacted(seg *segment, tmp string, before int64, removed uint64) (int64, int64, uint64, error) {
	tf, err := l.cfg.FS.OpenFile(tmp, os.O_RDONLY, 0)
	if err != nil {
		return 0, 0, 0, err
	}
	var res scanResult
	info, err := tf.Stat()
	if err == nil {
		res, err = scanFile(tf, tmp, seg.base, info.Size(), l.cfg.IndexIntervalBytes, false)
	}
	tf.Close()
	if err == nil && (res.cut || res.count != seg.count) {
		err = fmt.Errorf("engine: compact %s: the rewrite covers %d offsets, the segment %d", seg.path, res.count, seg.count)
	}
	if err != nil {
		l.cfg.FS.Remove(tmp)
		return 0, 0, 0, err
	}
	ns, old, err := l.swapLocked(seg, tmp, res)
	if err != nil || ns == nil {
		return 0, 0, 0, err
	}
	// Made durable after the swap, outside the append lock. Until the
	// directory fsync the old name may still be what a power loss leaves,
	// so the original is freed only after it (until then its descriptor
	// is kept). A failure here is not a fault of the log: both files are
	// whole, and an index file that does not match its segment is rebuilt
	// by recovery.
	if err := vfs.SyncDir(l.cfg.FS, l.dir); err != nil {
		l.keepOpen(old)
		return 0, 0, 0, err
	}
	go shrinkGently(old) // unlinked, and durably so: only this descriptor holds it
	l.lifeMu.RLock()     // not once the log is closed (its directory may be another log's after a snapshot install)
	defer l.lifeMu.RUnlock()
	l.mu.RLock() // copied under the lock, written without it: appends publish under l.mu
	gone := l.closedForLife || l.detachedLocked(ns)
	idx := encodeIndexFile(ns.base, sealedInfo{count: ns.count, size: ns.size, lastBatch: ns.lastBatch, index: ns.index})
	l.mu.RUnlock()
	if !gone {
		if err := vfs.WriteFileAtomic(l.cfg.FS, l.dir, indexName(ns.base), idx); err != nil {
			return 0, 0, 0, err
		}
	}
	return before, res.size, removed, nil
}

// swapLocked puts the checked rewrite tmp in seg's place: under the append
// lock (no roll, truncation or start move meanwhile) but with no fsync,
// so appends to the log wait for a rename and two opens at most. It
// returns the new segment and a descriptor of the original for freeing
// it, or nil when seg left the log meanwhile.
func (l *Log) swapLocked(seg *segment, tmp string, res scanResult) (*segment, *os.File, error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.appendable(); err != nil {
		l.cfg.FS.Remove(tmp)
		return nil, nil, err
	}
	l.mu.RLock()
	gone := l.detachedLocked(seg)
	l.mu.RUnlock()
	if gone { // deleted by retention meanwhile (the swap below holds l.mu; AdvanceStart needs the append lock held here)
		l.cfg.FS.Remove(tmp)
		return nil, nil, nil
	}
	old, err := l.cfg.FS.OpenFile(seg.path, os.O_WRONLY, 0)
	if err != nil {
		l.cfg.FS.Remove(tmp)
		return nil, nil, fmt.Errorf("engine: compact: %w", err)
	}
	// Under l.mu, so that no reader opens the path between the rename and
	// the swap (it would read the new file at the old positions): a reader
	// of the old copy finds its file closed, waits for l.mu, sees the
	// segment replaced and looks again (detachedFrom).
	l.mu.Lock()
	defer l.mu.Unlock()
	sealedFiles.close(seg)
	if err := l.cfg.FS.Rename(tmp, seg.path); err != nil {
		old.Close()
		return nil, nil, l.setFault(fmt.Errorf("engine: compact: replace %s: %w", seg.path, err))
	}
	nf, err := l.cfg.FS.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		l.keepOpen(old)
		return nil, nil, l.setFault(fmt.Errorf("engine: compact: reopen %s: %w", seg.path, err))
	}
	ns := &segment{fs: l.cfg.FS, base: seg.base, path: seg.path, file: nf, size: res.size, count: res.count,
		lastBatch: res.lastBatch, index: res.index, sealed: true}
	for i, s := range l.segs {
		if s == seg {
			l.segs[i] = ns
		}
	}
	sealedFiles.adopt(ns)
	return ns, old, nil
}

// keepOpen holds f (an unlinked original whose unlink may not be durable)
// until the log closes, so its blocks stay what its old name may still
// point at after a power loss.
func (l *Log) keepOpen(f *os.File) {
	l.mu.Lock()
	l.pinned = append(l.pinned, f)
	l.mu.Unlock()
}

// detachedLocked reports whether seg is no longer one of the log's
// segments. The caller holds l.mu.
func (l *Log) detachedLocked(seg *segment) bool {
	for _, s := range l.segs {
		if s == seg {
			return false
		}
	}
	return true
}

// shrinkGently frees an unlinked file's blocks a step at a time through
// f, then closes it (see removeGently). It is best effort: if a step
// fails, closing f frees the rest at once.
func shrinkGently(f *os.File) {
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return
	}
	for size := st.Size(); size > removeStepBytes; {
		size -= removeStepBytes
		if f.Truncate(size) != nil {
			return
		}
		time.Sleep(removeStepPause)
	}
}

package logstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"keel/engine/vfs"
)

// Checkpoint makes every appended record durable and records that in the
// log's durable mark, so recovery treats all of it as vouched.
func (l *Log) Checkpoint() error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if l.fault == nil && !l.closed && l.lastMark == l.currentDurableMark() {
		return nil // nothing new since the last durable mark: skip the fsyncs
	}
	if err := l.syncLocked(); err != nil {
		return err
	}
	if err := l.writeDurableMark(); err != nil {
		return l.setFault(err)
	}
	return nil
}

// TruncateTo removes every record at or above next, so that NextOffset
// becomes next. Recovery uses it to cut a partition back to the state a
// state checkpoint describes before the WAL is replayed onto it. Below
// StartOffset (the start moved past next after that checkpoint: the replay
// moves it again), the log becomes empty at next.
func (l *Log) TruncateTo(next uint64) error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.appendable(); err != nil {
		return err
	}
	if next >= l.next {
		return nil
	}
	if next < l.start {
		return l.resetEmptyAt(next)
	}
	// Lower the durable mark before touching any file: a crash part-way then
	// leaves a mark that vouches only for what survives the cut, and
	// recovery followed by the same TruncateTo finishes the job.
	keep := l.segmentsBelow(next)
	target := l.segs[keep-1]
	pos, err := l.positionOf(target, next)
	if err != nil {
		return l.setFault(err)
	}
	if err := l.syncLocked(); err != nil {
		return err
	}
	if err := l.writeDurableMarkOf(durableMark{ActiveBase: target.base, VouchedBytes: pos,
		NextOffset: next, Batch: l.batch, StartOffset: l.start}); err != nil {
		return l.setFault(err)
	}
	if err := l.dropSegmentsFrom(keep); err != nil {
		return l.setFault(err)
	}
	if err := l.cutActiveAt(next, pos); err != nil {
		return l.setFault(err)
	}
	return nil
}

// resetEmptyAt drops every segment and leaves an empty log whose start
// and end are next. Each step survives a crash:
//   - the durable mark first says start = end = next, with nothing vouched,
//     naming as active segment the lower of the current one and next
//     (never a segment above any that may exist later): a recovery then
//     finds the old segments, and the same TruncateTo starts over (or, if
//     the segment holding next is still first, cuts it at next);
//   - segments go oldest first, so what remains never has a gap;
//   - with every segment gone, recovery creates the empty one at next
//     (recoverEmpty);
//   - a last mark names it.
func (l *Log) resetEmptyAt(next uint64) error {
	if err := l.writeDurableMarkOf(durableMark{ActiveBase: min(l.active().base, next), NextOffset: next, Batch: l.batch, StartOffset: next}); err != nil {
		return l.setFault(err)
	}
	l.mu.Lock()
	old := l.segs
	l.segs = nil
	l.mu.Unlock()
	for _, s := range old {
		sealedFiles.close(s)
	}
	// Every segment file in the directory, those detached below the start
	// and not deleted yet included (else they would leave a gap).
	bases, err := listSegments(l.cfg.FS, l.dir)
	if err != nil {
		return l.setFault(err)
	}
	for _, base := range bases {
		if err := removeIfExists(l.cfg.FS, filepath.Join(l.dir, indexName(base))); err != nil {
			return l.setFault(err)
		}
		if err := removeIfExists(l.cfg.FS, filepath.Join(l.dir, segmentName(base))); err != nil {
			return l.setFault(err)
		}
		if err := vfs.SyncDir(l.cfg.FS, l.dir); err != nil {
			return l.setFault(err)
		}
	}
	seg, err := createSegment(l.cfg.FS, l.dir, next, l.cfg.IndexIntervalBytes)
	if err != nil {
		return l.setFault(err)
	}
	l.mu.Lock()
	l.segs = []*segment{seg}
	l.start, l.next = next, next
	l.synced.seg, l.synced.size = nil, 0
	l.mu.Unlock()
	l.writeBehindFrom = 0
	if err := l.writeDurableMark(); err != nil {
		return l.setFault(err)
	}
	return nil
}

// segmentsBelow returns how many leading segments start below next (at
// least one).
func (l *Log) segmentsBelow(next uint64) int {
	keep := len(l.segs)
	for keep > 1 && l.segs[keep-1].base >= next {
		keep--
	}
	return keep
}

// dropSegmentsFrom deletes the segments after the first keep and makes
// the new last segment active again.
func (l *Log) dropSegmentsFrom(keep int) error {
	if keep == len(l.segs) {
		return nil
	}
	dropped := l.segs[keep:]
	if err := sealedFiles.pin(l.segs[keep-1]); err != nil { // active again: it holds its file
		return err
	}
	l.mu.Lock()
	l.segs = l.segs[:keep]
	l.segs[keep-1].sealed = false
	l.mu.Unlock()
	for _, s := range dropped {
		sealedFiles.close(s)
		if err := l.cfg.FS.Remove(s.path); err != nil {
			return fmt.Errorf("engine: remove segment %s: %w", s.path, err)
		}
		if err := removeIfExists(l.cfg.FS, filepath.Join(l.dir, indexName(s.base))); err != nil {
			return err
		}
	}
	// The active segment has no index file: recovery scans it.
	if err := removeIfExists(l.cfg.FS, filepath.Join(l.dir, indexName(l.active().base))); err != nil {
		return err
	}
	return vfs.SyncDir(l.cfg.FS, l.dir)
}

// cutActiveAt cuts the active segment at byte pos, just before record next.
func (l *Log) cutActiveAt(next uint64, pos int64) error {
	seg := l.active()
	if err := cutTail(seg.file, pos, seg.size); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	rel := uint32(next - seg.base)
	entries := seg.index.entries
	for len(entries) > 0 && entries[len(entries)-1].rel >= rel {
		entries = entries[:len(entries)-1]
	}
	seg.index.entries = entries
	seg.index.nextPos = 0
	if n := len(entries); n > 0 {
		seg.index.nextPos = int64(entries[n-1].pos) + seg.index.intervalBytes
	}
	seg.size, seg.count = pos, next-seg.base
	l.next = next
	return nil
}

// positionOf returns the byte position of record off in seg (or seg.size
// when off is one past its last record).
func (l *Log) positionOf(seg *segment, off uint64) (int64, error) {
	l.mu.RLock()
	view := readView{seg: seg, size: seg.size}
	view.startRel, view.startPos = seg.index.lookup(uint32(off - seg.base))
	l.mu.RUnlock()
	pos := view.startPos
	bufp := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(bufp)
	found, at := false, uint64(0)
	reached, _, err := readSegment(view, off, bufp, func(fr Frame) (bool, bool) {
		found, at = true, fr.Offset
		return false, false
	}, &pos)
	if err != nil {
		return 0, err
	}
	if found && at != off || !found && reached != off {
		// off lies in a hole of a compacted segment (compaction only
		// rewrites segments below the last state checkpoint, which a
		// truncation never goes below).
		return 0, fmt.Errorf("engine: cut %s at %d: inside a compacted range", seg.path, off)
	}
	if !found {
		return view.size, nil
	}
	return pos, nil
}

// DeleteBefore moves the log start up to offset (never down, never past the
// end) and deletes the sealed segments that hold only records below it. It
// returns how many records became unreadable and how many bytes were freed.
func (l *Log) DeleteBefore(offset uint64) (deleted uint64, freedBytes int64, err error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.appendable(); err != nil {
		return 0, 0, err
	}
	l.mu.Lock()
	offset = min(offset, l.next)
	if offset <= l.start {
		l.mu.Unlock()
		return 0, 0, nil
	}
	deleted = offset - l.start
	l.start = offset
	var gone []*segment
	for len(l.segs) > 1 && l.segs[0].base+l.segs[0].count <= offset {
		gone = append(gone, l.segs[0])
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	// The durable mark records the new start before files go, so a crash in
	// between only leaves files below the start, which recovery accepts. It
	// vouches for the active segment, so that is synced first (appends
	// without sync may be pending).
	if err := l.syncLocked(); err != nil {
		return 0, 0, err
	}
	if err := l.writeDurableMark(); err != nil {
		return 0, 0, l.setFault(err)
	}
	for _, s := range gone {
		freedBytes += s.size
		sealedFiles.close(s)
		if err := l.cfg.FS.Remove(s.path); err != nil {
			return deleted, freedBytes, l.setFault(fmt.Errorf("engine: remove segment %s: %w", s.path, err))
		}
		if err := removeIfExists(l.cfg.FS, filepath.Join(l.dir, indexName(s.base))); err != nil {
			return deleted, freedBytes, l.setFault(err)
		}
	}
	if len(gone) > 0 {
		if err := vfs.SyncDir(l.cfg.FS, l.dir); err != nil {
			return deleted, freedBytes, l.setFault(err)
		}
	}
	return deleted, freedBytes, nil
}

// ActiveSyncer returns a function that fsyncs the segment that is active
// now, without holding the log's locks while it runs, so appends go on. A
// segment rolled over in between was synced by the roll; a later segment
// holds only records appended after this call.
func (l *Log) ActiveSyncer() func() error {
	l.appendMu.Lock()
	fault := l.appendable()
	l.appendMu.Unlock()
	if fault != nil {
		// A log with a storage fault may hold a partial batch: no state checkpoint
		// may vouch for it.
		return func() error { return fault }
	}
	l.mu.RLock()
	seg, size := l.active(), l.active().size
	idle := l.synced.seg == seg && l.synced.size == size
	l.mu.RUnlock()
	if idle {
		return func() error { return nil } // nothing written since the last sync
	}
	return func() error {
		// Through the file cache: the segment may have been sealed (and its
		// file closed by the cache) since the capture.
		f, err := sealedFiles.acquire(seg)
		if errors.Is(err, errSegmentClosed) {
			return nil // deleted meanwhile: nothing left to make durable
		}
		if err != nil {
			return err
		}
		err = l.io.Sync(int(f.Fd()))
		sealedFiles.release(seg)
		if err != nil {
			return fmt.Errorf("engine: sync %s for a state checkpoint: %w", seg.path, err)
		}
		l.noteSynced(seg, size)
		return nil
	}
}

// noteSynced records that seg is durable up to size (never moving back).
func (l *Log) noteSynced(seg *segment, size int64) {
	l.mu.Lock()
	if l.synced.seg != seg || l.synced.size < size {
		l.synced.seg, l.synced.size = seg, size
	}
	l.mu.Unlock()
}

// DropSegmentsBefore deletes the sealed segments whose records all lie
// below offset; the log start becomes the first remaining segment's base.
// Unlike DeleteBefore it writes no durable mark (recovery derives the start
// from the files), so it is cheap enough for WAL truncation while appends
// go on; only the list update holds the append lock.
func (l *Log) DropSegmentsBefore(offset uint64) error {
	l.appendMu.Lock()
	if err := l.appendable(); err != nil {
		l.appendMu.Unlock()
		return err
	}
	l.mu.Lock()
	var gone []*segment
	for len(l.segs) > 1 && l.segs[0].base+l.segs[0].count <= offset {
		gone = append(gone, l.segs[0])
		l.segs = l.segs[1:]
	}
	if l.segs[0].base > l.start {
		l.start = l.segs[0].base
	}
	l.mu.Unlock()
	l.appendMu.Unlock()
	// Oldest first, index before segment, directory fsynced after each:
	// a crash part-way leaves a prefix removed and never a gap. A segment
	// leaves the log by a rename to a .tmp name (OpenLog removes leftover
	// .tmp files), and is then freed gently (see removeGently).
	for _, s := range gone {
		sealedFiles.close(s)
		if err := removeIfExists(l.cfg.FS, filepath.Join(l.dir, indexName(s.base))); err != nil {
			return err
		}
		doomed := s.path + ".tmp"
		if err := l.cfg.FS.Rename(s.path, doomed); err != nil {
			return fmt.Errorf("engine: take segment %s out of the log: %w", s.path, err)
		}
		if err := vfs.SyncDir(l.cfg.FS, l.dir); err != nil {
			return err
		}
		if err := removeGently(l.cfg.FS, doomed); err != nil {
			return err
		}
	}
	return nil
}

// Freeing a large file at once can stall every fdatasync on the same
// filesystem for tens of milliseconds: ext4 frees the blocks in one
// journal transaction and, mounted with -o discard (common on cloud
// disks), discards them before that commit completes. Measured here:
// dropping a 64 MiB WAL segment took 56–67 ms, and the WAL's group-commit
// fdatasyncs that overlapped it took 17–47 ms instead of about 0.1 ms.
// removeGently shrinks the file by removeStepBytes at a time, pausing
// removeStepPause between steps, so each commit carries a small free.
const (
	removeStepBytes = 1 << 20
	removeStepPause = 2 * time.Millisecond
)

// removeGently frees path's blocks a step at a time, then unlinks it. It
// is for files already out of any log (renamed to .tmp): a crash part-way
// leaves a shorter .tmp file, which OpenLog removes.
func removeGently(fs vfs.FS, path string) error {
	f, err := fs.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("engine: open %s to free it: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("engine: stat %s: %w", path, err)
	}
	for size := st.Size(); size > removeStepBytes; {
		size -= removeStepBytes
		if err := f.Truncate(size); err != nil {
			f.Close()
			return fmt.Errorf("engine: shrink %s: %w", path, err)
		}
		time.Sleep(removeStepPause)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("engine: close %s: %w", path, err)
	}
	if err := fs.Remove(path); err != nil {
		return fmt.Errorf("engine: remove %s: %w", path, err)
	}
	return nil
}

func removeIfExists(fs vfs.FS, path string) error {
	if err := fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("engine: remove %s: %w", path, err)
	}
	return nil
}

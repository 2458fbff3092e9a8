package logstore

import (
	"fmt"
	"sync"

	"keel/engine/record"
	"keel/engine/vfs"
	"keel/invariant"
	"keel/ring"
)

// AppendBatch appends recs as one group commit: one write and, with sync,
// one fdatasync. It returns the offset of the first record and the batch
// number. Without sync the records are visible to readers at once but are
// durable only after Sync or the next synced batch.
func (l *Log) AppendBatch(recs []Record, sync bool) (first, batch uint64, err error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.appendable(); err != nil {
		return 0, 0, err
	}
	if len(recs) == 0 {
		return 0, 0, ErrEmptyBatch
	}
	size := 0
	for _, r := range recs {
		if r.Type != RecordMessage && r.Type != RecordRaftEntry && r.Type != RecordRaftState {
			return 0, 0, fmt.Errorf("%w: %d", ErrRecordType, r.Type)
		}
		size += record.FrameBytes(len(r.Payload))
	}
	if size > l.cfg.BatchBytesMax {
		return 0, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrBatchTooLarge, size, l.cfg.BatchBytesMax)
	}
	if seg := l.active(); seg.size > 0 && seg.size+int64(size) > l.cfg.SegmentBytes {
		if err := l.roll(); err != nil {
			return 0, 0, err
		}
	}
	seg := l.active()
	first, batch = l.next, l.batch+1
	if cap(l.encoded) < size {
		if size > encodedKeepBytes {
			l.encoded = getEncodeBuf(size)
		} else {
			// Kept by this log from now on; doubling keeps regrowth rare.
			l.encoded = make([]byte, 0, min(max(size, 2*cap(l.encoded)), encodedKeepBytes))
		}
	}
	l.encode(recs, first, batch, seg)
	if err := l.io.WriteAt(seg.fd(), seg.size, [][]byte{l.encoded}, sync); err != nil {
		return 0, 0, l.setFault(fmt.Errorf("engine: append to %s: %w", seg.path, err))
	}
	l.batch = batch
	l.publish(seg, len(recs), size, batch)
	if invariant.Enabled {
		l.checkDense()
	}
	if sync {
		l.noteSynced(seg, seg.size)
		l.writeBehindFrom = seg.size
	} else {
		l.writeBehind(seg)
	}
	l.sinceMark += int64(size)
	if sync && l.sinceMark >= l.cfg.MarkIntervalBytes {
		if err := l.writeDurableMark(); err != nil {
			return first, batch, l.setFault(err)
		}
	}
	return first, batch, nil
}

// writeBehind starts the writeback of the active segment's unsynced bytes
// once there are WriteBehindBytes of them (see LogConfig). It is a hint:
// when the kernel refuses it (ENOMEM under memory pressure), the range is
// tried again with the next append, and any writeback failure is still
// reported by the fsync that vouches for these bytes (ring.StartWriteback
// does not consume the file's error state). So a failure here is counted,
// not a fault, and the append it follows has succeeded either way.
func (l *Log) writeBehind(seg *segment) {
	from := min(l.writeBehindFrom, seg.size) // a truncation may have cut below it
	if l.cfg.WriteBehindBytes < 0 || seg.size-from < l.cfg.WriteBehindBytes {
		return
	}
	if err := startWriteback(seg.fd(), from, seg.size-from); err != nil {
		l.writeBehindFailures.Add(1)
		return
	}
	l.writeBehindFrom = seg.size
}

// startWriteback is ring.StartWriteback; tests replace it to make the
// kernel refuse.
var startWriteback = ring.StartWriteback

// WriteBehindFailures counts write-behind hints the kernel refused.
func (l *Log) WriteBehindFailures() uint64 { return l.writeBehindFailures.Load() }

// encode frames recs into l.encoded and notes their index entries.
func (l *Log) encode(recs []Record, first, batch uint64, seg *segment) {
	buf := l.encoded[:0]
	l.pendingIndex = l.pendingIndex[:0]
	pos := seg.size
	for i, r := range recs {
		var flags uint8
		if i == len(recs)-1 {
			flags = record.FlagBatchEnd
		}
		before := len(buf)
		buf = record.AppendFrame(buf, Frame{Type: r.Type, Flags: flags, Batch: uint32(batch), Offset: first + uint64(i), Payload: r.Payload})
		l.pendingIndex = append(l.pendingIndex, pendingEntry{rel: uint32(first + uint64(i) - seg.base), pos: uint32(pos),
			ts: frameTime(Frame{Type: r.Type, Payload: r.Payload})})
		pos += int64(len(buf) - before)
	}
	l.encoded = buf
}

// pendingEntry is a record of a batch being written, for the index once
// the write is published.
type pendingEntry struct {
	rel, pos uint32
	ts       int64
}

// encodedKeepBytes is the largest encode buffer a log keeps between appends.
const encodedKeepBytes = 1 << 20

// encodeBufs holds encode buffers larger than encodedKeepBytes between
// appends, shared by every log. Without it each large batch (the WAL's
// group commits under NDJSON load are megabytes) allocated and zeroed a
// fresh buffer, and grew it by copying: 14% of the server's CPU in an
// NDJSON-1000 profile.
var encodeBufs sync.Pool // of *[]byte

// getEncodeBuf returns an empty buffer with room for size bytes.
func getEncodeBuf(size int) []byte {
	if p, ok := encodeBufs.Get().(*[]byte); ok && cap(*p) >= size {
		return (*p)[:0]
	}
	// Round up so that batches of similar sizes can share buffers.
	c := encodedKeepBytes
	for c < size {
		c *= 2
	}
	return make([]byte, 0, c)
}

func putEncodeBuf(b []byte) { encodeBufs.Put(&b) }

// publish makes a completed write visible to readers.
func (l *Log) publish(seg *segment, n, size int, batch uint64) {
	l.mu.Lock()
	for _, e := range l.pendingIndex {
		seg.index.add(e.rel, int64(e.pos), e.ts)
	}
	seg.size += int64(size)
	seg.count += uint64(n)
	seg.lastBatch = uint32(batch)
	l.next += uint64(n)
	l.mu.Unlock()
	// Do not keep a large buffer alive per log (there may be thousands of
	// partition logs) after an occasional large batch: it goes back to the
	// shared pool.
	if cap(l.encoded) > encodedKeepBytes {
		putEncodeBuf(l.encoded)
		l.encoded = nil
	}
}

// Sync makes every appended record durable.
func (l *Log) Sync() error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.syncLocked()
}

// syncLocked fsyncs the active segment; a failure is a sticky fault.
func (l *Log) syncLocked() error {
	if err := l.appendable(); err != nil {
		return err
	}
	if err := l.io.Sync(l.active().fd()); err != nil {
		return l.setFault(fmt.Errorf("engine: sync %s: %w", l.active().path, err))
	}
	return nil
}

// roll seals the active segment and starts a new one at the next offset.
// The sealed segment is durable before its index names it complete.
func (l *Log) roll() error {
	old := l.active()
	if err := l.io.Sync(old.fd()); err != nil {
		return l.setFault(fmt.Errorf("engine: sync %s before sealing: %w", old.path, err))
	}
	l.mu.RLock()
	err := writeIndexFile(l.cfg.FS, l.dir, old)
	l.mu.RUnlock()
	if err != nil {
		return l.setFault(err)
	}
	seg, err := createSegment(l.cfg.FS, l.dir, l.next, l.cfg.IndexIntervalBytes)
	if err != nil {
		return l.setFault(err)
	}
	l.mu.Lock()
	old.sealed = true
	l.segs = append(l.segs, seg)
	l.mu.Unlock()
	sealedFiles.adopt(old)
	l.writeBehindFrom = 0
	if err := l.writeDurableMark(); err != nil {
		return l.setFault(err)
	}
	return nil
}

// writeDurableMark records what is durable now. Callers hold appendMu and
// have synced the active segment (every synced batch has).
func (l *Log) writeDurableMark() error {
	return l.writeDurableMarkOf(l.currentDurableMark())
}

// currentDurableMark is what a durable mark written now would say.
func (l *Log) currentDurableMark() durableMark {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return durableMark{ActiveBase: l.active().base, VouchedBytes: l.active().size, NextOffset: l.next, Batch: l.batch, StartOffset: l.start}
}

// writeDurableMarkOf writes c as the log's durable mark.
func (l *Log) writeDurableMarkOf(c durableMark) error {
	if err := vfs.WriteFileAtomic(l.cfg.FS, l.dir, durableMarkFileName, c.encode()); err != nil {
		return fmt.Errorf("engine: durable mark: %w", err)
	}
	l.sinceMark = 0
	l.lastMark = c
	return nil
}

func (l *Log) appendable() error {
	if l.closed {
		return ErrClosed
	}
	return l.fault
}

// setFault keeps the first storage fault and returns it; every later
// append fails with it.
func (l *Log) setFault(err error) error {
	if l.fault == nil {
		l.fault = err
	}
	return l.fault
}

// Close makes everything durable, writes a durable mark and closes the files.
func (l *Log) Close() error {
	l.lifeMu.Lock()
	defer l.lifeMu.Unlock()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.mu.Lock()
	l.closedForLife = true
	for _, f := range l.pinned {
		f.Close()
	}
	l.pinned = nil
	l.mu.Unlock()
	var err error
	if l.fault == nil {
		if err = l.io.Sync(l.active().fd()); err == nil {
			err = l.writeDurableMark()
		}
	}
	l.mu.Lock()
	l.closeFiles()
	l.mu.Unlock()
	return err
}

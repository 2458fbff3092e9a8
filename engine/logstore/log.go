package logstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"keel/engine/vfs"
	"keel/invariant"
	"keel/ring"
)

// Record is one record to append: a type (RecordMessage, ...) and its
// payload. The payload is copied during the append.
type Record struct {
	Type    uint8
	Payload []byte
}

// Errors returned by appends.
var (
	ErrClosed        = errors.New("engine: log closed")
	ErrBatchTooLarge = errors.New("engine: batch larger than BatchBytesMax")
	ErrRecordType    = errors.New("engine: record type not appendable")
	ErrEmptyBatch    = errors.New("engine: empty batch")
)

// RecoveryReport says what OpenLog found and did.
type RecoveryReport struct {
	MarkFound      bool
	Segments       int    // segment files in the log
	ScannedBytes   int64  // bytes of the active segment read and checked
	ScannedRecords uint64 // valid records in the active segment
	CutBytes       int64  // torn tail bytes zeroed and cut (never acknowledged)
	CutAt          int64  // position of the cut in the active segment
}

// Log is a sequence of records with dense offsets on segment files. Appends
// are serialised (one appender at a time); reads run concurrently with them.
type Log struct {
	dir string
	cfg LogConfig
	io  ring.Backend

	mu     sync.RWMutex // guards segs, next, start and the segments' mutable fields
	segs   []*segment   // by base offset; the last is the active one
	next   uint64       // offset the next record gets
	start  uint64       // first offset stored
	report RecoveryReport
	synced struct { // how far a segment is known fsynced, so idle logs skip the state checkpoint's fsyncs
		seg  *segment
		size int64
	}

	appendMu            sync.Mutex    // serialises appends, rolls, durable marks and Close
	batch               uint64        // last group-commit sequence number used
	sinceMark           int64         // bytes appended since the last durable mark
	lastMark            durableMark   // the durable mark on disk
	writeBehindFrom     int64         // active segment position from which writeback was not started
	writeBehindFailures atomic.Uint64 // write-behind hints the kernel refused
	encoded             []byte        // reusable encode buffer
	pendingIndex        []pendingEntry
	fault               error    // first storage fault; sticky
	unsyncedDirs        []string // DeferDirSync: directories whose new names are not durable yet (guarded by mu)
	closed              bool
	pinned              []*os.File // originals of compacted segments held until close (guarded by mu; see keepOpen)

	// lifeMu orders Close after work done outside the append lock on
	// the log's directory (compaction's index file): Close takes it for
	// writing and sets closedForLife.
	lifeMu        sync.RWMutex
	closedForLife bool // guarded by mu
}

// OpenLog opens (creating if needed) the log in dir and recovers it. It
// fails with a *CorruptionError when fsynced data is damaged.
func OpenLog(dir string, io ring.Backend, cfg LogConfig) (*Log, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	created, err := vfs.MakeDirs(cfg.FS, dir, !cfg.DeferDirSync)
	if err != nil {
		return nil, err
	}
	if len(created) == 0 { // a directory just made holds no leftovers
		if err := removeTempFiles(cfg.FS, dir); err != nil {
			return nil, err
		}
	}
	l := &Log{dir: dir, cfg: cfg, io: io}
	if cfg.DeferDirSync && len(created) > 0 {
		// Innermost first: the log's own directory holds the segment file,
		// each parent holds the directory below it.
		l.unsyncedDirs = append([]string{dir}, parentsOf(created)...)
	}
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

// recover rebuilds the log's state from its files. Order matters: the
// directory and the tail are fsynced before they are read, so nothing that
// recovery builds on can vanish in a later power loss.
func (l *Log) recover() error {
	if len(l.unsyncedDirs) > 0 {
		return l.recoverEmpty(durableMark{}, false) // just created: nothing to read
	}
	if err := vfs.SyncDir(l.cfg.FS, l.dir); err != nil {
		return err
	}
	ckpt, haveCkpt, err := loadDurableMark(l.cfg.FS, l.dir)
	if err != nil {
		return err
	}
	l.report.MarkFound = haveCkpt
	l.lastMark = ckpt
	bases, err := listSegments(l.cfg.FS, l.dir)
	if err != nil {
		return err
	}
	if len(bases) == 0 {
		return l.recoverEmpty(ckpt, haveCkpt)
	}
	for _, base := range bases[:len(bases)-1] {
		seg, err := openSealedSegment(l.cfg.FS, l.dir, base, l.cfg.IndexIntervalBytes)
		if err != nil {
			return err
		}
		if err := l.appendRecovered(seg); err != nil {
			return err
		}
	}
	active, err := l.recoverActive(bases[len(bases)-1], ckpt, haveCkpt)
	if err != nil {
		return err
	}
	if err := l.appendRecovered(active); err != nil {
		return err
	}
	l.report.Segments = len(l.segs)
	if haveCkpt && ckpt.NextOffset > l.next {
		return &CorruptionError{Path: l.dir, Reason: fmt.Sprintf(
			"the durable mark vouches for offsets below %d but the log ends at %d", ckpt.NextOffset, l.next)}
	}
	if haveCkpt && ckpt.StartOffset > l.start {
		l.start = ckpt.StartOffset
	}
	l.batch = l.recoveredBatch(ckpt)
	if !haveCkpt || l.report.CutBytes > 0 {
		return l.writeDurableMark()
	}
	return nil
}

func (l *Log) recoverEmpty(ckpt durableMark, haveCkpt bool) error {
	// A mark whose start is its end describes a log emptied at that offset
	// (TruncateTo below the start, cut short after its segments went).
	base := uint64(0)
	if haveCkpt && ckpt.NextOffset > 0 {
		if ckpt.StartOffset != ckpt.NextOffset {
			return &CorruptionError{Path: l.dir, Reason: fmt.Sprintf(
				"the durable mark vouches for %d records but no segment files exist", ckpt.NextOffset)}
		}
		base = ckpt.NextOffset
	}
	seg, err := createSegmentSync(l.cfg.FS, l.dir, base, l.cfg.IndexIntervalBytes, len(l.unsyncedDirs) == 0)
	if err != nil {
		return err
	}
	l.segs = []*segment{seg}
	l.start, l.next = base, base
	if len(l.unsyncedDirs) > 0 {
		l.report.Segments = 1
		// An empty file has nothing to fsync: only its name, which the
		// directory syncs make durable.
		l.synced.seg, l.synced.size = seg, 0
		return nil // no durable mark: recovery treats it all as tail
	}
	l.report.Segments = 1
	return l.writeDurableMark()
}

// recoverActive opens the last segment, fsyncs it, scans it against the
// durable mark and cuts a torn tail.
func (l *Log) recoverActive(base uint64, ckpt durableMark, haveCkpt bool) (*segment, error) {
	path := filepath.Join(l.dir, segmentName(base))
	f, err := l.cfg.FS.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("engine: open segment %s: %w", path, err)
	}
	seg := &segment{base: base, path: path, file: f}
	// An index file beside the active segment is stale (left by a
	// truncation cut short by a crash): the scan below is the truth.
	if err := removeIfExists(l.cfg.FS, filepath.Join(l.dir, indexName(base))); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("engine: fsync segment %s before recovery: %w", path, err)
	}
	vouched := int64(0)
	if haveCkpt {
		switch {
		case ckpt.ActiveBase > base:
			f.Close()
			return nil, &CorruptionError{Path: l.dir, Reason: fmt.Sprintf(
				"the durable mark names active segment %s, which is missing", segmentName(ckpt.ActiveBase))}
		case ckpt.ActiveBase == base:
			vouched = ckpt.VouchedBytes
		}
	}
	res, err := scanFile(f, path, base, vouched, l.cfg.IndexIntervalBytes, l.cfg.TailUnordered)
	if err != nil {
		f.Close()
		return nil, err
	}
	if res.cut {
		if err := cutTail(f, res.size, res.size+res.cutBytes); err != nil {
			f.Close()
			return nil, err
		}
		l.report.CutBytes, l.report.CutAt = res.cutBytes, res.size
	}
	l.report.ScannedBytes, l.report.ScannedRecords = res.size+res.cutBytes, res.count
	seg.size, seg.count, seg.lastBatch, seg.index = res.size, res.count, res.lastBatch, res.index
	return seg, nil
}

// appendRecovered adds a recovered segment, checking that offsets stay dense.
func (l *Log) appendRecovered(seg *segment) error {
	if n := len(l.segs); n > 0 {
		prev := l.segs[n-1]
		if want := prev.base + prev.count; seg.base != want {
			sealedFiles.close(seg)
			return &CorruptionError{Path: seg.path, Reason: fmt.Sprintf(
				"segment starts at offset %d but the previous one ends at %d", seg.base, want)}
		}
	} else {
		l.start = seg.base
	}
	l.segs = append(l.segs, seg)
	l.next = seg.base + seg.count
	return nil
}

// recoveredBatch returns the highest group-commit number in use: the last
// frame's 32-bit batch, widened with the durable mark's full number.
func (l *Log) recoveredBatch(ckpt durableMark) uint64 {
	for i := len(l.segs) - 1; i >= 0; i-- {
		if l.segs[i].count > 0 {
			return widenBatch(ckpt.Batch, l.segs[i].lastBatch)
		}
	}
	return ckpt.Batch
}

// widenBatch returns the 64-bit number whose low 32 bits are low and which
// lies within 2^31 of hint.
func widenBatch(hint uint64, low uint32) uint64 {
	c := hint&^0xffffffff | uint64(low)
	switch {
	case c+(1<<31) < hint:
		c += 1 << 32
	case c > hint+(1<<31) && c >= 1<<32:
		c -= 1 << 32
	}
	return c
}

// cutTail removes a torn tail: zero it and fsync, so the stale bytes can
// never decode even if the truncate is lost, then truncate and fsync.
func cutTail(f *os.File, at, end int64) error {
	zeros := make([]byte, min(end-at, 1<<20))
	for pos := at; pos < end; {
		n := min(int64(len(zeros)), end-pos)
		if _, err := f.WriteAt(zeros[:n], pos); err != nil {
			return fmt.Errorf("engine: zero torn tail of %s: %w", f.Name(), err)
		}
		pos += n
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("engine: fsync %s after zeroing its tail: %w", f.Name(), err)
	}
	if err := f.Truncate(at); err != nil {
		return fmt.Errorf("engine: truncate %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("engine: fsync %s after truncate: %w", f.Name(), err)
	}
	return nil
}

// parentsOf returns the directories holding the created ones (innermost
// first): fsyncing them makes the created names durable.
func parentsOf(created []string) []string {
	out := make([]string, len(created))
	for i, d := range created {
		out[i] = filepath.Dir(d)
	}
	return out
}

// PendingDirs returns the directories whose fsyncs would make the names of
// a log created with DeferDirSync durable (none once done). The state
// capture syncs them, each once, before the state checkpoint names the log.
func (l *Log) PendingDirs() []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.unsyncedDirs
}

// DirsSynced records that dirs (as PendingDirs returned them) are durable.
func (l *Log) DirsSynced(dirs []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.unsyncedDirs) == len(dirs) {
		l.unsyncedDirs = nil
	}
}

func removeTempFiles(fs vfs.FS, dir string) error {
	entries, err := fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("engine: list %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			if err := fs.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("engine: remove leftover %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// LastBatch is the last group-commit number used (recovered on open).
func (l *Log) LastBatch() uint64 {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.batch
}

// Recovery reports what OpenLog found.
func (l *Log) Recovery() RecoveryReport { return l.report }

// checkDense asserts (build tag invariants) that the segments cover the
// offsets from the log start to its end with no gap or overlap.
func (l *Log) checkDense() {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for i := 1; i < len(l.segs); i++ {
		prev := l.segs[i-1]
		invariant.Check(prev.base+prev.count == l.segs[i].base, "%s: segment %d ends at %d, the next starts at %d",
			l.dir, prev.base, prev.base+prev.count, l.segs[i].base)
	}
	last := l.segs[len(l.segs)-1]
	invariant.Check(last.base+last.count == l.next, "%s: the last segment ends at %d, the log at %d", l.dir, last.base+last.count, l.next)
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }

// NextOffset is the offset the next appended record will get; every offset
// below it and at or above StartOffset is readable.
func (l *Log) NextOffset() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.next
}

// StartOffset is the first offset still stored.
func (l *Log) StartOffset() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.start
}

func (l *Log) active() *segment { return l.segs[len(l.segs)-1] }

func (l *Log) closeFiles() {
	for _, s := range l.segs {
		sealedFiles.close(s)
	}
}

// Bytes is the size of the stored records (from the log start's segment on).
func (l *Log) Bytes() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var n int64
	for _, s := range l.segs {
		n += s.size
	}
	return n
}

package logstore

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"keel/engine/vfs"
)

// Segment files are named by their base offset, zero-padded so that names
// sort like numbers: 00000000000000001000.log and its index .idx.
const (
	segmentSuffix = ".log"
	indexSuffix   = ".idx"
)

func segmentName(base uint64) string { return fmt.Sprintf("%020d%s", base, segmentSuffix) }
func indexName(base uint64) string   { return fmt.Sprintf("%020d%s", base, indexSuffix) }

// segment is one file of a log. Fields other than base, path and the
// file cache's are guarded by Log.mu. The active segment holds its file
// open; a sealed one is in the file cache (filecache.go), which guards
// file, cached, refs, elem and gone, and may close its file while no
// reader uses it.
type segment struct {
	fs        vfs.FS // opens the file again after the cache closed it
	base      uint64
	path      string
	file      *os.File
	size      int64  // bytes of complete records, all visible to readers
	count     uint64 // records in the segment
	lastBatch uint32
	index     sparseIndex
	sealed    bool

	cached bool          // in the file cache (sealed)
	refs   int           // readers using file now
	elem   *list.Element // in the cache's LRU list while open and unused
	gone   bool          // closed for good: the segment left its log
}

func (s *segment) fd() int { return int(s.file.Fd()) }

// listSegments returns the base offsets of the segment files in dir, sorted.
func listSegments(fs vfs.FS, dir string) ([]uint64, error) {
	entries, err := fs.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("engine: list %s: %w", dir, err)
	}
	var bases []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		base, err := strconv.ParseUint(strings.TrimSuffix(name, segmentSuffix), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("engine: unexpected file %s in %s", name, dir)
		}
		bases = append(bases, base)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}

// createSegment creates an empty segment file and makes its name durable
// before anything is written into it.
func createSegment(fs vfs.FS, dir string, base uint64, intervalBytes int64) (*segment, error) {
	return createSegmentSync(fs, dir, base, intervalBytes, true)
}

// createSegmentSync is createSegment; without sync the name is not made
// durable (DeferDirSync: the log's owner syncs the directory later).
func createSegmentSync(fs vfs.FS, dir string, base uint64, intervalBytes int64, sync bool) (*segment, error) {
	path := filepath.Join(dir, segmentName(base))
	f, err := fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("engine: create segment %s: %w", path, err)
	}
	if !sync {
		return &segment{fs: fs, base: base, path: path, file: f, index: newSparseIndex(intervalBytes)}, nil
	}
	if err := vfs.SyncDir(fs, dir); err != nil {
		f.Close()
		return nil, err
	}
	return &segment{fs: fs, base: base, path: path, file: f, index: newSparseIndex(intervalBytes)}, nil
}

// openSealedSegment opens a segment that is not the last one. Its index file
// is trusted when it matches the file; otherwise the whole segment is
// scanned as vouched data and the index is written again.
func openSealedSegment(fs vfs.FS, dir string, base uint64, intervalBytes int64) (*segment, error) {
	path := filepath.Join(dir, segmentName(base))
	// Read-write: a truncation (TruncateTo) can make a sealed segment
	// active again.
	f, err := fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("engine: open segment %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("engine: stat %s: %w", path, err)
	}
	seg := &segment{fs: fs, base: base, path: path, file: f, sealed: true}
	info, err := readIndexFile(fs, filepath.Join(dir, indexName(base)), base, intervalBytes)
	if err == nil && info.size == st.Size() {
		seg.size, seg.count, seg.lastBatch, seg.index = info.size, info.count, info.lastBatch, info.index
		sealedFiles.adopt(seg)
		return seg, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, errIndexFile) {
		f.Close()
		return nil, fmt.Errorf("engine: read index of %s: %w", path, err)
	}
	res, err := scanFile(f, path, base, st.Size(), intervalBytes, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	seg.size, seg.count, seg.lastBatch, seg.index = res.size, res.count, res.lastBatch, res.index
	if err := writeIndexFile(fs, dir, seg); err != nil {
		f.Close()
		return nil, err
	}
	sealedFiles.adopt(seg)
	return seg, nil
}

// writeIndexFile persists a sealed segment's index atomically.
func writeIndexFile(fs vfs.FS, dir string, seg *segment) error {
	info := sealedInfo{count: seg.count, size: seg.size, lastBatch: seg.lastBatch, index: seg.index}
	return vfs.WriteFileAtomic(fs, dir, indexName(seg.base), encodeIndexFile(seg.base, info))
}

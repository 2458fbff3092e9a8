package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"

	"keel/engine/record"
	"keel/engine/vfs"
)

// indexEntry maps a record (offset relative to the segment base) to the byte
// position of its frame. Segments are at most segmentBytesLimit, so both fit
// in 32 bits. tsBefore is the newest timestamp of the segment's records
// before rel (math.MinInt64 when none): it never decreases along the
// index, so it is also the segment's time index (see Log.OffsetForTime).
type indexEntry struct {
	rel      uint32
	pos      uint32
	tsBefore int64
}

// sparseIndex holds one entry per intervalBytes of segment data, so finding
// an offset costs a binary search and a scan of at most one interval.
type sparseIndex struct {
	entries       []indexEntry
	intervalBytes int64
	nextPos       int64 // no entry is added before this position
	maxTs         int64 // newest record timestamp in the segment (math.MinInt64: none)
}

func newSparseIndex(intervalBytes int64) sparseIndex {
	return sparseIndex{intervalBytes: intervalBytes, maxTs: math.MinInt64}
}

// add notes the frame of record rel at pos with timestamp ts
// (math.MinInt64 for a record without one), recording an index entry if
// the last one is at least one interval back.
func (x *sparseIndex) add(rel uint32, pos int64, ts int64) {
	if pos >= x.nextPos {
		x.entries = append(x.entries, indexEntry{rel: rel, pos: uint32(pos), tsBefore: x.maxTs})
		x.nextPos = pos + x.intervalBytes
	}
	x.maxTs = max(x.maxTs, ts)
}

// lookupTime returns the last indexed record before which every record of
// the segment is older than ts, and its position: a scan for the first
// record at or after ts starts there.
func (x *sparseIndex) lookupTime(ts int64) (uint32, int64) {
	i := sort.Search(len(x.entries), func(i int) bool { return x.entries[i].tsBefore >= ts })
	if i == 0 {
		return 0, 0
	}
	e := x.entries[i-1]
	return e.rel, int64(e.pos)
}

// frameTime is the timestamp of a message frame (math.MinInt64 for other
// frames): the first 8 bytes of its payload (record.AppendMessage).
func frameTime(fr Frame) int64 {
	if fr.Type != RecordMessage {
		return math.MinInt64
	}
	if ts, ok := record.MessageTimestamp(fr.Payload); ok {
		return ts
	}
	return math.MinInt64
}

// lookup returns the indexed record at or before rel and its position.
func (x *sparseIndex) lookup(rel uint32) (uint32, int64) {
	i := sort.Search(len(x.entries), func(i int) bool { return x.entries[i].rel > rel })
	if i == 0 {
		return 0, 0
	}
	e := x.entries[i-1]
	return e.rel, int64(e.pos)
}

// The index file of a sealed segment is one record.TypeIndex frame whose offset
// is the segment base and whose payload is:
//
//	count u64 | size u64 | last batch u32 | format u32 | max timestamp i64 |
//	(rel u32, pos u32, ts before i64) * n
//
// Format 1 added the timestamps. A file of format 0 (rel and pos only) is
// treated as missing: the segment is scanned once and the file written
// again.
const (
	indexFileHeaderBytes = 32
	indexFileEntryBytes  = 16
	indexFileFormat      = 1
)

// sealedInfo is what an index file says about its segment.
type sealedInfo struct {
	count     uint64
	size      int64
	lastBatch uint32
	index     sparseIndex
}

func encodeIndexFile(base uint64, info sealedInfo) []byte {
	p := make([]byte, indexFileHeaderBytes, indexFileHeaderBytes+indexFileEntryBytes*len(info.index.entries))
	binary.LittleEndian.PutUint64(p[0:8], info.count)
	binary.LittleEndian.PutUint64(p[8:16], uint64(info.size))
	binary.LittleEndian.PutUint32(p[16:20], info.lastBatch)
	binary.LittleEndian.PutUint32(p[20:24], indexFileFormat)
	binary.LittleEndian.PutUint64(p[24:32], uint64(info.index.maxTs))
	for _, e := range info.index.entries {
		p = binary.LittleEndian.AppendUint32(p, e.rel)
		p = binary.LittleEndian.AppendUint32(p, e.pos)
		p = binary.LittleEndian.AppendUint64(p, uint64(e.tsBefore))
	}
	return record.AppendFrame(nil, Frame{Type: record.TypeIndex, Flags: record.FlagBatchEnd, Offset: base, Payload: p})
}

var errIndexFile = errors.New("index file invalid")

// readIndexFile loads the index of the segment at base. Any problem is
// reported as an error; the caller then rebuilds the index by scanning.
func readIndexFile(fs vfs.FS, path string, base uint64, intervalBytes int64) (sealedInfo, error) {
	b, err := fs.ReadFile(path)
	if err != nil {
		return sealedInfo{}, err
	}
	fr, size, err := record.DecodeFrame(b)
	if err != nil {
		return sealedInfo{}, fmt.Errorf("%w: %v", errIndexFile, err)
	}
	p := fr.Payload
	if size != len(b) || fr.Type != record.TypeIndex || fr.Offset != base || len(p) < 24 {
		return sealedInfo{}, errIndexFile
	}
	if f := binary.LittleEndian.Uint32(p[20:24]); f != indexFileFormat {
		return sealedInfo{}, fmt.Errorf("%w: format %d", errIndexFile, f)
	}
	if len(p) < indexFileHeaderBytes || (len(p)-indexFileHeaderBytes)%indexFileEntryBytes != 0 {
		return sealedInfo{}, errIndexFile
	}
	info := sealedInfo{
		count:     binary.LittleEndian.Uint64(p[0:8]),
		size:      int64(binary.LittleEndian.Uint64(p[8:16])),
		lastBatch: binary.LittleEndian.Uint32(p[16:20]),
		index:     newSparseIndex(intervalBytes),
	}
	info.index.maxTs = int64(binary.LittleEndian.Uint64(p[24:32]))
	for q := p[indexFileHeaderBytes:]; len(q) > 0; q = q[indexFileEntryBytes:] {
		e := indexEntry{rel: binary.LittleEndian.Uint32(q[0:4]), pos: binary.LittleEndian.Uint32(q[4:8]),
			tsBefore: int64(binary.LittleEndian.Uint64(q[8:16]))}
		if n := len(info.index.entries); n > 0 && (e.rel <= info.index.entries[n-1].rel || e.pos <= info.index.entries[n-1].pos ||
			e.tsBefore < info.index.entries[n-1].tsBefore) {
			return sealedInfo{}, fmt.Errorf("%w: entries out of order", errIndexFile)
		}
		if e.tsBefore > info.index.maxTs {
			return sealedInfo{}, fmt.Errorf("%w: entry newer than the segment", errIndexFile)
		}
		if uint64(e.rel) >= info.count || int64(e.pos) >= info.size {
			return sealedInfo{}, fmt.Errorf("%w: entry past the segment", errIndexFile)
		}
		info.index.entries = append(info.index.entries, e)
	}
	return info, nil
}

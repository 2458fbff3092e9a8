package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"keel/engine/record"
	"keel/engine/vfs"
)

// indexEntry maps a record (offset relative to the segment base) to the byte
// position of its frame. Segments are at most segmentBytesLimit, so both fit
// in 32 bits.
type indexEntry struct {
	rel uint32
	pos uint32
}

// sparseIndex holds one entry per intervalBytes of segment data, so finding
// an offset costs a binary search and a scan of at most one interval.
type sparseIndex struct {
	entries       []indexEntry
	intervalBytes int64
	nextPos       int64 // no entry is added before this position
}

func newSparseIndex(intervalBytes int64) sparseIndex {
	return sparseIndex{intervalBytes: intervalBytes}
}

// add records a frame at pos if the last entry is at least one interval back.
func (x *sparseIndex) add(rel uint32, pos int64) {
	if pos < x.nextPos {
		return
	}
	x.entries = append(x.entries, indexEntry{rel: rel, pos: uint32(pos)})
	x.nextPos = pos + x.intervalBytes
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
//	count u64 | size u64 | last batch u32 | pad u32 | (rel u32, pos u32) * n
const indexFileHeaderBytes = 24

// sealedInfo is what an index file says about its segment.
type sealedInfo struct {
	count     uint64
	size      int64
	lastBatch uint32
	index     sparseIndex
}

func encodeIndexFile(base uint64, info sealedInfo) []byte {
	p := make([]byte, indexFileHeaderBytes, indexFileHeaderBytes+8*len(info.index.entries))
	binary.LittleEndian.PutUint64(p[0:8], info.count)
	binary.LittleEndian.PutUint64(p[8:16], uint64(info.size))
	binary.LittleEndian.PutUint32(p[16:20], info.lastBatch)
	for _, e := range info.index.entries {
		p = binary.LittleEndian.AppendUint32(p, e.rel)
		p = binary.LittleEndian.AppendUint32(p, e.pos)
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
	if size != len(b) || fr.Type != record.TypeIndex || fr.Offset != base ||
		len(p) < indexFileHeaderBytes || (len(p)-indexFileHeaderBytes)%8 != 0 {
		return sealedInfo{}, errIndexFile
	}
	info := sealedInfo{
		count:     binary.LittleEndian.Uint64(p[0:8]),
		size:      int64(binary.LittleEndian.Uint64(p[8:16])),
		lastBatch: binary.LittleEndian.Uint32(p[16:20]),
		index:     newSparseIndex(intervalBytes),
	}
	for q := p[indexFileHeaderBytes:]; len(q) > 0; q = q[8:] {
		e := indexEntry{rel: binary.LittleEndian.Uint32(q[0:4]), pos: binary.LittleEndian.Uint32(q[4:8])}
		if n := len(info.index.entries); n > 0 && (e.rel <= info.index.entries[n-1].rel || e.pos <= info.index.entries[n-1].pos) {
			return sealedInfo{}, fmt.Errorf("%w: entries out of order", errIndexFile)
		}
		if uint64(e.rel) >= info.count || int64(e.pos) >= info.size {
			return sealedInfo{}, fmt.Errorf("%w: entry past the segment", errIndexFile)
		}
		info.index.entries = append(info.index.entries, e)
	}
	return info, nil
}

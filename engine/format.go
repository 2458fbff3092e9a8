package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Every file the engine writes is a sequence of frames. A frame is:
//
//	 0        4        8    9    10   12       16                 24
//	 +--------+--------+----+----+----+--------+------------------+-----------//-------+-------+
//	 | length | crc32c |type|flag|rsvd| batch  |      offset      |   payload (length)  |  pad  |
//	 +--------+--------+----+----+----+--------+------------------+-----------//-------+-------+
//	   u32 LE   u32 LE   u8   u8  u16   u32 LE       u64 LE                               0..7 zero
//
//   - length: payload bytes, at most frameBodyBytesMax.
//   - crc32c: Castagnoli CRC over bytes 0..3 (the length) and 8..end of
//     payload, so a flipped bit anywhere except the padding is caught, and
//     the padding is checked to be zero.
//   - type: what the payload is (recordType*); 0 is never valid, so a zeroed
//     region never decodes as a frame.
//   - flags: flagBatchEnd marks the last frame of one group commit.
//   - rsvd: zero.
//   - batch: low 32 bits of the group-commit sequence number that wrote the
//     frame. Recovery uses it to tell a torn last batch from corruption in
//     older, fsynced batches.
//   - offset: the record's offset in its log (dense: base, base+1, ...).
//   - pad: zero bytes up to the next multiple of 8.
//
// Decoding checks cheap things first (enough bytes, length bound, known type,
// zero reserved bits) and the CRC last; it never allocates.

// Frame layout limits.
const (
	frameHeaderBytes  = 24
	frameAlign        = 8
	frameBodyBytesMax = 64 << 20 // one frame holds at most one Raft entry of a full NDJSON batch
)

// Record types. The values are on disk: never renumber.
const (
	RecordMessage     uint8 = 1 // a partition message (see message.go)
	RecordRaftEntry   uint8 = 2 // a Raft log entry (replication's WAL)
	RecordRaftState   uint8 = 3 // a Raft HardState (replication's WAL)
	recordDurableMark uint8 = 4 // the checkpoint file's one frame
	recordIndex       uint8 = 5 // a sealed segment's sparse index file
	recordTypeMax           = recordIndex
)

// Frame flags.
const (
	flagBatchEnd uint8 = 1 << 0
	flagsKnown         = flagBatchEnd
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is one decoded frame. Payload aliases the decoded buffer.
type Frame struct {
	Type    uint8
	Flags   uint8
	Batch   uint32
	Offset  uint64
	Payload []byte
}

// Decode errors. errFrameShort means the bytes end inside the frame (a torn
// write at the end of a file looks like this); every other error means the
// bytes are not a frame.
var (
	errFrameShort    = errors.New("frame: truncated")
	errFrameLength   = errors.New("frame: length over limit")
	errFrameType     = errors.New("frame: unknown type")
	errFrameReserved = errors.New("frame: reserved bits set")
	errFramePadding  = errors.New("frame: non-zero padding")
	errFrameCRC      = errors.New("frame: checksum mismatch")
)

// frameBytes is the on-disk size of a frame with a payload of n bytes.
func frameBytes(n int) int {
	return (frameHeaderBytes + n + frameAlign - 1) &^ (frameAlign - 1)
}

// AppendFrame appends the encoding of f to dst and returns the result.
func AppendFrame(dst []byte, f Frame) []byte {
	n := len(f.Payload)
	size := frameBytes(n)
	start := len(dst)
	dst = grow(dst, size)
	b := dst[start : start+size]
	binary.LittleEndian.PutUint32(b[0:4], uint32(n))
	b[8] = f.Type
	b[9] = f.Flags
	b[10], b[11] = 0, 0
	binary.LittleEndian.PutUint32(b[12:16], f.Batch)
	binary.LittleEndian.PutUint64(b[16:24], f.Offset)
	copy(b[frameHeaderBytes:], f.Payload)
	clear(b[frameHeaderBytes+n:])
	binary.LittleEndian.PutUint32(b[4:8], frameCRC(b, n))
	return dst
}

func frameCRC(b []byte, n int) uint32 {
	crc := crc32.Update(0, castagnoli, b[0:4])
	return crc32.Update(crc, castagnoli, b[8:frameHeaderBytes+n])
}

// DecodeFrame decodes the frame at the start of b and returns it with its
// on-disk size. It is pure: bytes in, frame out.
func DecodeFrame(b []byte) (Frame, int, error) {
	if len(b) < frameHeaderBytes {
		return Frame{}, 0, errFrameShort
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n > frameBodyBytesMax {
		return Frame{}, 0, errFrameLength
	}
	typ, flags := b[8], b[9]
	if typ == 0 || typ > recordTypeMax {
		return Frame{}, 0, errFrameType
	}
	if flags&^flagsKnown != 0 || b[10] != 0 || b[11] != 0 {
		return Frame{}, 0, errFrameReserved
	}
	size := frameBytes(int(n))
	if len(b) < size {
		return Frame{}, 0, errFrameShort
	}
	for _, p := range b[frameHeaderBytes+int(n) : size] {
		if p != 0 {
			return Frame{}, 0, errFramePadding
		}
	}
	if binary.LittleEndian.Uint32(b[4:8]) != frameCRC(b, int(n)) {
		return Frame{}, 0, errFrameCRC
	}
	return Frame{
		Type:    typ,
		Flags:   flags,
		Batch:   binary.LittleEndian.Uint32(b[12:16]),
		Offset:  binary.LittleEndian.Uint64(b[16:24]),
		Payload: b[frameHeaderBytes : frameHeaderBytes+int(n)],
	}, size, nil
}

// frameHeaderLength reads a frame's declared payload length without
// validating anything else; recovery uses it to tell "ends past EOF" from
// "garbage".
func frameHeaderLength(b []byte) (int, bool) {
	if len(b) < frameHeaderBytes {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n > frameBodyBytesMax {
		return 0, false
	}
	return int(n), true
}

// grow extends b by n bytes, reallocating at most once.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// CorruptionError reports data that an fsync vouched for but that no longer
// decodes. The engine refuses to start on it rather than serve or cut it.
type CorruptionError struct {
	Path   string
	Pos    int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("engine: corrupt data in %s at byte %d: %s; refusing to start: this data was fsynced and "+
		"cutting it would lose acknowledged writes (restore the file from a replica or backup, or move it away "+
		"to accept the loss)", e.Path, e.Pos, e.Reason)
}

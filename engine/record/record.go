// Package record is the codec of every file Keel writes: frames (length,
// CRC32C, type, flags, batch, offset, payload, padding) and the message
// payload inside a partition's frames. It is pure (bytes in, values out),
// allocates nothing when decoding, and imports no other Keel package.
package record

import (
	"encoding/binary"
	"errors"
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
//   - length: payload bytes, at most BodyBytesMax.
//   - crc32c: Castagnoli CRC over bytes 0..3 (the length) and 8..end of
//     payload, so a flipped bit anywhere except the padding is caught, and
//     the padding is checked to be zero.
//   - type: what the payload is (recordType*); 0 is never valid, so a zeroed
//     region never decodes as a frame.
//   - flags: FlagBatchEnd marks the last frame of one group commit.
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
	HeaderBytes  = 24
	Align        = 8
	BodyBytesMax = 64 << 20 // one frame holds at most one Raft entry of a full NDJSON batch
)

// Record types. The values are on disk: never renumber.
const (
	TypeMessage     uint8 = 1 // a partition message (see message.go)
	TypeRaftEntry   uint8 = 2 // a Raft log entry (replication's WAL)
	TypeRaftState   uint8 = 3 // a Raft HardState (replication's WAL)
	TypeDurableMark uint8 = 4 // the checkpoint file's one frame
	TypeIndex       uint8 = 5 // a sealed segment's sparse index file
	TypeHole        uint8 = 6 // offsets a compaction removed (payload: HoleSpan)
	typeMax               = TypeHole
)

// Frame flags.
const (
	FlagBatchEnd uint8 = 1 << 0
	flagsKnown         = FlagBatchEnd
)

var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is one decoded frame. Payload aliases the decoded buffer.
type Frame struct {
	Type    uint8
	Flags   uint8
	Batch   uint32
	Offset  uint64
	Payload []byte
}

// Decode errors. ErrShort means the bytes end inside the frame (a torn
// write at the end of a file looks like this); every other error means the
// bytes are not a frame.
var (
	ErrShort    = errors.New("frame: truncated")
	ErrLength   = errors.New("frame: length over limit")
	ErrType     = errors.New("frame: unknown type")
	ErrReserved = errors.New("frame: reserved bits set")
	ErrPadding  = errors.New("frame: non-zero padding")
	ErrCRC      = errors.New("frame: checksum mismatch")
)

// A hole frame stands for span consecutive offsets, from its own, whose
// records log compaction removed: payload = span u64 LE (at least 1).
const holePayloadBytes = 8

// AppendHole appends a hole frame for offsets [offset, offset+span), with
// the batch and flags of the last record it replaces.
func AppendHole(dst []byte, batch uint32, flags uint8, offset, span uint64) []byte {
	var p [holePayloadBytes]byte
	binary.LittleEndian.PutUint64(p[:], span)
	return AppendFrame(dst, Frame{Type: TypeHole, Flags: flags, Batch: batch, Offset: offset, Payload: p[:]})
}

// Span returns how many offsets a frame stands for: 1, or a hole's span.
// A hole whose payload is not a span of at least 1 is not a valid frame.
func Span(f Frame) (uint64, bool) {
	if f.Type != TypeHole {
		return 1, true
	}
	if len(f.Payload) != holePayloadBytes {
		return 0, false
	}
	n := binary.LittleEndian.Uint64(f.Payload)
	return n, n >= 1 && n <= 1<<40
}

// FrameBytes is the on-disk size of a frame with a payload of n bytes.
func FrameBytes(n int) int {
	return (HeaderBytes + n + Align - 1) &^ (Align - 1)
}

// AppendFrame appends the encoding of f to dst and returns the result.
func AppendFrame(dst []byte, f Frame) []byte {
	n := len(f.Payload)
	size := FrameBytes(n)
	start := len(dst)
	dst = grow(dst, size)
	b := dst[start : start+size]
	binary.LittleEndian.PutUint32(b[0:4], uint32(n))
	b[8] = f.Type
	b[9] = f.Flags
	b[10], b[11] = 0, 0
	binary.LittleEndian.PutUint32(b[12:16], f.Batch)
	binary.LittleEndian.PutUint64(b[16:24], f.Offset)
	copy(b[HeaderBytes:], f.Payload)
	clear(b[HeaderBytes+n:])
	binary.LittleEndian.PutUint32(b[4:8], crc(b, n))
	return dst
}

func crc(b []byte, n int) uint32 {
	crc := crc32.Update(0, Castagnoli, b[0:4])
	return crc32.Update(crc, Castagnoli, b[8:HeaderBytes+n])
}

// DecodeFrame decodes the frame at the start of b and returns it with its
// on-disk size. It is pure: bytes in, frame out.
func DecodeFrame(b []byte) (Frame, int, error) {
	if len(b) < HeaderBytes {
		return Frame{}, 0, ErrShort
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n > BodyBytesMax {
		return Frame{}, 0, ErrLength
	}
	typ, flags := b[8], b[9]
	if typ == 0 || typ > typeMax {
		return Frame{}, 0, ErrType
	}
	if flags&^flagsKnown != 0 || b[10] != 0 || b[11] != 0 {
		return Frame{}, 0, ErrReserved
	}
	size := FrameBytes(int(n))
	if len(b) < size {
		return Frame{}, 0, ErrShort
	}
	for _, p := range b[HeaderBytes+int(n) : size] {
		if p != 0 {
			return Frame{}, 0, ErrPadding
		}
	}
	if binary.LittleEndian.Uint32(b[4:8]) != crc(b, int(n)) {
		return Frame{}, 0, ErrCRC
	}
	return Frame{
		Type:    typ,
		Flags:   flags,
		Batch:   binary.LittleEndian.Uint32(b[12:16]),
		Offset:  binary.LittleEndian.Uint64(b[16:24]),
		Payload: b[HeaderBytes : HeaderBytes+int(n)],
	}, size, nil
}

// HeaderLength reads a frame's declared payload length without
// validating anything else; recovery uses it to tell "ends past EOF" from
// "garbage".
func HeaderLength(b []byte) (int, bool) {
	if len(b) < HeaderBytes {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n > BodyBytesMax {
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

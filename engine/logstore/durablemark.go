package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"keel/engine/record"
	"keel/engine/vfs"
)

// Vocabulary: three things were once all called "checkpoint". Now:
//   - a log's durable mark (this file): how far its active segment is known
//     fsynced, so that recovery can tell vouched bytes from a torn tail;
//   - the state checkpoint (state.go, file state.ckpt): all state-machine
//     state at one applied index;
//   - taking a state checkpoint (replication): capture on the loop, write in
//     the background, then drop the WAL it made unnecessary.
// The watermarks read the same everywhere: written (handed to the kernel)
// → durable (fsynced) → committed (a quorum has it) → applied (in the
// state machine).

// durableMarkFileName is the log's durable mark, replaced atomically. The
// file keeps its first name, "checkpoint", so data directories written
// before the rename open unchanged.
const durableMarkFileName = "checkpoint"

// durableMark is what a Log knows to be durable at one moment. It is one
// record.TypeDurableMark frame whose payload is:
//
//	version u32 | pad u32 | active base u64 | vouched bytes u64 |
//	next offset u64 | batch u64 | start offset u64
type durableMark struct {
	ActiveBase   uint64 // base offset of the active segment
	VouchedBytes int64  // bytes of the active segment fsynced when written
	NextOffset   uint64 // offset after the last vouched record
	Batch        uint64 // last group-commit sequence number used
	StartOffset  uint64 // first offset still stored
}

const (
	durableMarkVersion      = 1
	durableMarkPayloadBytes = 48
)

func (c durableMark) encode() []byte {
	p := make([]byte, durableMarkPayloadBytes)
	binary.LittleEndian.PutUint32(p[0:4], durableMarkVersion)
	binary.LittleEndian.PutUint64(p[8:16], c.ActiveBase)
	binary.LittleEndian.PutUint64(p[16:24], uint64(c.VouchedBytes))
	binary.LittleEndian.PutUint64(p[24:32], c.NextOffset)
	binary.LittleEndian.PutUint64(p[32:40], c.Batch)
	binary.LittleEndian.PutUint64(p[40:48], c.StartOffset)
	return record.AppendFrame(nil, Frame{Type: record.TypeDurableMark, Flags: record.FlagBatchEnd, Payload: p})
}

func decodeCheckpoint(b []byte) (durableMark, error) {
	fr, size, err := record.DecodeFrame(b)
	if err != nil {
		return durableMark{}, err
	}
	p := fr.Payload
	if size != len(b) || fr.Type != record.TypeDurableMark || len(p) != durableMarkPayloadBytes {
		return durableMark{}, errors.New("not a checkpoint frame")
	}
	if v := binary.LittleEndian.Uint32(p[0:4]); v != durableMarkVersion {
		return durableMark{}, fmt.Errorf("checkpoint version %d, this build reads %d", v, durableMarkVersion)
	}
	return durableMark{
		ActiveBase:   binary.LittleEndian.Uint64(p[8:16]),
		VouchedBytes: int64(binary.LittleEndian.Uint64(p[16:24])),
		NextOffset:   binary.LittleEndian.Uint64(p[24:32]),
		Batch:        binary.LittleEndian.Uint64(p[32:40]),
		StartOffset:  binary.LittleEndian.Uint64(p[40:48]),
	}, nil
}

// loadDurableMark reads dir's checkpoint; ok is false when there is none
// (a new log). A checkpoint that exists but does not decode is corruption:
// it was written atomically, so it is never half-written.
func loadDurableMark(fs vfs.FS, dir string) (c durableMark, ok bool, err error) {
	path := filepath.Join(dir, durableMarkFileName)
	b, err := fs.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return durableMark{}, false, nil
	}
	if err != nil {
		return durableMark{}, false, fmt.Errorf("engine: read %s: %w", path, err)
	}
	c, err = decodeCheckpoint(b)
	if err != nil {
		return durableMark{}, false, &CorruptionError{Path: path, Pos: 0, Reason: err.Error()}
	}
	return c, true, nil
}

package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// checkpointFileName is the log's checkpoint, replaced atomically.
const checkpointFileName = "checkpoint"

// logCheckpoint is what a Log knows to be durable at one moment. It is one
// recordCheckpoint frame whose payload is:
//
//	version u32 | pad u32 | active base u64 | vouched bytes u64 |
//	next offset u64 | batch u64 | start offset u64
type logCheckpoint struct {
	ActiveBase   uint64 // base offset of the active segment
	VouchedBytes int64  // bytes of the active segment fsynced when written
	NextOffset   uint64 // offset after the last vouched record
	Batch        uint64 // last group-commit sequence number used
	StartOffset  uint64 // first offset still stored
}

const (
	checkpointVersion      = 1
	checkpointPayloadBytes = 48
)

func (c logCheckpoint) encode() []byte {
	p := make([]byte, checkpointPayloadBytes)
	binary.LittleEndian.PutUint32(p[0:4], checkpointVersion)
	binary.LittleEndian.PutUint64(p[8:16], c.ActiveBase)
	binary.LittleEndian.PutUint64(p[16:24], uint64(c.VouchedBytes))
	binary.LittleEndian.PutUint64(p[24:32], c.NextOffset)
	binary.LittleEndian.PutUint64(p[32:40], c.Batch)
	binary.LittleEndian.PutUint64(p[40:48], c.StartOffset)
	return AppendFrame(nil, Frame{Type: recordCheckpoint, Flags: flagBatchEnd, Payload: p})
}

func decodeCheckpoint(b []byte) (logCheckpoint, error) {
	fr, size, err := DecodeFrame(b)
	if err != nil {
		return logCheckpoint{}, err
	}
	p := fr.Payload
	if size != len(b) || fr.Type != recordCheckpoint || len(p) != checkpointPayloadBytes {
		return logCheckpoint{}, errors.New("not a checkpoint frame")
	}
	if v := binary.LittleEndian.Uint32(p[0:4]); v != checkpointVersion {
		return logCheckpoint{}, fmt.Errorf("checkpoint version %d, this build reads %d", v, checkpointVersion)
	}
	return logCheckpoint{
		ActiveBase:   binary.LittleEndian.Uint64(p[8:16]),
		VouchedBytes: int64(binary.LittleEndian.Uint64(p[16:24])),
		NextOffset:   binary.LittleEndian.Uint64(p[24:32]),
		Batch:        binary.LittleEndian.Uint64(p[32:40]),
		StartOffset:  binary.LittleEndian.Uint64(p[40:48]),
	}, nil
}

// loadCheckpoint reads dir's checkpoint; ok is false when there is none
// (a new log). A checkpoint that exists but does not decode is corruption:
// it was written atomically, so it is never half-written.
func loadCheckpoint(dir string) (c logCheckpoint, ok bool, err error) {
	path := filepath.Join(dir, checkpointFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return logCheckpoint{}, false, nil
	}
	if err != nil {
		return logCheckpoint{}, false, fmt.Errorf("engine: read %s: %w", path, err)
	}
	c, err = decodeCheckpoint(b)
	if err != nil {
		return logCheckpoint{}, false, &CorruptionError{Path: path, Pos: 0, Reason: err.Error()}
	}
	return c, true, nil
}

package logstore

import (
	"fmt"

	"keel/engine/record"
)

// The record codec (frames and message payloads) is package engine/record.
// The names below are the engine's API over it: what a Log takes and hands
// out.

// Frame is one decoded frame; see record.Frame.
type Frame = record.Frame

// Record types a Log accepts (record.Type*).
const (
	RecordMessage   = record.TypeMessage
	RecordRaftEntry = record.TypeRaftEntry
	RecordRaftState = record.TypeRaftState
	RecordHole      = record.TypeHole // written by Compact only
)

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

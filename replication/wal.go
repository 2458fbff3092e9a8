package replication

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"keel/engine/logstore"

	"go.etcd.io/raft/v3/raftpb"
)

// The WAL is an logstore.Log of RecordRaftState (a marshalled HardState) and
// RecordRaftEntry (a marshalled Entry) frames. One Ready's HardState and
// entries are one batch: one write, one fdatasync.
//
// An entry index written again (a new leader overwrote an uncommitted
// suffix) replaces the earlier one and everything after it, so replay
// never needs to rewrite the file.

// walMark remembers where an entry went: for WAL truncation after a
// checkpoint and for the batch id reported to the request.
type walMark struct {
	index     uint64 // raft index
	walOffset uint64 // offset of the entry's frame in the WAL
	batch     uint64 // WAL group commit that made it durable
}

// replicationState is what replication keeps in the state checkpoint.
type replicationState struct {
	replayFrom uint64 // WAL offset from which entries after the applied index lie
	hardState  raftpb.HardState
	confState  raftpb.ConfState
	members    []Member // the membership table (nil: the configuration's)
	confIndex  uint64   // index of the last configuration change applied
}

// Version 2 adds the membership table (names and addresses of the members
// as the log's configuration changes set them), JSON, and the index of the
// last configuration change.
func (s replicationState) encode() []byte {
	hs, _ := s.hardState.Marshal()
	cs, _ := s.confState.Marshal()
	ms, _ := json.Marshal(s.members)
	b := binary.AppendUvarint(nil, 2) // version
	b = binary.AppendUvarint(b, s.replayFrom)
	b = binary.AppendUvarint(b, uint64(len(hs)))
	b = append(b, hs...)
	b = binary.AppendUvarint(b, uint64(len(cs)))
	b = append(b, cs...)
	b = binary.AppendUvarint(b, uint64(len(ms)))
	b = append(b, ms...)
	return binary.AppendUvarint(b, s.confIndex)
}

var errBlob = errors.New("replication: state in the checkpoint does not decode")

func decodeReplicationState(b []byte) (replicationState, error) {
	var s replicationState
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	field := func() ([]byte, bool) {
		n, ok := next()
		if !ok || n > uint64(len(b)) {
			return nil, false
		}
		v := b[:n]
		b = b[n:]
		return v, true
	}
	version, ok := next()
	if !ok || version < 1 || version > 2 {
		return s, errBlob
	}
	if s.replayFrom, ok = next(); !ok {
		return s, errBlob
	}
	hs, ok1 := field()
	cs, ok2 := field()
	if !ok1 || !ok2 || s.hardState.Unmarshal(hs) != nil || s.confState.Unmarshal(cs) != nil {
		return s, errBlob
	}
	if version >= 2 {
		ms, ok := field()
		if !ok || json.Unmarshal(ms, &s.members) != nil {
			return s, errBlob
		}
		if s.confIndex, ok = next(); !ok {
			return s, errBlob
		}
	}
	if len(b) != 0 {
		return s, errBlob
	}
	return s, nil
}

// replayed is what the WAL holds after the applied index.
type replayed struct {
	hardState raftpb.HardState
	entries   []raftpb.Entry
	marks     []walMark
}

// replayWAL reads the WAL from offset from and collects the HardState and
// the entries after applied.
func replayWAL(wal *logstore.Log, from, applied uint64, hs raftpb.HardState) (replayed, error) {
	r := replayed{hardState: hs}
	var decodeErr error
	for {
		next, err := wal.Read(from, 16<<20, func(fr logstore.Frame) bool {
			decodeErr = r.add(fr, applied)
			return decodeErr == nil
		})
		if err != nil {
			return r, fmt.Errorf("replication: read WAL: %w", err)
		}
		if decodeErr != nil {
			return r, decodeErr
		}
		if next == from {
			break
		}
		from = next
	}
	if len(r.entries) > 0 && r.entries[0].Index != applied+1 {
		return r, fmt.Errorf("replication: WAL starts at entry %d after the checkpoint at %d: entries are missing",
			r.entries[0].Index, applied)
	}
	return r, nil
}

func (r *replayed) add(fr logstore.Frame, applied uint64) error {
	switch fr.Type {
	case logstore.RecordRaftState:
		var hs raftpb.HardState
		if err := hs.Unmarshal(fr.Payload); err != nil {
			return fmt.Errorf("replication: WAL record %d: hard state: %w", fr.Offset, err)
		}
		r.hardState = hs
	case logstore.RecordRaftEntry:
		var e raftpb.Entry
		if err := e.Unmarshal(fr.Payload); err != nil {
			return fmt.Errorf("replication: WAL record %d: entry: %w", fr.Offset, err)
		}
		if e.Index <= applied {
			return nil
		}
		// A rewritten index replaces the old suffix.
		for len(r.entries) > 0 && r.entries[len(r.entries)-1].Index >= e.Index {
			r.entries = r.entries[:len(r.entries)-1]
			r.marks = r.marks[:len(r.marks)-1]
		}
		if n := len(r.entries); n > 0 && r.entries[n-1].Index+1 != e.Index {
			return fmt.Errorf("replication: WAL entry %d follows %d", e.Index, r.entries[n-1].Index)
		}
		r.entries = append(r.entries, e)
		r.marks = append(r.marks, walMark{index: e.Index, walOffset: fr.Offset})
	default:
		return fmt.Errorf("replication: WAL record %d has type %d", fr.Offset, fr.Type)
	}
	return nil
}

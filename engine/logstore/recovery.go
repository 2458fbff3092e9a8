package logstore

import (
	"fmt"

	"keel/engine/record"
)

// Recovery reads a segment frame by frame and decides, at each position,
// with one table. Inputs:
//
//   - region: whether the position lies in bytes an fsync vouched for
//     (a sealed segment, or the active segment before the durable mark's
//     vouched length) or in the tail written after the last checkpoint.
//   - state: what is at the position: a valid frame with the expected
//     offset, the end of the file, a frame cut short by the end of the file,
//     or bytes that are not the expected frame.
//   - newer: whether a valid frame of a later group commit lies further on.
//     The writer submits a batch only after the previous one is fsynced, so
//     only the last batch in a file can be torn; a valid later batch proves
//     the bad bytes were fsynced once and have been damaged since.
//
// Verdicts: continue, end, cut the tail here (torn write of the last batch,
// never acknowledged), or refuse to start (corruption of vouched data).
type region uint8

const (
	regionVouched region = iota
	regionTail
	regionCount
)

type frameState uint8

const (
	stateValid frameState = iota // a frame that decodes, with the expected offset
	stateEOF                     // exactly at the end of the file
	stateShort                   // a frame that runs past the end of the file
	stateBad                     // bytes that are not the expected frame
	stateCount
)

type verdict uint8

const (
	verdictContinue verdict = iota
	verdictEnd
	verdictCut
	verdictRefuse
)

func (v verdict) String() string {
	return [...]string{"continue", "end", "cut", "refuse"}[v]
}

func (s frameState) String() string {
	return [...]string{"valid", "eof", "short", "bad"}[s]
}

func (r region) String() string {
	return [...]string{"vouched", "tail"}[r]
}

// recoveryTable[region][state][newer] is the whole recovery policy.
var recoveryTable = [regionCount][stateCount][2]verdict{
	regionVouched: {
		stateValid: {verdictContinue, verdictContinue},
		stateEOF:   {verdictRefuse, verdictRefuse}, // the file is shorter than what was fsynced
		stateShort: {verdictRefuse, verdictRefuse},
		stateBad:   {verdictRefuse, verdictRefuse},
	},
	regionTail: {
		stateValid: {verdictContinue, verdictContinue},
		stateEOF:   {verdictEnd, verdictEnd},
		stateShort: {verdictCut, verdictRefuse},
		stateBad:   {verdictCut, verdictRefuse},
	},
}

func classify(r region, s frameState, newer bool) verdict {
	i := 0
	if newer {
		i = 1
	}
	return recoveryTable[r][s][i]
}

// scanResult is what a scan of one segment found.
type scanResult struct {
	count     uint64 // valid records
	size      int64  // bytes of valid records; a cut happens here
	index     sparseIndex
	lastBatch uint32
	lastEnd   bool // the last valid frame ended a batch
	any       bool // at least one valid frame
	cut       bool
	cutBytes  int64 // bytes after size that a cut removes
}

// scanSegment walks data (a whole segment file) from its start. vouched is
// how many leading bytes an fsync vouched for. It returns a
// CorruptionError when the table says refuse.
func scanSegment(path string, data []byte, base uint64, vouched int64, intervalBytes int64, tailUnordered bool) (scanResult, error) {
	res := scanResult{index: newSparseIndex(intervalBytes)}
	pos := int64(0)
	for {
		st, fr, n := frameAt(data, pos, base+res.count)
		reg := regionTail
		if pos < vouched {
			reg = regionVouched
		}
		newer := false
		if (st == stateShort || st == stateBad) && !tailUnordered {
			newer = newerBatchAfter(data, pos, base+res.count, res)
		}
		switch classify(reg, st, newer) {
		case verdictContinue:
			span, _ := record.Span(fr) // frameAt checked it
			res.index.add(uint32(res.count), pos, frameTime(fr))
			res.count += span
			res.lastBatch, res.lastEnd, res.any = fr.Batch, fr.Flags&record.FlagBatchEnd != 0, true
			pos += int64(n)
			res.size = pos
		case verdictEnd:
			return res, nil
		case verdictCut:
			res.cut, res.cutBytes = true, int64(len(data))-pos
			return res, nil
		case verdictRefuse:
			return res, &CorruptionError{Path: path, Pos: pos, Reason: fmt.Sprintf(
				"%s frame in %s region (vouched bytes %d, file bytes %d, newer batch after: %v)",
				st, reg, vouched, len(data), newer)}
		}
	}
}

// frameAt classifies the bytes at pos, where the record with offset want
// should start.
func frameAt(data []byte, pos int64, want uint64) (frameState, Frame, int) {
	rest := data[pos:]
	if len(rest) == 0 {
		return stateEOF, Frame{}, 0
	}
	fr, n, err := record.DecodeFrame(rest)
	if _, ok := record.Span(fr); err == nil && !ok {
		return stateBad, Frame{}, 0
	}
	switch {
	case err == nil && fr.Offset == want:
		return stateValid, fr, n
	case err == record.ErrShort:
		return stateShort, Frame{}, 0
	case err == record.ErrCRC || err == record.ErrPadding:
		// A length that runs past the end of the file was cut short even
		// if the bytes present happen to fail a different check.
		if l, ok := record.HeaderLength(rest); ok && record.FrameBytes(l) > len(rest) {
			return stateShort, Frame{}, 0
		}
	}
	return stateBad, Frame{}, 0
}

// newerBatchAfter reports whether some valid frame at an aligned position
// after pos belongs to a group commit later than the one that wrote pos.
// When the frame before pos ended its batch, pos began the next one; when
// there is no frame before pos, two distinct batches after it prove that at
// least one of them is later.
func newerBatchAfter(data []byte, pos int64, want uint64, res scanResult) bool {
	torn := res.lastBatch
	if res.any && res.lastEnd {
		torn++
	}
	var first uint32
	seen := false
	for q := pos + record.Align; q+record.HeaderBytes <= int64(len(data)); q += record.Align {
		fr, _, err := record.DecodeFrame(data[q:])
		if err != nil || fr.Offset < want || fr.Type != RecordMessage && fr.Type != RecordRaftEntry && fr.Type != RecordRaftState && fr.Type != RecordHole {
			continue
		}
		if res.any {
			if int32(fr.Batch-torn) > 0 {
				return true
			}
			continue
		}
		if seen && fr.Batch != first {
			return true
		}
		first, seen = fr.Batch, true
	}
	return false
}

package query

import "time"

// Limits bound what one query or join may cost. Each is a flag of `keel
// serve` (README "Stream queries"); a request past one gets a 400 or 413
// that names it.
type Limits struct {
	ScanMax           int           // messages read from one source per request (--query-scan-max)
	ScanBytesMax      int64         // value bytes read from one source per request (--query-scan-bytes-max); then it stops early
	TimeMax           time.Duration // how long a request reads (--query-time-max); then it stops early
	RowsMax           int           // rows one answer returns: emit_rows, max_rows (--query-rows-max)
	GroupsMax         int           // aggregate groups (window × key) one query holds (--query-groups-max)
	JoinStateBytesMax int64         // memory a join holds for both sides (--join-state-bytes-max)
	JoinPairsMax      int64         // candidate pairs a join may compare (--join-pairs-max)
	AnswerBytesMax    int           // rows stop (rows_truncated) once an answer is this large
}

// DefaultLimits are the defaults of `keel serve`.
func DefaultLimits() Limits {
	return Limits{
		ScanMax:           1_000_000,
		ScanBytesMax:      1 << 30,
		TimeMax:           30 * time.Second,
		RowsMax:           10_000,
		GroupsMax:         100_000,
		JoinStateBytesMax: 256 << 20,
		JoinPairsMax:      100_000_000,
		AnswerBytesMax:    32 << 20,
	}
}

// RowsDefault is how many rows a join returns when max_rows is absent
// (at most RowsMax).
const RowsDefault = 1000

// WindowMsMax bounds a join's size_ms and allowed_lateness_ms (2^53, so
// time arithmetic on clamped timestamps cannot overflow).
const WindowMsMax = 1 << 53

// FilterValuesMax bounds the values of one filter (terms and in lists).
const FilterValuesMax = 1024

// GroupKeyBytesMax bounds the group keys one query holds together.
const GroupKeyBytesMax = 64 << 20

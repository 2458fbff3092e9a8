package query

// Limits bound what one query or join may cost. Each is a flag of `keel
// serve` (README "Stream queries"); a request past one gets a 400 or 413
// that names it.
type Limits struct {
	ScanMax           int   // messages read from one source per request (--query-scan-max)
	RowsMax           int   // rows one answer returns: emit_rows, max_rows (--query-rows-max)
	GroupsMax         int   // aggregate groups (window × key) one query holds (--query-groups-max)
	JoinStateBytesMax int64 // memory a join holds for both sides (--join-state-bytes-max)
	JoinPairsMax      int64 // candidate pairs a join may compare (--join-pairs-max)
	AnswerBytesMax    int   // rows stop (rows_truncated) once an answer is this large
}

// DefaultLimits are the defaults of `keel serve`.
func DefaultLimits() Limits {
	return Limits{
		ScanMax:           1_000_000,
		RowsMax:           10_000,
		GroupsMax:         100_000,
		JoinStateBytesMax: 256 << 20,
		JoinPairsMax:      100_000_000,
		AnswerBytesMax:    32 << 20,
	}
}

// RowsDefault is how many rows a join returns when max_rows is absent.
const RowsDefault = 1000

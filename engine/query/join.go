package query

import (
	"math"
	"sort"
	"unsafe"
)

// joinType says which unmatched records a join also emits.
type joinType uint8

const (
	joinInner joinType = iota + 1
	joinLeft
	joinRight
	joinFull
)

var joinTypes = map[string]joinType{"": joinInner, "inner": joinInner, "left": joinLeft, "right": joinRight, "full": joinFull}

// joinRecord is one message of a side, as the join holds it.
type joinRecord struct {
	key      string
	ts       int64
	offset   uint64
	obj      [2]int32 // [start, end) of its emitted JSON in the side's arena
	matched  bool
	tooLate  bool
	outerOut bool
}

// joinSide is one source of a join and what was read from it.
type joinSide struct {
	name     string // left, right
	src      *source
	fs       *fieldSet
	keys     []*fieldRef
	timeRef  *fieldRef
	emit     []*fieldRef
	emitAs   []string
	dec      decoder
	recs     []joinRecord
	arena    []byte
	maxTs    int64
	scanned  int
	skipped  int // not decodable
	keyless  int // lacks a key field
	untimed  int // lacks a usable event time
	next     uint64
	keyBuf   []byte
	byKey    map[string][]int32 // record indices, by timestamp
	stateMax int64
}

// compiledJoin is a checked JoinRequest.
type compiledJoin struct {
	left, right *joinSide
	typ         joinType
	sizeMs      int64
	latenessMs  int64
	dedupeOnce  bool
	maxRows     int
	emptyMiss   bool // missing_as "empty": {} for the missing side
}

func (e *Engine) compileJoin(req *JoinRequest) (*compiledJoin, *Error) {
	if req.Left == nil || req.Right == nil {
		return nil, badRequest("missing_source", "a join needs a left and a right source")
	}
	lk, rk := req.On.LeftKeys, req.On.RightKeys
	if req.On.LeftKey != "" || req.On.RightKey != "" {
		lk, rk = []string{req.On.LeftKey}, []string{req.On.RightKey}
	}
	if len(lk) == 0 || len(lk) != len(rk) {
		return nil, badRequest("missing_join_keys", "a join needs on.left_key and on.right_key, or on.left_keys and on.right_keys of the same length")
	}
	j := &compiledJoin{maxRows: min(RowsDefault, e.lim.RowsMax), dedupeOnce: req.DedupeOnce}
	var ok bool
	if j.typ, ok = joinTypes[req.Join.Type]; !ok {
		return nil, badRequest("invalid_join", "join.type must be inner, left, right or full, not %q", req.Join.Type)
	}
	switch req.Dedupe.Mode {
	case "", "none":
	case "once":
		j.dedupeOnce = true
	default:
		return nil, badRequest("invalid_join", "dedupe.mode must be once or none, not %q", req.Dedupe.Mode)
	}
	if req.Window.SizeMs == nil || *req.Window.SizeMs < 0 || *req.Window.SizeMs > WindowMsMax {
		return nil, badRequest("invalid_window", "a join needs window.size_ms, 0 to 2^53 milliseconds")
	}
	if req.Window.AllowedLatenessMs < 0 || req.Window.AllowedLatenessMs > WindowMsMax {
		return nil, badRequest("invalid_window", "window.allowed_lateness_ms must be 0 to 2^53 milliseconds")
	}
	j.sizeMs, j.latenessMs = *req.Window.SizeMs, req.Window.AllowedLatenessMs
	if m := req.Emit.MaxRows; m != nil {
		if *m < 0 || *m > int64(e.lim.RowsMax) {
			return nil, badRequest("invalid_limit", "emit.max_rows must be 0 to %d (--query-rows-max)", e.lim.RowsMax)
		}
		j.maxRows = int(*m)
	}
	switch req.Emit.MissingAs {
	case "", "null":
	case "empty":
		j.emptyMiss = true
	default:
		return nil, badRequest("invalid_join", "emit.missing_as must be null or empty, not %q", req.Emit.MissingAs)
	}
	var err *Error
	if j.left, err = e.compileSide("left", req.Left, lk, req.Emit.LeftFields); err != nil {
		return nil, err
	}
	if j.right, err = e.compileSide("right", req.Right, rk, req.Emit.RightFields); err != nil {
		return nil, err
	}
	return j, nil
}

func (e *Engine) compileSide(name string, spec *SourceSpec, keys, emit []string) (*joinSide, *Error) {
	var aliases map[string][]string
	if spec.Decode != nil {
		aliases = spec.Decode.FieldAliases
	}
	s := &joinSide{name: name, fs: newFieldSet(aliases), maxTs: math.MinInt64, stateMax: e.lim.JoinStateBytesMax / 2}
	for _, k := range keys {
		if err := checkField("on."+name+"_key", k); err != nil {
			return nil, badRequest("missing_join_keys", "%s", err.Message)
		}
		s.keys = append(s.keys, s.fs.ref(k))
	}
	if spec.TimeField != "" {
		if err := checkField(name+".time_field", spec.TimeField); err != nil {
			return nil, err
		}
		s.timeRef = s.fs.ref(spec.TimeField)
	}
	for _, f := range emit {
		if err := checkField("emit."+name+"_fields", f); err != nil {
			return nil, err
		}
		s.emit = append(s.emit, s.fs.ref(f))
		s.emitAs = append(s.emitAs, f)
	}
	if len(s.fs.refs) > FieldsMax {
		return nil, badRequest("invalid_field", "a join side may use at most %d fields", FieldsMax)
	}
	var err *Error
	if s.dec, err = e.schemas.newDecoder(spec.Decode, s.fs); err != nil {
		return nil, err
	}
	return s, nil
}

// joinRecordBytes is what the join counts against its state limit for
// one record besides its key and JSON.
const joinRecordBytes = int64(unsafe.Sizeof(joinRecord{})) + 16

// read holds every record of the side's source: its key, time, offset and
// the JSON the join would emit for it.
func (s *joinSide) read() error {
	var state int64
	var failed *Error
	next, consumed, err := s.src.messages.scan(func(m Message) bool {
		if !s.dec.decode(m.Value) {
			s.skipped++
			return true
		}
		k, ok := s.key()
		if !ok {
			s.keyless++
			return true
		}
		ts := m.TimestampMs
		if s.timeRef != nil {
			v, ok := s.dec.field(s.timeRef)
			n, isNum := v.Number()
			if !ok || !isNum || n < math.MinInt64/2 || n > math.MaxInt64/2 {
				s.untimed++
				return true
			}
			ts = int64(n)
		}
		start := len(s.arena)
		s.arena = s.appendEmit(s.arena)
		if len(s.arena) > math.MaxInt32 {
			failed = s.tooLarge()
			return false
		}
		r := joinRecord{ts: ts, offset: m.Offset, obj: [2]int32{int32(start), int32(len(s.arena))}}
		if n := len(s.recs); n > 0 && s.recs[n-1].key == string(k) {
			r.key = s.recs[n-1].key // a run of one key shares its string
		} else {
			r.key = string(k)
			state += int64(len(k))
		}
		s.recs = append(s.recs, r)
		s.maxTs = max(s.maxTs, ts)
		state += joinRecordBytes
		if state+int64(cap(s.arena)) > s.stateMax {
			failed = s.tooLarge()
			return false
		}
		return true
	})
	if failed != nil {
		return failed
	}
	if err != nil {
		return err
	}
	s.next, s.scanned = next, consumed
	return nil
}

func (s *joinSide) tooLarge() *Error {
	return tooLarge("join_state_too_large", "the %s side holds more than %d bytes (half of --join-state-bytes-max); lower its limit, or emit fewer fields", s.name, s.stateMax)
}

// key returns the message's join key: its key fields' values as text,
// joined with '|'. Every key field must be present.
func (s *joinSide) key() ([]byte, bool) {
	k := s.keyBuf[:0]
	for i, ref := range s.keys {
		v, ok := s.dec.field(ref)
		if !ok {
			return nil, false
		}
		if i > 0 {
			k = append(k, '|')
		}
		k = v.AppendText(k)
	}
	s.keyBuf = k
	return k, true
}

// appendEmit appends the record's side of a row: its emit fields, or the
// whole message.
func (s *joinSide) appendEmit(dst []byte) []byte {
	if s.emit == nil {
		return s.dec.appendObject(dst)
	}
	dst = append(dst, '{')
	n := 0
	for i, ref := range s.emit {
		v, ok := s.dec.field(ref)
		if !ok {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(appendJSONString(dst, []byte(s.emitAs[i])), ':')
		dst = v.AppendJSON(dst)
	}
	return append(dst, '}')
}

func (s *joinSide) object(r *joinRecord) []byte { return s.arena[r.obj[0]:r.obj[1]] }

// index groups the records by key, each key's records ordered by time.
func (s *joinSide) index() {
	s.byKey = make(map[string][]int32)
	for i := range s.recs {
		if !s.recs[i].tooLate {
			s.byKey[s.recs[i].key] = append(s.byKey[s.recs[i].key], int32(i))
		}
	}
	for _, idx := range s.byKey {
		sort.SliceStable(idx, func(a, b int) bool { return s.recs[idx[a]].ts < s.recs[idx[b]].ts })
	}
}

// joinResult is what a join found.
type joinResult struct {
	rows      []byte
	rowCount  int
	outerRows int
	truncated bool
	pairs     int64
	tooLate   int
	watermark int64
	hasMark   bool
}

// run matches the sides (both already read). A pair matches when the
// keys are equal and |ts_l - ts_r| <= size_ms; with dedupe_once only
// when left.offset <= right.offset, and a pair suppressed that way
// leaves both records unmatched. Records older than the watermark,
// min(left max, right max) - allowed_lateness_ms - size_ms, are dropped.
// Rows come in left order (each left record's matches, or its outer
// row), then the right side's outer rows.
func (j *compiledJoin) run(pairsMax int64, answerBytesMax int) (*joinResult, *Error) {
	r := &joinResult{}
	if len(j.left.recs) > 0 && len(j.right.recs) > 0 {
		r.watermark, r.hasMark = min(j.left.maxTs, j.right.maxTs)-j.latenessMs-j.sizeMs, true
		for _, s := range []*joinSide{j.left, j.right} {
			for i := range s.recs {
				if s.recs[i].ts < r.watermark {
					s.recs[i].tooLate = true
					r.tooLate++
				}
			}
		}
	}
	j.right.index()
	for li := range j.left.recs {
		l := &j.left.recs[li]
		if l.tooLate {
			continue
		}
		cands := j.right.byKey[l.key]
		lo := l.ts - j.sizeMs
		first := sort.Search(len(cands), func(i int) bool { return j.right.recs[cands[i]].ts >= lo })
		for _, ri := range cands[first:] {
			rr := &j.right.recs[ri]
			if rr.ts > l.ts+j.sizeMs {
				break
			}
			r.pairs++
			if r.pairs > pairsMax {
				return nil, tooLarge("join_too_large", "the join compares more than %d candidate pairs (--join-pairs-max); narrow the window, the limits or the keys", pairsMax)
			}
			if j.dedupeOnce && l.offset > rr.offset {
				continue
			}
			l.matched, rr.matched = true, true
			j.appendRow(r, l, rr, answerBytesMax)
		}
		if !l.matched && (j.typ == joinLeft || j.typ == joinFull) {
			j.appendRow(r, l, nil, answerBytesMax)
		}
	}
	if j.typ == joinRight || j.typ == joinFull {
		for ri := range j.right.recs {
			if rr := &j.right.recs[ri]; !rr.tooLate && !rr.matched {
				j.appendRow(r, nil, rr, answerBytesMax)
			}
		}
	}
	return r, nil
}

// appendRow adds {key,left_ts_ms,right_ts_ms,left,right}; l or rr nil is
// an outer row's missing side.
func (j *compiledJoin) appendRow(r *joinResult, l, rr *joinRecord, answerBytesMax int) {
	if r.rowCount >= j.maxRows || r.truncated {
		r.truncated = true
		return
	}
	before := len(r.rows)
	if r.rowCount > 0 {
		r.rows = append(r.rows, ',')
	}
	key := ""
	if l != nil {
		key = l.key
	} else {
		key = rr.key
	}
	r.rows = append(r.rows, `{"key":`...)
	r.rows = appendJSONString(r.rows, []byte(key))
	r.rows = appendTime(append(r.rows, `,"left_ts_ms":`...), l)
	r.rows = appendTime(append(r.rows, `,"right_ts_ms":`...), rr)
	r.rows = j.appendSide(append(r.rows, `,"left":`...), j.left, l)
	r.rows = j.appendSide(append(r.rows, `,"right":`...), j.right, rr)
	r.rows = append(r.rows, '}')
	if len(r.rows) > answerBytesMax {
		r.rows, r.truncated = r.rows[:before], true
		return
	}
	r.rowCount++
	if l == nil || rr == nil {
		r.outerRows++
	}
}

func appendTime(dst []byte, rec *joinRecord) []byte {
	if rec == nil {
		return append(dst, "null"...)
	}
	return appendInt(dst, rec.ts)
}

// appendSide appends one side of a row: the record's JSON, or for an
// outer row's missing side null ({} with missing_as "empty").
func (j *compiledJoin) appendSide(dst []byte, s *joinSide, rec *joinRecord) []byte {
	switch {
	case rec != nil:
		return append(dst, s.object(rec)...)
	case j.emptyMiss:
		return append(dst, "{}"...)
	}
	return append(dst, "null"...)
}

// Join runs POST /broker/join and returns the answer's JSON.
func (e *Engine) Join(body []byte) ([]byte, error) {
	var req JoinRequest
	if err := decodeBody(body, &req); err != nil {
		return nil, err
	}
	j, err := e.compileJoin(&req)
	if err != nil {
		return nil, err
	}
	now := e.now().UnixMilli()
	var serr error
	// Both sources are resolved before either is read: a mistake in the
	// right one costs no scan of the left.
	if j.left.src, serr = resolveSource(e.store, req.Left, "left", e.lim, now); serr != nil {
		return nil, serr
	}
	if j.right.src, serr = resolveSource(e.store, req.Right, "right", e.lim, now); serr != nil {
		return nil, serr
	}
	for _, s := range []*joinSide{j.left, j.right} {
		if err := s.read(); err != nil {
			return nil, err
		}
	}
	r, err := j.run(e.lim.JoinPairsMax, e.lim.AnswerBytesMax)
	if err != nil {
		return nil, err
	}
	return j.appendAnswer(make([]byte, 0, len(r.rows)+512), r), nil
}

func (j *compiledJoin) appendAnswer(b []byte, r *joinResult) []byte {
	b = append(b, `{"ok":true,"rows":[`...)
	b = append(b, r.rows...)
	b = append(b, `],"next_offsets":{"left":`...)
	b = appendUint(b, j.left.next)
	b = append(b, `,"right":`...)
	b = appendUint(b, j.right.next)
	b = append(b, `},"stats":{"left_scanned":`...)
	b = appendInt(b, int64(j.left.scanned))
	b = appendIntField(b, "right_scanned", int64(j.right.scanned))
	b = appendIntField(b, "rows", int64(r.rowCount))
	b = appendIntField(b, "outer_rows", int64(r.outerRows))
	b = append(b, `,"rows_truncated":`...)
	b = appendBool(b, r.truncated)
	b = append(b, `,"watermark_ms":`...)
	if r.hasMark {
		b = appendInt(b, r.watermark)
	} else {
		b = append(b, "null"...)
	}
	b = appendIntField(b, "late_dropped", int64(r.tooLate))
	b = appendIntField(b, "pairs_compared", r.pairs)
	for _, s := range []*joinSide{j.left, j.right} {
		b = appendIntField(b, s.name+"_skipped", int64(s.skipped))
		b = appendIntField(b, s.name+"_keyless", int64(s.keyless))
		if by := s.src.stoppedBy(); by != "" {
			b = append(b, `,"`...)
			b = append(b, s.name...)
			b = append(b, `_stopped_by":`...)
			b = appendJSONString(b, []byte(by))
		}
		if s.timeRef != nil {
			b = appendIntField(b, s.name+"_untimed", int64(s.untimed))
		}
	}
	return append(b, "}}"...)
}

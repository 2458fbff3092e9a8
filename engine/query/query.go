package query

import (
	"strconv"
	"time"

	"github.com/valyala/fastjson"
)

// Engine runs stream queries and joins over a store's partitions. It
// only reads: a query never proposes a command and never runs inside
// apply, so it cannot delay the write path beyond the CPU it takes (the
// HTTP layer bounds how many run at once). Safe for concurrent use.
type Engine struct {
	store   Store
	schemas *Schemas
	lim     Limits
	now     func() time.Time
}

// New returns an engine reading st, with compiled schemas cached in
// schemas.
func New(st Store, schemas *Schemas, lim Limits) *Engine {
	return &Engine{store: st, schemas: schemas, lim: lim, now: time.Now}
}

// compiledQuery is a checked QueryRequest.
type compiledQuery struct {
	fs       *fieldSet
	filter   []condition
	agg      *aggregation
	project  []*fieldRef
	names    []string // left_fields as written
	emitRows int
	dec      decoder
}

func (e *Engine) compileQuery(req *QueryRequest) (*compiledQuery, *Error) {
	if req.Source == nil {
		return nil, badRequest("missing_source", "a query needs a source: {\"source\":{\"topic\":...,\"partition\":...}}")
	}
	var aliases map[string][]string
	if req.Source.Decode != nil {
		aliases = req.Source.Decode.FieldAliases
	}
	q := &compiledQuery{fs: newFieldSet(aliases)}
	var err *Error
	if q.filter, err = compileFilter(req.Filter, q.fs); err != nil {
		return nil, err
	}
	if q.agg, err = compileAggregate(req.Aggregate, req.Window, q.fs, e.lim); err != nil {
		return nil, err
	}
	if t := req.Transform; t != nil {
		if t.EmitRows < 0 || t.EmitRows > int64(e.lim.RowsMax) {
			return nil, badRequest("invalid_limit", "transform.emit_rows must be 0 to %d (--query-rows-max)", e.lim.RowsMax)
		}
		q.emitRows = int(t.EmitRows)
		for _, f := range t.LeftFields {
			if err := checkField("transform.left_fields", f); err != nil {
				return nil, err
			}
			q.project = append(q.project, q.fs.ref(f))
			q.names = append(q.names, f)
		}
	}
	if len(q.fs.refs) > FieldsMax {
		return nil, badRequest("invalid_field", "a query may use at most %d fields", FieldsMax)
	}
	if q.dec, err = e.schemas.newDecoder(req.Source.Decode, q.fs); err != nil {
		return nil, err
	}
	return q, nil
}

// queryResult is what a query found, before rendering.
type queryResult struct {
	rows          []byte // the rows' JSON, comma-separated
	rowCount      int
	rowsTruncated bool
	matched       int
	skipped       int
	next          uint64
	consumed      int
}

// run evaluates q over msgs.
func (q *compiledQuery) run(msgs messages, answerBytesMax int) (*queryResult, error) {
	r := &queryResult{}
	var sub fastjson.Parser
	var failed *Error
	next, consumed, err := msgs.scan(func(m Message) bool {
		if !q.dec.decode(m.Value) {
			r.skipped++
			return true
		}
		for i := range q.filter {
			c := &q.filter[i]
			v, ok := q.dec.field(c.ref)
			if !ok || !c.matches(v, &sub) {
				return true
			}
		}
		r.matched++
		if r.rowCount < q.emitRows && !r.rowsTruncated {
			q.appendRow(r, answerBytesMax)
		}
		if q.agg != nil {
			if failed = q.agg.add(q.dec, &m); failed != nil {
				return false
			}
		}
		return true
	})
	if failed != nil {
		return nil, failed
	}
	r.next, r.consumed = next, consumed
	return r, err
}

// appendRow adds the message last decoded as a row: the stored object,
// or its left_fields (a field the message lacks is left out; the row is
// kept).
func (q *compiledQuery) appendRow(r *queryResult, answerBytesMax int) {
	before := len(r.rows)
	if r.rowCount > 0 {
		r.rows = append(r.rows, ',')
	}
	if q.project == nil {
		r.rows = q.dec.appendObject(r.rows)
	} else {
		r.rows = append(r.rows, '{')
		n := 0
		for i, ref := range q.project {
			v, ok := q.dec.field(ref)
			if !ok {
				continue
			}
			if n > 0 {
				r.rows = append(r.rows, ',')
			}
			n++
			r.rows = append(appendJSONString(r.rows, []byte(q.names[i])), ':')
			r.rows = v.AppendJSON(r.rows)
		}
		r.rows = append(r.rows, '}')
	}
	if len(r.rows) > answerBytesMax {
		r.rows, r.rowsTruncated = r.rows[:before], true
		return
	}
	r.rowCount++
}

// Query runs POST /broker/query and returns the answer's JSON. Errors are
// *Error (bad request, limits) or the engine's (unknown topic or
// partition, a storage fault).
func (e *Engine) Query(body []byte) ([]byte, error) {
	var req QueryRequest
	if err := decodeBody(body, &req); err != nil {
		return nil, err
	}
	q, err := e.compileQuery(&req)
	if err != nil {
		return nil, err
	}
	src, serr := resolveSource(e.store, req.Source, "source", e.lim, e.now().UnixMilli())
	if serr != nil {
		return nil, serr
	}
	r, rerr := q.run(src.messages, e.lim.AnswerBytesMax)
	if rerr != nil {
		return nil, rerr
	}
	return q.appendAnswer(make([]byte, 0, len(r.rows)+512), r, src), nil
}

func (q *compiledQuery) appendAnswer(b []byte, r *queryResult, src *source) []byte {
	b = append(b, `{"ok":true,"rows":[`...)
	b = append(b, r.rows...)
	b = append(b, `],"aggregates":`...)
	if q.agg != nil {
		b = q.agg.appendJSON(b)
	} else {
		b = append(b, "[]"...)
	}
	b = append(b, `,"source":{"topic":`...)
	b = appendJSONString(b, []byte(src.spec.Topic))
	b = append(b, `,"group":`...)
	if src.spec.Group != "" {
		b = appendJSONString(b, []byte(src.spec.Group))
	} else {
		b = append(b, "null"...)
	}
	b = appendIntField(b, "partition", int64(src.partition))
	b = appendUintField(b, "next_offset", r.next)
	b = appendIntField(b, "consumed", int64(r.consumed))
	b = appendUintField(b, "log_end_offset", src.logEnd)
	if by := src.stoppedBy(); by != "" {
		b = append(b, `,"stopped_by":`...)
		b = appendJSONString(b, []byte(by))
	}
	b = append(b, `},"stats":{"matched":`...)
	b = appendInt(b, int64(r.matched))
	b = appendIntField(b, "skipped", int64(r.skipped))
	if q.agg != nil && q.agg.timeRef != nil {
		b = appendIntField(b, "untimed", int64(q.agg.untimed))
	}
	b = appendIntField(b, "rows", int64(r.rowCount))
	b = append(b, `,"rows_truncated":`...)
	b = strconv.AppendBool(b, r.rowsTruncated)
	return append(b, "}}"...)
}

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

func appendIntField(dst []byte, name string, n int64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendInt(dst, n)
}

func appendUintField(dst []byte, name string, n uint64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return strconv.AppendUint(dst, n, 10)
}

func appendUint(dst []byte, n uint64) []byte { return strconv.AppendUint(dst, n, 10) }

func appendBool(dst []byte, v bool) []byte { return strconv.AppendBool(dst, v) }

// SchemaStats returns the schema cache's hits and misses.
func (e *Engine) SchemaStats() (hits, misses uint64) { return e.schemas.Stats() }

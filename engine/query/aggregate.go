package query

import (
	"encoding/binary"
	"math"
	"sort"
)

// measureOp is an aggregate function.
type measureOp uint8

const (
	measureCount measureOp = iota + 1
	measureSum
	measureAvg
	measureMin
	measureMax
)

var measureOps = map[string]measureOp{"count": measureCount, "sum": measureSum, "avg": measureAvg, "min": measureMin, "max": measureMax}

type measure struct {
	op   measureOp
	ref  *fieldRef // nil: count counts the group's messages
	name string
}

// accumulator is one measure's state in one group.
type accumulator struct {
	n        int64 // values seen (count: messages, or messages carrying the field)
	sum      float64
	min, max float64
}

// group is one aggregate: a window (when the query has one) and a key.
type group struct {
	key         string
	windowStart int64
	acc         []accumulator
}

// aggregation groups the messages a filter lets through: by the group_by
// fields' values and, with a window, by tumbling window of broker time or
// of an event-time field.
type aggregation struct {
	groupBy   []*fieldRef
	names     []string // group_by as written
	measures  []measure
	windowMs  int64     // 0: no window
	timeRef   *fieldRef // nil: the broker's timestamp
	groups    map[string]*group
	order     []*group
	groupsMax int
	keyBytes  int // of the groups' keys (GroupKeyBytesMax)
	untimed   int // messages without a usable event time
	keyBuf    []byte
	textBuf   []byte
}

func compileAggregate(spec *AggregateSpec, w *WindowSpec, fs *fieldSet, lim Limits) (*aggregation, *Error) {
	if spec == nil && w == nil {
		return nil, nil
	}
	if spec == nil {
		spec = &AggregateSpec{} // a window alone counts messages per window
	}
	a := &aggregation{groups: map[string]*group{}, groupsMax: lim.GroupsMax}
	for _, f := range spec.GroupBy {
		if err := checkField("aggregate.group_by", f); err != nil {
			return nil, err
		}
		a.groupBy = append(a.groupBy, fs.ref(f))
		a.names = append(a.names, f)
	}
	measures := spec.Measures
	if len(measures) == 0 {
		measures = []Measure{{Op: "count"}}
	}
	seen := map[string]bool{"key": true, "window_start_ms": true, "window_end_ms": true}
	for i, m := range measures {
		op, ok := measureOps[m.Op]
		if !ok {
			return nil, badRequest("invalid_aggregate", "aggregate.measures[%d].op must be count, sum, avg, min or max, not %q", i, m.Op)
		}
		ms := measure{op: op, name: m.As}
		if ms.name == "" {
			ms.name = m.Op
		}
		if seen[ms.name] {
			return nil, badRequest("invalid_aggregate", "aggregate.measures[%d]: the name %q is used twice (give it another with \"as\")", i, ms.name)
		}
		seen[ms.name] = true
		switch {
		case m.Field != "":
			if err := checkField("aggregate.measures", m.Field); err != nil {
				return nil, err
			}
			ms.ref = fs.ref(m.Field)
		case op != measureCount:
			return nil, badRequest("invalid_aggregate", "aggregate.measures[%d]: %s needs a field", i, m.Op)
		}
		a.measures = append(a.measures, ms)
	}
	if w != nil {
		if w.Type != "" && w.Type != "tumbling" {
			return nil, badRequest("invalid_window", "window.type must be tumbling, not %q", w.Type)
		}
		if w.SizeMs < 1 {
			return nil, badRequest("invalid_window", "window.size_ms must be a positive number of milliseconds")
		}
		a.windowMs = w.SizeMs
		if w.TimeField != "" {
			if err := checkField("window.time_field", w.TimeField); err != nil {
				return nil, err
			}
			a.timeRef = fs.ref(w.TimeField)
		}
	}
	return a, nil
}

// add counts one message that passed the filter. It returns an error
// when the query would hold more groups than its limit.
func (a *aggregation) add(d decoder, m *Message) *Error {
	var start int64
	if a.windowMs > 0 {
		ts := m.TimestampMs
		if a.timeRef != nil {
			v, ok := d.field(a.timeRef)
			n, isNum := v.Number()
			if !ok || !isNum || n < math.MinInt64/2 || n > math.MaxInt64/2 {
				a.untimed++
				return nil
			}
			ts = int64(n)
		}
		start = windowStart(ts, a.windowMs)
	}
	k := a.keyBuf[:0]
	if a.windowMs > 0 {
		k = binary.BigEndian.AppendUint64(k, uint64(start))
	}
	k = a.appendKey(k, d)
	a.keyBuf = k
	g, ok := a.groups[string(k)]
	if !ok {
		if len(a.groups) >= a.groupsMax || a.keyBytes+len(k) > GroupKeyBytesMax {
			return tooLarge("too_many_groups", "the query makes more than %d groups (--query-groups-max) or %d bytes of group keys; narrow it with a filter, a coarser group_by or a larger window", a.groupsMax, GroupKeyBytesMax)
		}
		a.keyBytes += len(k)
		key := k
		if a.windowMs > 0 {
			key = k[8:]
		}
		g = &group{key: string(key), windowStart: start, acc: make([]accumulator, len(a.measures))}
		for i := range g.acc {
			g.acc[i].min, g.acc[i].max = math.Inf(1), math.Inf(-1)
		}
		a.groups[string(k)] = g
		a.order = append(a.order, g)
	}
	for i := range a.measures {
		ms, acc := &a.measures[i], &g.acc[i]
		if ms.ref == nil {
			acc.n++
			continue
		}
		v, ok := d.field(ms.ref)
		if !ok || v.Kind == KindNull {
			continue
		}
		if ms.op == measureCount {
			acc.n++
			continue
		}
		n, isNum := v.Number()
		if !isNum {
			continue
		}
		acc.n++
		acc.sum += n
		acc.min = min(acc.min, n)
		acc.max = max(acc.max, n)
	}
	return nil
}

// appendKey appends "f1=v1|f2=v2" in group_by order; a field a message
// lacks groups as null, as SQL groups a NULL.
func (a *aggregation) appendKey(k []byte, d decoder) []byte {
	for i, ref := range a.groupBy {
		if i > 0 {
			k = append(k, '|')
		}
		k = append(k, a.names[i]...)
		k = append(k, '=')
		if v, ok := d.field(ref); ok {
			k = v.AppendText(k)
		} else {
			k = append(k, "null"...)
		}
	}
	return k
}

// windowStart is the start of the tumbling window holding ts (windows are
// aligned to the Unix epoch, so every query cuts them the same way).
func windowStart(ts, size int64) int64 {
	s := ts - ts%size
	if ts < 0 && ts%size != 0 {
		s -= size
	}
	return s
}

// appendJSON appends the aggregates, ordered by window, then key.
func (a *aggregation) appendJSON(dst []byte) []byte {
	sort.Slice(a.order, func(i, j int) bool {
		x, y := a.order[i], a.order[j]
		if x.windowStart != y.windowStart {
			return x.windowStart < y.windowStart
		}
		return x.key < y.key
	})
	dst = append(dst, '[')
	for gi, g := range a.order {
		if gi > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"key":`...)
		dst = appendJSONString(dst, []byte(g.key))
		if a.windowMs > 0 {
			dst = appendIntField(dst, "window_start_ms", g.windowStart)
			dst = appendIntField(dst, "window_end_ms", g.windowStart+a.windowMs)
		}
		for i, ms := range a.measures {
			dst = append(dst, ',')
			dst = appendJSONString(dst, []byte(ms.name))
			dst = append(dst, ':')
			dst = ms.appendResult(dst, &g.acc[i])
		}
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendResult writes a measure's value: count and sum are numbers (0
// over no values), avg, min and max are null over no values.
func (ms *measure) appendResult(dst []byte, acc *accumulator) []byte {
	switch ms.op {
	case measureCount:
		return appendInt(dst, acc.n)
	case measureSum:
		return appendNumber(dst, acc.sum)
	}
	if acc.n == 0 {
		return append(dst, "null"...)
	}
	switch ms.op {
	case measureAvg:
		return appendNumber(dst, acc.sum/float64(acc.n))
	case measureMin:
		return appendNumber(dst, acc.min)
	}
	return appendNumber(dst, acc.max)
}

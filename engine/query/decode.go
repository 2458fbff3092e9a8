package query

import (
	"errors"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/valyala/fastjson"
)

// fieldRef is a field a request uses, resolved once per source.
type fieldRef struct {
	name  string
	names []string // name first, then the names field_aliases gives it
	path  []string // name split at '.', when it has more than one part
	slot  int      // index among the source's fields
}

// fieldSet collects the distinct fields one source's request uses.
type fieldSet struct {
	aliases map[string][]string // field_aliases: a field's other names
	refs    []*fieldRef
	byName  map[string]*fieldRef
}

func newFieldSet(aliases map[string][]string) *fieldSet {
	return &fieldSet{aliases: aliases, byName: map[string]*fieldRef{}}
}

// ref returns the reference for name, adding it on first use. Aliases
// work both ways ("a field mapped to other names it may carry"): a query
// naming the field finds it under an alias, and a query naming an alias
// finds the field.
func (s *fieldSet) ref(name string) *fieldRef {
	if r, ok := s.byName[name]; ok {
		return r
	}
	r := &fieldRef{name: name, names: []string{name}, slot: len(s.refs)}
	fields := make([]string, 0, len(s.aliases))
	for field := range s.aliases {
		fields = append(fields, field)
	}
	sort.Strings(fields) // a lookup tries names in the same order every time
	for _, field := range fields {
		alts := s.aliases[field]
		switch {
		case field == name:
			r.names = appendNew(r.names, alts...)
		case contains(alts, name):
			r.names = appendNew(r.names, field)
			r.names = appendNew(r.names, alts...)
		}
	}
	if strings.Contains(name, ".") {
		r.path = strings.Split(name, ".")
	}
	s.refs = append(s.refs, r)
	s.byName[name] = r
	return r
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func appendNew(list []string, items ...string) []string {
	for _, it := range items {
		if !contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// decoder turns stored message values into fields a query looks up. A
// decoder belongs to one request (it reuses its buffers between
// messages); the compiled schema behind it is shared.
type decoder interface {
	// decode reads one message value; false when it is not a message of
	// the source's format (the query skips and counts it).
	decode(value []byte) bool
	// field looks up a field of the message last decoded; the Value is
	// valid until the next decode.
	field(f *fieldRef) (Value, bool)
	// appendObject appends the message last decoded as a JSON object.
	appendObject(dst []byte) []byte
}

// jsonDecoder decodes JSON objects with fastjson, chosen by measurement:
// filter + group_by over 100-byte objects scans several times faster
// than with encoding/json, which builds a map per message (BENCHMARKS.md).
type jsonDecoder struct {
	p       fastjson.Parser
	root    *fastjson.Value
	obj     *fastjson.Object
	raw     []byte
	scratch []byte
}

func (d *jsonDecoder) decode(value []byte) bool {
	v, err := d.p.ParseBytes(value)
	if err != nil {
		return false
	}
	o, err := v.Object()
	if err != nil {
		return false
	}
	d.root, d.obj, d.raw, d.scratch = v, o, value, d.scratch[:0]
	return true
}

func (d *jsonDecoder) field(f *fieldRef) (Value, bool) {
	for _, n := range f.names {
		if x := d.obj.Get(n); x != nil {
			return d.value(x), true
		}
	}
	if f.path != nil {
		if x := d.root.Get(f.path...); x != nil {
			return d.value(x), true
		}
	}
	return Value{}, false
}

// value converts a fastjson value; its text goes to the scratch buffer.
func (d *jsonDecoder) value(x *fastjson.Value) Value {
	switch x.Type() {
	case fastjson.TypeString:
		s, _ := x.StringBytes()
		return Value{Kind: KindString, Text: s}
	case fastjson.TypeNumber:
		// strconv, not fastjson's Float64, which can be off by one unit in
		// the last place: a number must compare the same whichever
		// encoding carried it.
		start := len(d.scratch)
		d.scratch = x.MarshalTo(d.scratch)
		text := d.scratch[start:]
		f, err := strconv.ParseFloat(string(text), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			f = math.NaN() // fastjson accepts NaN and Inf, which JSON does not have
		}
		return Value{Kind: KindNumber, Num: f, Text: text}
	case fastjson.TypeTrue:
		return Value{Kind: KindBool, Num: 1}
	case fastjson.TypeFalse:
		return Value{Kind: KindBool}
	case fastjson.TypeNull:
		return Value{Kind: KindNull}
	}
	kind := KindObject
	if x.Type() == fastjson.TypeArray {
		kind = KindArray
	}
	start := len(d.scratch)
	d.scratch = appendFastjson(d.scratch, x)
	return Value{Kind: kind, Text: d.scratch[start:]}
}

func (d *jsonDecoder) appendObject(dst []byte) []byte {
	if fastjson.ValidateBytes(d.raw) == nil {
		return append(dst, trimSpace(d.raw)...)
	}
	return appendFastjson(dst, d.root)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// appendFastjson appends x as valid JSON even where fastjson's lenient
// parser accepted what JSON does not (raw control characters in strings,
// NaN): strings are escaped again, numbers JSON cannot carry become null.
func appendFastjson(dst []byte, x *fastjson.Value) []byte {
	switch x.Type() {
	case fastjson.TypeString:
		s, _ := x.StringBytes()
		return appendJSONString(dst, s)
	case fastjson.TypeNumber:
		f, err := x.Float64()
		start := len(dst)
		dst = x.MarshalTo(dst)
		if err != nil || fastjson.ValidateBytes(dst[start:]) != nil {
			return appendNumber(dst[:start], f)
		}
		return dst
	case fastjson.TypeObject:
		o, _ := x.Object()
		dst = append(dst, '{')
		first := true
		o.Visit(func(k []byte, v *fastjson.Value) {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendFastjson(dst, v)
		})
		return append(dst, '}')
	case fastjson.TypeArray:
		a, _ := x.Array()
		dst = append(dst, '[')
		for i, v := range a {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFastjson(dst, v)
		}
		return append(dst, ']')
	}
	return x.MarshalTo(dst)
}

// lookupPath finds path inside a composite value (its JSON text), for a
// dotted field whose first part a schema decoder resolved.
func lookupPath(p *fastjson.Parser, v Value, path []string, scratch *[]byte) (Value, bool) {
	if v.Kind != KindObject || len(path) == 0 {
		return Value{}, false
	}
	root, err := p.ParseBytes(v.Text)
	if err != nil {
		return Value{}, false
	}
	x := root.Get(path...)
	if x == nil {
		return Value{}, false
	}
	// The parser's memory is reused by the next lookup: the text is
	// copied out, so two dotted fields of one message can be held at once.
	d := jsonDecoder{scratch: *scratch}
	out := d.value(x)
	start := len(d.scratch)
	d.scratch = append(d.scratch, out.Text...)
	out.Text = d.scratch[start:]
	*scratch = d.scratch
	return out, true
}

package query

import (
	"fmt"
	"math"

	"github.com/hamba/avro/v2"
	"github.com/valyala/fastjson"
)

// avroJSONDecoder reads values in Avro's JSON encoding, and plain JSON
// where a union's value is written untagged. Each value is checked
// against the schema and rewritten as plain JSON: tagged unions
// unwrapped, fields the value lacks filled from the schema's defaults
// (apply_defaults), fields the schema does not name dropped. The query
// then reads the rewritten object.
type avroJSONDecoder struct {
	s        *avroSchema
	defaults bool
	aliases  map[string][]string // field_aliases, for top-level fields
	in       fastjson.Parser
	out      []byte
	steps    int // normalize calls for this value (avroJSONStepsMax)
	jsonDecoder
}

// avroJSONStepsMax bounds the work of checking one value against the
// schema: unions of records are tried branch by branch.
const avroJSONStepsMax = 1 << 20

func (d *avroJSONDecoder) decode(value []byte) bool {
	v, err := d.in.ParseBytes(value)
	if err != nil {
		return false
	}
	d.steps = 0
	out, err := d.normalize(d.out[:0], d.s.rec, v, 0)
	d.out = out
	if err != nil {
		return false
	}
	return d.jsonDecoder.decode(out)
}

// normalize appends v, which must be a value of schema s, as plain JSON.
func (d *avroJSONDecoder) normalize(dst []byte, s avro.Schema, v *fastjson.Value, depth int) ([]byte, error) {
	if depth > avroDepthMax {
		return dst, fmt.Errorf("nested too deeply")
	}
	if d.steps++; d.steps > avroJSONStepsMax {
		return dst, fmt.Errorf("takes more than %d steps to check against the schema", avroJSONStepsMax)
	}
	switch t := s.(type) {
	case *avro.RecordSchema:
		return d.record(dst, t, v, depth)
	case *avro.ArraySchema:
		items, err := v.Array()
		if err != nil {
			return dst, err
		}
		dst = append(dst, '[')
		for i, it := range items {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = d.normalize(dst, t.Items(), it, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case *avro.MapSchema:
		o, err := v.Object()
		if err != nil {
			return dst, err
		}
		dst = append(dst, '{')
		n := 0
		o.Visit(func(k []byte, x *fastjson.Value) {
			if err != nil {
				return
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = append(appendJSONString(dst, k), ':')
			dst, err = d.normalize(dst, t.Values(), x, depth+1)
		})
		return append(dst, '}'), err
	case *avro.UnionSchema:
		return d.union(dst, t, v, depth)
	case *avro.RefSchema:
		return d.normalize(dst, t.Schema(), v, depth+1)
	case *avro.EnumSchema:
		sym, err := v.StringBytes()
		if err != nil || !contains(t.Symbols(), string(sym)) {
			return dst, fmt.Errorf("not a symbol of enum %s", t.Name())
		}
		return appendJSONString(dst, sym), nil
	}
	return d.primitive(dst, s.Type(), v)
}

func (d *avroJSONDecoder) primitive(dst []byte, typ avro.Type, v *fastjson.Value) ([]byte, error) {
	switch typ {
	case avro.Null:
		if v.Type() != fastjson.TypeNull {
			return dst, fmt.Errorf("not null")
		}
		return append(dst, "null"...), nil
	case avro.Boolean:
		if v.Type() != fastjson.TypeTrue && v.Type() != fastjson.TypeFalse {
			return dst, fmt.Errorf("not a boolean")
		}
		return v.MarshalTo(dst), nil
	case avro.Int, avro.Long:
		f, err := v.Float64()
		if err != nil || f != math.Trunc(f) || typ == avro.Int && (f < math.MinInt32 || f > math.MaxInt32) {
			return dst, fmt.Errorf("not an %s", typ)
		}
		return v.MarshalTo(dst), nil
	case avro.Float, avro.Double:
		f, err := v.Float64()
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return dst, fmt.Errorf("not a %s", typ)
		}
		return v.MarshalTo(dst), nil
	case avro.String, avro.Bytes, avro.Fixed:
		b, err := v.StringBytes()
		if err != nil {
			return dst, fmt.Errorf("not a string")
		}
		return appendJSONString(dst, b), nil
	}
	return dst, fmt.Errorf("unsupported type %s", typ)
}

// record appends a record's fields in schema order. A field is found by
// its name, its schema aliases, or (top level) field_aliases; a missing
// field takes its default when apply_defaults is on (a missing field
// without one fails the value), and is left out otherwise.
func (d *avroJSONDecoder) record(dst []byte, t *avro.RecordSchema, v *fastjson.Value, depth int) ([]byte, error) {
	o, err := v.Object()
	if err != nil {
		return dst, err
	}
	dst = append(dst, '{')
	n := 0
	for _, f := range t.Fields() {
		x := o.Get(f.Name())
		for _, a := range f.Aliases() {
			if x == nil {
				x = o.Get(a)
			}
		}
		if depth == 0 {
			for _, a := range d.aliases[f.Name()] {
				if x == nil {
					x = o.Get(a)
				}
			}
		}
		var def []byte
		if x == nil {
			def = d.s.defaults[f]
			if !d.defaults {
				continue
			}
			if def == nil {
				return dst, fmt.Errorf("field %s is missing and has no default", f.Name())
			}
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(appendJSONString(dst, []byte(f.Name())), ':')
		if x == nil {
			dst = append(dst, def...)
			continue
		}
		if dst, err = d.normalize(dst, f.Type(), x, depth+1); err != nil {
			return dst, fmt.Errorf("field %s: %w", f.Name(), err)
		}
	}
	return append(dst, '}'), nil
}

// union takes a value tagged with a branch's name ({"string":"x"}, as
// Avro's JSON encoding writes it) or an untagged one, which goes to the
// first branch of its JSON type it fits. Only records and maps can share
// a JSON type, so trying them one by one is bounded by the value's
// budget of steps (avroJSONStepsMax), not exponential in its depth.
func (d *avroJSONDecoder) union(dst []byte, t *avro.UnionSchema, v *fastjson.Value, depth int) ([]byte, error) {
	if o, err := v.Object(); err == nil && o.Len() == 1 {
		var tag []byte
		var inner *fastjson.Value
		o.Visit(func(k []byte, x *fastjson.Value) { tag, inner = k, x })
		for _, b := range t.Types() {
			if unionBranchName(b) == string(tag) {
				if out, err := d.normalize(dst, b, inner, depth+1); err == nil {
					return out, nil
				}
			}
		}
	}
	for _, b := range t.Types() {
		if !jsonTypeFits(b, v.Type()) {
			continue
		}
		if out, err := d.normalize(dst, b, v, depth+1); err == nil {
			return out, nil
		}
	}
	return dst, fmt.Errorf("fits no branch of the union")
}

// jsonTypeFits reports whether a JSON value of type jt can be a value of
// schema s.
func jsonTypeFits(s avro.Schema, jt fastjson.Type) bool {
	if r, ok := s.(*avro.RefSchema); ok {
		s = r.Schema()
	}
	switch s.Type() {
	case avro.Null:
		return jt == fastjson.TypeNull
	case avro.Boolean:
		return jt == fastjson.TypeTrue || jt == fastjson.TypeFalse
	case avro.Int, avro.Long, avro.Float, avro.Double:
		return jt == fastjson.TypeNumber
	case avro.String, avro.Bytes, avro.Enum, avro.Fixed:
		return jt == fastjson.TypeString
	case avro.Array:
		return jt == fastjson.TypeArray
	}
	return jt == fastjson.TypeObject // record, map
}

// unionBranchName is how Avro's JSON encoding tags a union value: the
// full name of a named type, else the type's name.
func unionBranchName(s avro.Schema) string {
	if n, ok := s.(avro.NamedSchema); ok {
		return n.FullName()
	}
	if r, ok := s.(*avro.RefSchema); ok {
		return r.Schema().FullName()
	}
	return string(s.Type())
}

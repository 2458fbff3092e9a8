package query

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/hamba/avro/v2"
	"github.com/valyala/fastjson"
)

// avroDepthMax bounds how deeply nested a decoded Avro value may be
// (recursive schemas could otherwise nest once per byte of the message).
const avroDepthMax = 64

// avroItemsMax bounds the items of all arrays and maps of one Avro value,
// so a claimed block count in a hostile value cannot spin a decoder.
const avroItemsMax = 1 << 20

// avroConfig limits what the binary reader allocates for one bytes or
// string value: no stored message is larger.
var avroConfig = avro.Config{MaxByteSliceSize: 16 << 20, MaxSliceAllocSize: 16 << 20}.Freeze()

// avroSchema is a compiled record schema (shared, read-only).
type avroSchema struct {
	rec      *avro.RecordSchema
	defaults map[*avro.Field][]byte // each field's default as JSON (fields with one)
}

// AvroFixedBytesMax bounds the size of an Avro fixed type: hamba/avro
// allocates a fixed's size as given, in its default and in every value.
const AvroFixedBytesMax = 64 << 10

// compileAvro parses a record schema with hamba/avro, in a cache of its
// own so that two requests naming the same record differently never see
// each other's definitions.
func compileAvro(text string) (as *avroSchema, e *Error) {
	if err := checkFixedSizes(text); err != nil {
		return nil, err
	}
	defer func() {
		// A schema hamba/avro cannot handle must be a 400, not the end of
		// the node.
		if r := recover(); r != nil {
			as, e = nil, badRequest("invalid_schema", "avro schema_text: %v", r)
		}
	}()
	s, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	if err != nil {
		return nil, badRequest("invalid_schema", "avro schema_text: %v", err)
	}
	rec, ok := s.(*avro.RecordSchema)
	if !ok {
		return nil, badRequest("invalid_schema", "avro schema_text: the schema must be a record (it is %s)", s.Type())
	}
	as = &avroSchema{rec: rec, defaults: map[*avro.Field][]byte{}}
	if err := as.collectDefaults(rec, 0); err != nil {
		return nil, badRequest("invalid_schema", "avro schema_text: %v", err)
	}
	return as, nil
}

// checkFixedSizes refuses a schema with a fixed type larger than
// AvroFixedBytesMax, before hamba/avro sees it.
func checkFixedSizes(text string) *Error {
	v, err := fastjson.Parse(text)
	if err != nil {
		return badRequest("invalid_schema", "avro schema_text is not JSON: %v", err)
	}
	var walk func(v *fastjson.Value) *Error
	walk = func(v *fastjson.Value) *Error {
		switch v.Type() {
		case fastjson.TypeObject:
			if string(v.GetStringBytes("type")) == "fixed" {
				if n := v.GetFloat64("size"); n < 0 || n > AvroFixedBytesMax {
					return badRequest("invalid_schema", "avro schema_text: fixed %q has size %v; at most %d", v.GetStringBytes("name"), n, AvroFixedBytesMax)
				}
			}
			o, _ := v.Object()
			var e *Error
			o.Visit(func(_ []byte, x *fastjson.Value) {
				if e == nil {
					e = walk(x)
				}
			})
			return e
		case fastjson.TypeArray:
			items, _ := v.Array()
			for _, x := range items {
				if e := walk(x); e != nil {
					return e
				}
			}
		}
		return nil
	}
	return walk(v)
}

// collectDefaults renders the default of every field reachable from rec
// as JSON once, at compile time.
func (as *avroSchema) collectDefaults(s avro.Schema, depth int) error {
	if depth > avroDepthMax {
		return nil
	}
	switch t := s.(type) {
	case *avro.RecordSchema:
		for _, f := range t.Fields() {
			if _, seen := as.defaults[f]; seen {
				continue
			}
			if f.HasDefault() {
				b, err := defaultJSON(f.Default())
				if err != nil {
					return fmt.Errorf("field %s: default: %w", f.Name(), err)
				}
				as.defaults[f] = b
			} else {
				as.defaults[f] = nil
			}
			if err := as.collectDefaults(f.Type(), depth+1); err != nil {
				return err
			}
		}
	case *avro.ArraySchema:
		return as.collectDefaults(t.Items(), depth+1)
	case *avro.MapSchema:
		return as.collectDefaults(t.Values(), depth+1)
	case *avro.UnionSchema:
		for _, b := range t.Types() {
			if err := as.collectDefaults(b, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// defaultJSON renders a default as hamba/avro parsed it; bytes and fixed
// defaults, at any depth, are strings of code points 0-255, as Avro's
// JSON encoding writes them (and as rows show bytes values).
func defaultJSON(v any) ([]byte, error) {
	return appendDefault(nil, v, 0)
}

func appendDefault(dst []byte, v any, depth int) ([]byte, error) {
	if depth > avroDepthMax {
		return dst, fmt.Errorf("nested too deeply")
	}
	switch t := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case []byte:
		return appendLatin1(dst, t), nil
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(appendJSONString(dst, []byte(k)), ':')
			var err error
			if dst, err = appendDefault(dst, t[k], depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	case []any:
		dst = append(dst, '[')
		for i, x := range t {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendDefault(dst, x, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Array && rv.Type().Elem().Kind() == reflect.Uint8 {
		b := make([]byte, rv.Len()) // a fixed default: [N]byte
		reflect.Copy(reflect.ValueOf(b), rv)
		return appendLatin1(dst, b), nil
	}
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

func appendLatin1(dst, b []byte) []byte {
	return appendJSONString(dst, latin1(b))
}

// latin1 returns bytes as the UTF-8 of code points 0-255, the text Avro's
// JSON encoding gives bytes and fixed values: filters, keys and rows see
// the same text whichever encoding carried the value.
func latin1(b []byte) []byte {
	ascii := true
	for _, c := range b {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return b
	}
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return out
}

// avroBinaryDecoder reads Avro binary values, decoding only the fields a
// query uses and skipping the rest (a record's fields are sequential, so
// skipping is all the work a field the query ignores costs).
type avroBinaryDecoder struct {
	s       *avroSchema
	r       *avro.Reader
	need    []bool  // per record field: decoded?
	refIdx  []int   // per fieldRef slot: record field index, or -1
	vals    []Value // per record field
	raw     []byte
	scratch []byte
	items   int // array and map items read in this value (avroItemsMax)
	sub     fastjson.Parser
}

func newAvroBinaryDecoder(s *avroSchema, fs *fieldSet) *avroBinaryDecoder {
	fields := s.rec.Fields()
	d := &avroBinaryDecoder{
		s:    s,
		r:    avro.NewReader(nil, 0, avro.WithReaderConfig(avroConfig)),
		need: make([]bool, len(fields)),
		vals: make([]Value, len(fields)),
	}
	for _, ref := range fs.refs {
		i := avroFieldIndex(fields, ref.names)
		if i < 0 && ref.path != nil {
			i = avroFieldIndex(fields, ref.path[:1])
		}
		d.refIdx = append(d.refIdx, i)
		if i >= 0 {
			d.need[i] = true
		}
	}
	return d
}

// avroFieldIndex finds the field carrying one of names (its name or an
// alias the schema gives it).
func avroFieldIndex(fields []*avro.Field, names []string) int {
	for _, n := range names {
		for i, f := range fields {
			if f.Name() == n || contains(f.Aliases(), n) {
				return i
			}
		}
	}
	return -1
}

func (d *avroBinaryDecoder) decode(value []byte) bool {
	d.r.Reset(value)
	d.r.Error = nil // Reset keeps the last value's error
	d.raw, d.scratch, d.items = value, d.scratch[:0], 0
	for i, f := range d.s.rec.Fields() {
		if d.need[i] {
			d.vals[i] = d.read(f.Type(), 0)
		} else {
			d.skip(f.Type(), 0)
		}
		if d.r.Error != nil {
			return false
		}
	}
	return d.atEnd()
}

// atEnd reports whether the value was read to its last byte: trailing
// bytes mean the value was not written with this schema.
func (d *avroBinaryDecoder) atEnd() bool {
	d.r.Peek()
	end := errors.Is(d.r.Error, io.EOF)
	d.r.Error = nil
	return end
}

func (d *avroBinaryDecoder) field(f *fieldRef) (Value, bool) {
	i := d.refIdx[f.slot]
	if i < 0 {
		return Value{}, false
	}
	v := d.vals[i]
	fields := d.s.rec.Fields()
	if f.path != nil && avroFieldIndex(fields[i:i+1], f.names) < 0 {
		return lookupPath(&d.sub, v, f.path[1:], &d.scratch)
	}
	return v, true
}

func (d *avroBinaryDecoder) appendObject(dst []byte) []byte {
	d.r.Reset(d.raw)
	d.r.Error, d.items = nil, 0
	return d.appendJSON(dst, d.s.rec, 0) // it decoded once: it decodes again
}

// read decodes one value of schema s as a query Value.
func (d *avroBinaryDecoder) read(s avro.Schema, depth int) Value {
	r := d.r
	switch s.Type() {
	case avro.Null:
		return Value{Kind: KindNull}
	case avro.Boolean:
		if r.ReadBool() {
			return Value{Kind: KindBool, Num: 1}
		}
		return Value{Kind: KindBool}
	case avro.Int, avro.Long:
		var n int64
		if s.Type() == avro.Int {
			n = int64(r.ReadInt())
		} else {
			n = r.ReadLong()
		}
		start := len(d.scratch)
		d.scratch = strconv.AppendInt(d.scratch, n, 10)
		return Value{Kind: KindNumber, Num: float64(n), Text: d.scratch[start:]}
	case avro.Float:
		return d.float(float64(r.ReadFloat()))
	case avro.Double:
		return d.float(r.ReadDouble())
	case avro.String:
		return Value{Kind: KindString, Text: r.ReadBytes()}
	case avro.Bytes:
		return Value{Kind: KindString, Text: latin1(r.ReadBytes())}
	case avro.Enum:
		return Value{Kind: KindString, Text: []byte(d.symbol(s.(*avro.EnumSchema)))}
	case avro.Fixed:
		return Value{Kind: KindString, Text: latin1(d.fixed(s.(*avro.FixedSchema)))}
	case avro.Union:
		if b := d.branch(s.(*avro.UnionSchema)); b != nil && depth < avroDepthMax {
			return d.read(b, depth+1)
		}
		r.ReportError("read", "union branch out of range or nested too deeply")
		return Value{}
	case avro.Ref:
		return d.read(s.(*avro.RefSchema).Schema(), depth)
	}
	kind := KindObject
	if s.Type() == avro.Array {
		kind = KindArray
	}
	start := len(d.scratch)
	d.scratch = d.appendJSON(d.scratch, s, depth)
	return Value{Kind: kind, Text: d.scratch[start:]}
}

func (d *avroBinaryDecoder) float(f float64) Value {
	start := len(d.scratch)
	d.scratch = appendNumber(d.scratch, f)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return Value{Kind: KindNull}
	}
	return Value{Kind: KindNumber, Num: f, Text: d.scratch[start:]}
}

// fixed reads a fixed value; a size past the value's end fails it
// without allocating.
func (d *avroBinaryDecoder) fixed(t *avro.FixedSchema) []byte {
	if t.Size() > len(d.raw) {
		d.r.ReportError("read", "fixed past the end of the value")
		return nil
	}
	b := make([]byte, t.Size())
	d.r.Read(b)
	return b
}

func (d *avroBinaryDecoder) symbol(e *avro.EnumSchema) string {
	i := int(d.r.ReadInt())
	sym, ok := e.Symbol(i)
	if !ok {
		d.r.ReportError("read", "enum symbol out of range")
	}
	return sym
}

func (d *avroBinaryDecoder) branch(u *avro.UnionSchema) avro.Schema {
	i := d.r.ReadLong()
	types := u.Types()
	if i < 0 || i >= int64(len(types)) {
		return nil
	}
	return types[i]
}

// appendJSON appends one value of schema s as plain JSON: unions are
// written untagged, bytes and fixed as strings of code points 0-255.
func (d *avroBinaryDecoder) appendJSON(dst []byte, s avro.Schema, depth int) []byte {
	r := d.r
	if depth > avroDepthMax {
		r.ReportError("read", "nested too deeply")
		return dst
	}
	switch t := s.(type) {
	case *avro.RecordSchema:
		dst = append(dst, '{')
		for i, f := range t.Fields() {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, []byte(f.Name()))
			dst = append(dst, ':')
			dst = d.appendJSON(dst, f.Type(), depth+1)
		}
		return append(dst, '}')
	case *avro.ArraySchema:
		dst = append(dst, '[')
		n := 0
		d.blocks(func() {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = d.appendJSON(dst, t.Items(), depth+1)
		})
		return append(dst, ']')
	case *avro.MapSchema:
		dst = append(dst, '{')
		n := 0
		d.blocks(func() {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = appendJSONString(dst, r.ReadBytes())
			dst = append(dst, ':')
			dst = d.appendJSON(dst, t.Values(), depth+1)
		})
		return append(dst, '}')
	case *avro.UnionSchema:
		b := d.branch(t)
		if b == nil {
			r.ReportError("read", "union branch out of range")
			return dst
		}
		return d.appendJSON(dst, b, depth+1)
	case *avro.RefSchema:
		return d.appendJSON(dst, t.Schema(), depth+1)
	case *avro.EnumSchema:
		return appendJSONString(dst, []byte(d.symbol(t)))
	case *avro.FixedSchema:
		return appendLatin1(dst, d.fixed(t))
	}
	switch s.Type() {
	case avro.Bytes:
		return appendLatin1(dst, r.ReadBytes())
	case avro.String:
		return appendJSONString(dst, r.ReadBytes())
	}
	return d.read(s, depth).AppendJSON(dst)
}

// blocks calls item once per item of an array or map, block by block,
// stopping at the first error or past the value's avroItemsMax items.
func (d *avroBinaryDecoder) blocks(item func()) {
	r := d.r
	for r.Error == nil {
		n, _ := r.ReadBlockHeader()
		if n == 0 || r.Error != nil {
			return
		}
		if n < 0 || n > int64(avroItemsMax-d.items) {
			r.ReportError("read", "array or map block count out of range")
			return
		}
		d.items += int(n)
		for i := int64(0); i < n && r.Error == nil; i++ {
			item()
		}
	}
}

// skip reads past one value of schema s.
func (d *avroBinaryDecoder) skip(s avro.Schema, depth int) {
	r := d.r
	if depth > avroDepthMax {
		r.ReportError("skip", "nested too deeply")
		return
	}
	switch t := s.(type) {
	case *avro.RecordSchema:
		for _, f := range t.Fields() {
			d.skip(f.Type(), depth+1)
		}
		return
	case *avro.ArraySchema:
		d.skipBlocks(func() { d.skip(t.Items(), depth+1) })
		return
	case *avro.MapSchema:
		d.skipBlocks(func() { r.SkipString(); d.skip(t.Values(), depth+1) })
		return
	case *avro.UnionSchema:
		if b := d.branch(t); b != nil {
			d.skip(b, depth+1)
		} else {
			r.ReportError("skip", "union branch out of range")
		}
		return
	case *avro.RefSchema:
		d.skip(t.Schema(), depth+1)
		return
	case *avro.FixedSchema:
		r.SkipNBytes(t.Size())
		return
	case *avro.EnumSchema:
		d.symbol(t) // checks the index, as a full decode does
		return
	}
	switch s.Type() {
	case avro.Boolean:
		r.ReadBool() // checks the byte is 0 or 1
	case avro.Int:
		r.SkipInt()
	case avro.Long:
		r.SkipLong()
	case avro.Float:
		r.SkipFloat()
	case avro.Double:
		r.SkipDouble()
	case avro.String, avro.Bytes:
		n := r.ReadLong()
		if n < 0 {
			r.ReportError("skip", "negative length")
			return
		}
		d.skipN(n)
	}
}

// skipN skips n bytes; past the end of the value, the reader's error
// becomes io.EOF and the value does not decode.
func (d *avroBinaryDecoder) skipN(n int64) {
	if n > int64(len(d.raw)) {
		d.r.ReportError("skip", "length past the end of the value")
		return
	}
	d.r.SkipNBytes(int(n))
}

// skipBlocks skips an array or map item by item. A block may give its
// size in bytes, which would let it be skipped in one step, but then a
// value whose items do not decode would pass here and fail in a full
// decode: the query and its rows would disagree.
func (d *avroBinaryDecoder) skipBlocks(item func()) { d.blocks(item) }

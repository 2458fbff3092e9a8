package query

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/bufbuild/protocompile"
	"github.com/valyala/fastjson"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// protoCompileTimeMax bounds compiling one request's .proto text.
const protoCompileTimeMax = 5 * time.Second

// A protobuf value whose protojson is larger than protoJSONGrowthMax
// times the value plus protoJSONBytesMin is skipped (see decodeMessage).
const (
	protoJSONGrowthMax = 16
	protoJSONBytesMin  = 64 << 10
)

// protoFileName is the name the inline .proto text compiles under (error
// messages point into it: "query.proto:3:9: ...").
const protoFileName = "query.proto"

// compileProto compiles an inline .proto file with bufbuild/protocompile
// (imports of the well-known types allowed) and picks the message to
// decode: message, by full or short name, or the file's first.
func compileProto(text, message string) (protoreflect.MessageDescriptor, *Error) {
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			Accessor: protocompile.SourceAccessorFromMap(map[string]string{protoFileName: text}),
		}),
		MaxParallelism: 1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), protoCompileTimeMax)
	defer cancel()
	files, err := c.Compile(ctx, protoFileName)
	if err != nil {
		return nil, badRequest("invalid_schema", "proto schema_text: %v", err)
	}
	msgs := files[0].Messages()
	if msgs.Len() == 0 {
		return nil, badRequest("invalid_schema", "proto schema_text declares no message")
	}
	if message == "" {
		return msgs.Get(0), nil
	}
	if md := findMessage(msgs, message); md != nil {
		return md, nil
	}
	return nil, badRequest("invalid_schema", "proto schema_text has no message %q", message)
}

// findMessage finds a message by full name, or by short name at any depth.
func findMessage(msgs protoreflect.MessageDescriptors, name string) protoreflect.MessageDescriptor {
	for i := 0; i < msgs.Len(); i++ {
		md := msgs.Get(i)
		if string(md.FullName()) == name || string(md.Name()) == name {
			return md
		}
		if found := findMessage(md.Messages(), name); found != nil {
			return found
		}
	}
	return nil
}

// protoField finds the field carrying one of names: its proto name, its
// JSON name, or an alias.
func protoField(md protoreflect.MessageDescriptor, names []string) protoreflect.FieldDescriptor {
	fields := md.Fields()
	for _, n := range names {
		if fd := fields.ByName(protoreflect.Name(n)); fd != nil {
			return fd
		}
		if fd := fields.ByJSONName(n); fd != nil {
			return fd
		}
	}
	return nil
}

// protoScalar reports whether a field is read straight off the wire: a
// singular field that is not a message or group.
func protoScalar(fd protoreflect.FieldDescriptor) bool {
	return fd.Cardinality() != protoreflect.Repeated && fd.Message() == nil
}

// protoDecoder decodes Protocol Buffers values (binary or protojson).
// Binary values whose queried fields are all singular scalars are read
// straight off the wire with protowire (every field's framing checked,
// only the queried ones decoded); anything else is unmarshalled into a
// dynamicpb message and rendered with protojson (proto field names, and
// unpopulated fields when apply_defaults is on), which the query reads
// as JSON.
type protoDecoder struct {
	md       protoreflect.MessageDescriptor
	binary   bool
	defaults bool
	aliases  map[string]string // alias -> proto field name (protojson input)
	wire     bool              // the fast path applies
	fields   []protoreflect.FieldDescriptor
	canon    []*fieldRef // per slot: the ref under its proto name (JSON path)
	vals     []Value     // per slot (wire path)
	have     []bool
	stored   []byte // the value last decoded, as stored
	wireText []byte // texts of the wire path's Values (the JSON path's are in jsonDecoder.scratch)
	msg      *dynamicpb.Message
	text     []byte // the message last decoded, as protojson (a view of textBuf)
	textBuf  []byte
	rewrite  []byte
	in       fastjson.Parser
	jsonDecoder
}

func newProtoDecoder(md protoreflect.MessageDescriptor, spec *DecodeSpec, fs *fieldSet) *protoDecoder {
	d := &protoDecoder{
		md:       md,
		binary:   spec.Encoding != "json",
		defaults: spec.ApplyDefaults == nil || *spec.ApplyDefaults,
		aliases:  map[string]string{},
		vals:     make([]Value, len(fs.refs)),
		have:     make([]bool, len(fs.refs)),
	}
	for field, alts := range spec.FieldAliases {
		for _, a := range alts {
			d.aliases[a] = field
		}
	}
	d.wire = d.binary
	for _, ref := range fs.refs {
		fd := protoField(md, ref.names)
		d.fields = append(d.fields, fd)
		canon := ref
		if fd != nil {
			canon = &fieldRef{name: string(fd.Name()), names: []string{string(fd.Name())}}
		}
		d.canon = append(d.canon, canon)
		if fd == nil || !protoScalar(fd) {
			d.wire = false
		}
	}
	return d
}

func (d *protoDecoder) decode(value []byte) bool {
	d.stored, d.wireText, d.text = value, d.wireText[:0], nil
	if d.wire {
		return d.decodeWire(value)
	}
	return d.decodeMessage() && d.jsonDecoder.decode(d.text)
}

// decodeMessage unmarshals the stored value into a dynamic message and renders it as
// protojson into d.text.
func (d *protoDecoder) decodeMessage() bool {
	if d.text != nil {
		return true
	}
	if d.msg == nil {
		d.msg = dynamicpb.NewMessage(d.md)
	}
	d.msg.Reset()
	var err error
	if d.binary {
		err = proto.Unmarshal(d.stored, d.msg)
	} else {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(d.renameAliases(d.stored), d.msg)
	}
	if err != nil {
		return false
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: d.defaults}.MarshalAppend(d.textBuf[:0], d.msg)
	if err != nil {
		return false
	}
	d.textBuf = out
	if len(out) > protoJSONGrowthMax*len(d.stored)+protoJSONBytesMin {
		// Unpopulated fields of set but empty sub-messages, each two bytes
		// on the wire, can render as kilobytes of JSON: such a value is
		// skipped rather than held.
		return false
	}
	d.text = out
	return true
}

// renameAliases rewrites a protojson object's top-level keys that are
// field_aliases to the field's proto name (unless the field is there
// too), since protojson knows only proto and JSON names.
func (d *protoDecoder) renameAliases(raw []byte) []byte {
	if len(d.aliases) == 0 {
		return raw
	}
	v, err := d.in.ParseBytes(raw)
	if err != nil {
		return raw
	}
	o, err := v.Object()
	if err != nil {
		return raw
	}
	renamed := false
	o.Visit(func(k []byte, _ *fastjson.Value) {
		if f, ok := d.aliases[string(k)]; ok && o.Get(f) == nil {
			renamed = true
		}
	})
	if !renamed {
		return raw
	}
	out := append(d.rewrite[:0], '{')
	n := 0
	o.Visit(func(k []byte, x *fastjson.Value) {
		if n > 0 {
			out = append(out, ',')
		}
		n++
		if f, ok := d.aliases[string(k)]; ok && o.Get(f) == nil {
			k = []byte(f)
		}
		out = append(appendJSONString(out, k), ':')
		out = appendFastjson(out, x)
	})
	d.rewrite = append(out, '}')
	return d.rewrite
}

func (d *protoDecoder) field(f *fieldRef) (Value, bool) {
	if d.wire {
		if !d.have[f.slot] {
			return Value{}, false
		}
		return d.vals[f.slot], true
	}
	v, ok := d.jsonDecoder.field(d.canon[f.slot])
	if !ok && d.canon[f.slot] != f {
		v, ok = d.jsonDecoder.field(f)
	}
	return v, ok
}

func (d *protoDecoder) appendObject(dst []byte) []byte {
	if !d.decodeMessage() {
		return append(dst, "{}"...)
	}
	// protojson varies its whitespace on purpose; rows are compact JSON.
	out := bytes.NewBuffer(dst)
	if json.Compact(out, d.text) != nil {
		return append(dst, d.text...)
	}
	return out.Bytes()
}

// decodeWire walks the wire format once: each field's framing is
// checked, and the queried fields are decoded (the last occurrence of a
// singular field wins, as proto.Unmarshal merges them).
func (d *protoDecoder) decodeWire(b []byte) bool {
	clear(d.have)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		for slot, fd := range d.fields {
			if fd.Number() == num && typ == wireTypeOf(fd) {
				// A value of another wire type is an unknown field to
				// proto.Unmarshal, which keeps the field as it was.
				v, ok := d.wireValue(fd, typ, b[:m])
				if !ok {
					return false
				}
				d.vals[slot], d.have[slot] = v, true
			}
		}
		b = b[m:]
	}
	if d.defaults {
		// As protojson's EmitUnpopulated writes them (the rows): a field
		// with presence (optional, proto2) that is not set is null, any
		// other its zero value; a oneof member that is not set is absent.
		for slot, fd := range d.fields {
			switch {
			case d.have[slot] || fd.ContainingOneof() != nil:
			case fd.HasPresence():
				d.vals[slot], d.have[slot] = Value{Kind: KindNull}, true
			default:
				d.vals[slot], d.have[slot] = d.defaultValue(fd), true
			}
		}
	}
	return true
}

// wireTypeOf is the wire type a singular scalar field is written with.
func wireTypeOf(fd protoreflect.FieldDescriptor) protowire.Type {
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		return protowire.BytesType
	case protoreflect.FloatKind, protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
		return protowire.Fixed32Type
	case protoreflect.DoubleKind, protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}

// wireValue decodes one scalar field's value (b holds exactly it).
func (d *protoDecoder) wireValue(fd protoreflect.FieldDescriptor, typ protowire.Type, b []byte) (Value, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		s, n := protowire.ConsumeBytes(b)
		if n < 0 || typ != protowire.BytesType {
			return Value{}, false
		}
		if fd.Kind() == protoreflect.BytesKind {
			return d.base64(s), true // as protojson writes bytes
		}
		if fd.Syntax() == protoreflect.Proto3 && !utf8.Valid(s) {
			return Value{}, false // proto.Unmarshal refuses it too
		}
		return Value{Kind: KindString, Text: s}, true
	case protoreflect.FloatKind, protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
		u, n := protowire.ConsumeFixed32(b)
		if n < 0 || typ != protowire.Fixed32Type {
			return Value{}, false
		}
		switch fd.Kind() {
		case protoreflect.FloatKind:
			return d.float32(math.Float32frombits(u)), true
		case protoreflect.Sfixed32Kind:
			return d.int(int64(int32(u))), true
		}
		return d.int(int64(u)), true
	case protoreflect.DoubleKind, protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		u, n := protowire.ConsumeFixed64(b)
		if n < 0 || typ != protowire.Fixed64Type {
			return Value{}, false
		}
		switch fd.Kind() {
		case protoreflect.DoubleKind:
			return d.float(math.Float64frombits(u)), true
		case protoreflect.Sfixed64Kind:
			return d.int(int64(u)), true
		}
		return d.uint(u), true
	}
	u, n := protowire.ConsumeVarint(b)
	if n < 0 || typ != protowire.VarintType {
		return Value{}, false
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return Value{Kind: KindBool, Num: float64(min(u, 1))}, true
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(protoreflect.EnumNumber(int32(u))); ev != nil {
			return Value{Kind: KindString, Text: []byte(ev.Name())}, true
		}
		return d.int(int64(int32(u))), true
	case protoreflect.Int32Kind:
		return d.int(int64(int32(u))), true
	case protoreflect.Sint32Kind:
		return d.int(int64(int32(protowire.DecodeZigZag(u & math.MaxUint32)))), true
	case protoreflect.Sint64Kind:
		return d.int(protowire.DecodeZigZag(u)), true
	case protoreflect.Uint32Kind:
		return d.int(int64(uint32(u))), true
	case protoreflect.Uint64Kind:
		return d.uint(u), true
	}
	return d.int(int64(u)), true // int64
}

// defaultValue is a field's value when the message does not carry it:
// the declared default (proto2), else the type's zero value.
func (d *protoDecoder) defaultValue(fd protoreflect.FieldDescriptor) Value {
	def := fd.Default()
	switch fd.Kind() {
	case protoreflect.StringKind:
		return Value{Kind: KindString, Text: []byte(def.String())}
	case protoreflect.BytesKind:
		return d.base64(def.Bytes())
	case protoreflect.BoolKind:
		if def.Bool() {
			return Value{Kind: KindBool, Num: 1}
		}
		return Value{Kind: KindBool}
	case protoreflect.EnumKind:
		if ev := fd.DefaultEnumValue(); ev != nil {
			return Value{Kind: KindString, Text: []byte(ev.Name())}
		}
		if ev := fd.Enum().Values().ByNumber(def.Enum()); ev != nil {
			return Value{Kind: KindString, Text: []byte(ev.Name())}
		}
		return d.int(int64(def.Enum()))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return d.float(def.Float())
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return d.uint(def.Uint())
	}
	return d.int(def.Int())
}

func (d *protoDecoder) base64(b []byte) Value {
	start := len(d.wireText)
	d.wireText = base64.StdEncoding.AppendEncode(d.wireText, b)
	return Value{Kind: KindString, Text: d.wireText[start:]}
}

func (d *protoDecoder) int(n int64) Value {
	start := len(d.wireText)
	d.wireText = strconv.AppendInt(d.wireText, n, 10)
	return Value{Kind: KindNumber, Num: float64(n), Text: d.wireText[start:]}
}

func (d *protoDecoder) uint(n uint64) Value {
	start := len(d.wireText)
	d.wireText = strconv.AppendUint(d.wireText, n, 10)
	return Value{Kind: KindNumber, Num: float64(n), Text: d.wireText[start:]}
}

func (d *protoDecoder) float(f float64) Value {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		// protojson writes these as the strings "NaN", "Infinity".
		s := "NaN"
		if math.IsInf(f, 1) {
			s = "Infinity"
		} else if math.IsInf(f, -1) {
			s = "-Infinity"
		}
		return Value{Kind: KindString, Text: []byte(s)}
	}
	start := len(d.wireText)
	d.wireText = appendNumber(d.wireText, f)
	return Value{Kind: KindNumber, Num: f, Text: d.wireText[start:]}
}

// float32 keeps a float field's shortest 32-bit form (0.1, not
// 0.10000000149011612), as protojson writes it.
func (d *protoDecoder) float32(f float32) Value {
	v := d.float(float64(f))
	if v.Kind == KindNumber {
		format := byte('f')
		if math.Abs(v.Num) >= 1e21 {
			format = 'g'
		}
		start := len(d.wireText)
		d.wireText = strconv.AppendFloat(d.wireText, float64(f), format, -1, 32)
		v.Text = d.wireText[start:]
		v.Num, _ = strconv.ParseFloat(string(v.Text), 64)
	}
	return v
}

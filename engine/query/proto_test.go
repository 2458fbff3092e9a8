package query

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

const orderProto = `syntax = "proto3";
package shop;
message Order {
  int64 id = 1;
  string user_id = 2;
  double amount = 3;
  Status status = 4;
  repeated string tags = 5;
  Meta meta = 6;
  float ratio = 7;
  sint32 delta = 8;
  optional string note = 9;
  uint64 big = 10;
  bytes blob = 11;
}
enum Status { NEW = 0; PAID = 1; }
message Meta { string src = 1; }
`

// protoOrders encodes orders in protobuf binary through dynamicpb.
func protoOrders(t testing.TB, orders ...map[string]any) []Message {
	t.Helper()
	md, err := compileProto(orderProto, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []Message
	for i, o := range orders {
		m := dynamicpb.NewMessage(md)
		for k, v := range o {
			fd := md.Fields().ByName(protoreflect.Name(k))
			switch x := v.(type) {
			case []string:
				l := m.Mutable(fd).List()
				for _, s := range x {
					l.Append(protoreflect.ValueOfString(s))
				}
			case protoreflect.EnumNumber:
				m.Set(fd, protoreflect.ValueOfEnum(x))
			case string:
				if fd.Message() != nil {
					sub := m.Mutable(fd).Message()
					sub.Set(fd.Message().Fields().ByName("src"), protoreflect.ValueOfString(x))
					continue
				}
				m.Set(fd, protoreflect.ValueOfString(x))
			default:
				m.Set(fd, protoreflect.ValueOf(v))
			}
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Message{Offset: uint64(i), TimestampMs: int64(1000 * (i + 1)), Value: b})
	}
	return out
}

func protoTestOrders(t *testing.T) []Message {
	return protoOrders(t,
		map[string]any{"id": int64(1), "user_id": "ann", "amount": 10.0, "tags": []string{"a"}, "meta": "app", "ratio": float32(0.1), "delta": int32(-3), "big": uint64(1) << 63, "blob": []byte{0xff, 1}},
		map[string]any{"id": int64(2), "user_id": "bob", "amount": 20.5, "status": protoreflect.EnumNumber(1), "note": "gift"},
		map[string]any{"id": int64(3), "user_id": "ann", "status": protoreflect.EnumNumber(1)},
	)
}

// TestProtoBinary runs the same query on the wire path (scalar fields
// only) and on the dynamicpb path (a repeated field forces it): both
// must agree, defaults included.
func TestProtoBinary(t *testing.T) {
	msgs := protoTestOrders(t)
	msgs = append(msgs, Message{Offset: 3, Value: []byte{0x0a, 0x05, 'x'}}) // a length past the end
	dec := `"decode":{"type":"proto","encoding":"binary","schema_text":` + decodeJSON(orderProto) + `}`
	wire := `{"source":{"topic":"t",` + dec + `},"filter":[{"field":"amount","op":"ge","value":0}],
		"aggregate":{"group_by":["status","user_id"],"measures":[{"op":"count"},{"op":"sum","field":"amount"},{"op":"min","field":"delta"},{"op":"max","field":"ratio"}]}}`
	slow := `{"source":{"topic":"t",` + dec + `},"filter":[{"field":"amount","op":"ge","value":0},{"field":"tags","op":"ne","value":"zzz"}],
		"aggregate":{"group_by":["status","user_id"],"measures":[{"op":"count"},{"op":"sum","field":"amount"},{"op":"min","field":"delta"},{"op":"max","field":"ratio"}]}}`
	want := `[{"count":1,"key":"status=NEW|user_id=ann","max":0.1,"min":-3,"sum":10},{"count":1,"key":"status=PAID|user_id=ann","max":0,"min":0,"sum":0},` +
		`{"count":1,"key":"status=PAID|user_id=bob","max":0,"min":0,"sum":20.5}]`
	for name, body := range map[string]string{"wire": wire, "dynamicpb": slow} {
		m := mustQuery(t, body, msgs)
		if got := canon(t, m["aggregates"]); got != want {
			t.Errorf("%s\n got %s\nwant %s", name, got, want)
		}
		if st := m["stats"].(map[string]any); st["skipped"] != 1.0 {
			t.Errorf("%s: stats %v", name, st)
		}
	}
	// Rows: protojson with proto names and unpopulated fields.
	m := mustQuery(t, `{"source":{"topic":"t",`+dec+`},"filter":[{"field":"id","op":"eq","value":1}],"transform":{"emit_rows":1}}`, msgs)
	want = `[{"amount":10,"big":"9223372036854775808","blob":"/wE=","delta":-3,"id":"1","meta":{"src":"app"},"ratio":0.1,"status":"NEW","tags":["a"],"user_id":"ann"}]`
	if got := canon(t, m["rows"]); got != want {
		t.Errorf("rows\n got %s\nwant %s", got, want)
	}
	// A 64-bit integer keeps its digits in a key; a JSON name finds the field.
	m = mustQuery(t, `{"source":{"topic":"t",`+dec+`},"filter":[{"field":"userId","op":"eq","value":"ann"}],"aggregate":{"group_by":["big"]}}`, msgs)
	if got := canon(t, m["aggregates"]); got != `[{"count":1,"key":"big=0"},{"count":1,"key":"big=9223372036854775808"}]` {
		t.Errorf("aggregates %s", got)
	}
	// apply_defaults false: fields not on the wire are missing.
	dec = `"decode":{"type":"proto","apply_defaults":false,"schema_text":` + decodeJSON(orderProto) + `}`
	m = mustQuery(t, `{"source":{"topic":"t",`+dec+`},"filter":[{"field":"status","op":"eq","value":"NEW"}]}`, msgs)
	if st := m["stats"].(map[string]any); st["matched"] != 0.0 {
		t.Errorf("status NEW is the default: without defaults nothing matches, got %v", st)
	}
}

func TestProtoJSONEncodingAndAliases(t *testing.T) {
	msgs := msgsOf(
		`{"id":"7","userId":"ann","amount":1.5,"status":"PAID"}`,
		`{"id":8,"uid":"bob","amount":2,"unknownField":1}`,
		`{"id":"not a number"}`,
		`{"user_id":"cy","uid":"ignored"}`,
	)
	dec := `"decode":{"type":"proto","encoding":"json","message":"shop.Order","schema_text":` + decodeJSON(orderProto) + `,"field_aliases":{"user_id":["uid"]}}`
	m := mustQuery(t, `{"source":{"topic":"t",`+dec+`},"transform":{"left_fields":["user_id","status","id"],"emit_rows":5}}`, msgs)
	want := `[{"id":"7","status":"PAID","user_id":"ann"},{"id":"8","status":"NEW","user_id":"bob"},{"id":"0","status":"NEW","user_id":"cy"}]`
	if got := canon(t, m["rows"]); got != want {
		t.Errorf("rows\n got %s\nwant %s", got, want)
	}
	// The alias as the query's name finds the field too.
	m = mustQuery(t, `{"source":{"topic":"t",`+dec+`},"filter":[{"field":"uid","op":"eq","value":"bob"}]}`, msgs)
	if st := m["stats"].(map[string]any); st["matched"] != 1.0 || st["skipped"] != 1.0 {
		t.Errorf("stats %v", st)
	}
}

func TestProtoSchemaErrors(t *testing.T) {
	tests := []struct{ text, msg, want string }{
		{"syntax = \"proto3\";\nmessage M {\n  int32 a = 1\n}\n", "", "query.proto:4:1"},
		{"syntax = \"proto3\";\nmessage M { Unknown u = 1; }\n", "", "query.proto:2:13"},
		{"syntax = \"proto3\";\n", "", "declares no message"},
		{"syntax = \"proto3\";\nmessage M { int32 a = 1; }\n", "Other", `no message "Other"`},
	}
	for _, tc := range tests {
		_, err := compileProto(tc.text, tc.msg)
		if err == nil || err.Code != "invalid_schema" || !containsStr(err.Message, tc.want) {
			t.Errorf("%q: got %v, want a message naming %q", tc.text, err, tc.want)
		}
	}
	if md, err := compileProto("syntax = \"proto3\";\npackage p;\nmessage A { message B { int32 x = 1; } }\n", "B"); err != nil || md.FullName() != "p.A.B" {
		t.Errorf("nested by short name: %v %v", md, err)
	}
	if _, err := compileProto("syntax = \"proto3\";\nimport \"google/protobuf/timestamp.proto\";\nmessage M { google.protobuf.Timestamp at = 1; }\n", ""); err != nil {
		t.Errorf("a well-known import: %v", err)
	}
}

func containsStr(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s[:len(sub)] == sub || containsStr(s[1:], sub)))
}

// TestCrossFormatJoin joins Avro binary orders with Protobuf binary ones.
func TestCrossFormatJoin(t *testing.T) {
	left := avroOrders(t, order(1, "ann", 10, "NEW", nil), order(2, "bob", 20, "PAID", nil))
	right := protoTestOrders(t)
	body := `{"left":{"topic":"l","decode":{"type":"avro","schema_text":` + decodeJSON(orderAvsc) + `}},
		"right":{"topic":"r","decode":{"type":"proto","schema_text":` + decodeJSON(orderProto) + `}},
		"on":{"left_key":"user","right_key":"user_id"},"window":{"size_ms":5000},
		"emit":{"left_fields":["id","amount"],"right_fields":["id","status"]}}`
	m, err := runJoinOn(t, body, left, right)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"key":"ann","left":{"amount":10,"id":1},"left_ts_ms":1000,"right":{"id":1,"status":"NEW"},"right_ts_ms":1000},` +
		`{"key":"ann","left":{"amount":10,"id":1},"left_ts_ms":1000,"right":{"id":3,"status":"PAID"},"right_ts_ms":3000},` +
		`{"key":"bob","left":{"amount":20,"id":2},"left_ts_ms":2000,"right":{"id":2,"status":"PAID"},"right_ts_ms":2000}]`
	if got := canon(t, m["rows"]); got != want {
		t.Errorf("rows\n got %s\nwant %s", got, want)
	}
}

func TestSchemaCache(t *testing.T) {
	c := NewSchemas(2)
	spec := func(text string) *DecodeSpec { return &DecodeSpec{Type: "proto", SchemaText: text} }
	a, b, d := "syntax = \"proto3\"; message A { int32 x = 1; }", "syntax = \"proto3\"; message B { int32 x = 1; }", "syntax = \"proto3\"; message D { int32 x = 1; }"
	for _, text := range []string{a, a, b, d, a} {
		if _, err := c.newDecoder(spec(text), newFieldSet(nil)); err != nil {
			t.Fatal(err)
		}
	}
	if hits, misses := c.Stats(); hits != 1 || misses != 4 {
		t.Errorf("hits %d misses %d: want 1 and 4 (a was dropped when d came)", hits, misses)
	}
}

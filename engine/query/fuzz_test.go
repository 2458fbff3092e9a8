package query

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// fuzzMessages are what fuzzed requests run over: JSON, Avro and Protobuf
// values and garbage, so every decoder sees good and bad input.
func fuzzMessages(t testing.TB) []Message {
	msgs := msgsOf(`{"user":"a","amount":10,"tags":["x"],"n":{"m":1}}`, `{"user":"b","amount":"2.5"}`, `[]`, "\x00\xff", `{"id":1,"user":"c","amount":1,"status":"NEW"}`)
	for _, m := range avroOrders(t, order(1, "ann", 10, "NEW", nil), order(2, "bob", 3, "PAID", "x")) {
		m.Offset = uint64(len(msgs))
		msgs = append(msgs, m)
	}
	for _, m := range protoTestOrders(t.(*testing.T)) {
		m.Offset = uint64(len(msgs))
		msgs = append(msgs, m)
	}
	return msgs
}

// FuzzQueryRequest: any body is refused with a 4xx or answered with
// valid JSON; nothing panics.
func FuzzQueryRequest(f *testing.F) {
	for _, s := range []string{
		`{"source":{"topic":"t"},"filter":[{"field":"amount","op":"gt","value":1}],"aggregate":{"group_by":["user"],"measures":[{"op":"avg","field":"amount"}]},"window":{"size_ms":1000},"transform":{"emit_rows":5}}`,
		`{"source":{"topic":"t","decode":{"type":"avro","schema_text":` + decodeJSON(orderAvsc) + `}},"filter":[{"field":"tags","op":"contains","value":"x"}],"transform":{"emit_rows":3,"left_fields":["meta.src"]}}`,
		`{"source":{"topic":"t","decode":{"type":"avro","encoding":"json","schema_text":` + decodeJSON(orderAvsc) + `}},"transform":{"emit_rows":3}}`,
		`{"source":{"topic":"t","decode":{"type":"proto","schema_text":` + decodeJSON(orderProto) + `,"field_aliases":{"user_id":["u"]}}},"filter":[{"field":"u","op":"in","value":["ann",1]}],"transform":{"emit_rows":3}}`,
		`{"source":{"topic":"t"},"window":{"size_ms":1,"time_field":"n.m"}}`,
	} {
		f.Add([]byte(s))
	}
	msgs := fuzzMessages(&testing.T{})
	e := New(nil, NewSchemas(8), Limits{ScanMax: 100, RowsMax: 10, GroupsMax: 10, JoinStateBytesMax: 1 << 20, JoinPairsMax: 1000, AnswerBytesMax: 1 << 16})
	f.Fuzz(func(t *testing.T, body []byte) {
		var req QueryRequest
		if decodeBody(body, &req) != nil {
			return
		}
		q, err := e.compileQuery(&req)
		if err != nil {
			if err.Status < 400 || err.Status > 499 || err.Code == "" {
				t.Fatalf("refusal %v", err)
			}
			return
		}
		r, rerr := q.run(&sliceMessages{msgs: msgs}, e.lim.AnswerBytesMax)
		if rerr != nil {
			return // a limit (413)
		}
		out := q.appendAnswer(nil, r, &source{spec: req.Source})
		if !json.Valid(out) {
			t.Fatalf("invalid JSON answer: %s", out)
		}
	})
}

// FuzzJoinRequest: the same for joins.
func FuzzJoinRequest(f *testing.F) {
	f.Add([]byte(`{"left":{"topic":"l"},"right":{"topic":"r","time_field":"amount"},"on":{"left_key":"user","right_key":"user"},"window":{"size_ms":100000,"allowed_lateness_ms":5},"join":{"type":"full"},"dedupe_once":true,"emit":{"left_fields":["amount"],"missing_as":"empty"}}`))
	f.Add([]byte(`{"left":{"topic":"l","decode":{"type":"avro","schema_text":` + decodeJSON(orderAvsc) + `}},"right":{"topic":"r","decode":{"type":"proto","schema_text":` + decodeJSON(orderProto) + `}},"on":{"left_keys":["user","id"],"right_keys":["user_id","id"]},"window":{"size_ms":10000}}`))
	msgs := fuzzMessages(&testing.T{})
	e := New(nil, NewSchemas(8), Limits{ScanMax: 100, RowsMax: 10, GroupsMax: 10, JoinStateBytesMax: 1 << 20, JoinPairsMax: 1000, AnswerBytesMax: 1 << 16})
	f.Fuzz(func(t *testing.T, body []byte) {
		var req JoinRequest
		if decodeBody(body, &req) != nil {
			return
		}
		j, err := e.compileJoin(&req)
		if err != nil {
			if err.Status < 400 || err.Status > 499 || err.Code == "" {
				t.Fatalf("refusal %v", err)
			}
			return
		}
		for _, s := range []*joinSide{j.left, j.right} {
			s.src = &source{messages: &sliceMessages{msgs: msgs}}
			if s.read() != nil {
				return
			}
		}
		r, jerr := j.run(e.lim.JoinPairsMax, e.lim.AnswerBytesMax)
		if jerr != nil {
			return
		}
		if out := j.appendAnswer(nil, r); !json.Valid(out) {
			t.Fatalf("invalid JSON answer: %s", out)
		}
	})
}

// FuzzAvroBinary: a value our decoder accepts, hamba/avro's own decoder
// accepts too, and it renders as valid JSON.
func FuzzAvroBinary(f *testing.F) {
	for _, m := range avroOrders(f, order(1, "ann", 10, "NEW", nil), order(2, "bob", 3.5, "PAID", "gift")) {
		f.Add(m.Value)
	}
	s, _ := compileAvro(orderAvsc)
	fs := newFieldSet(nil)
	fs.ref("amount")
	fs.ref("note")
	fs.ref("meta.src")
	d := newAvroBinaryDecoder(s, fs)
	schema := avro.MustParse(orderAvsc)
	f.Fuzz(func(t *testing.T, value []byte) {
		if !d.decode(value) {
			return
		}
		var v any
		if err := avro.Unmarshal(schema, value, &v); err != nil {
			t.Fatalf("we decoded %x, hamba/avro refuses it: %v", value, err)
		}
		if out := d.appendObject(nil); !json.Valid(out) {
			t.Fatalf("invalid JSON %s", out)
		}
	})
}

// FuzzProtoWire: a value proto.Unmarshal accepts, the wire path accepts
// too, with the same scalar values as the dynamicpb path.
func FuzzProtoWire(f *testing.F) {
	for _, m := range protoOrders(f, map[string]any{"id": int64(-5), "user_id": "ann", "amount": 1.5, "delta": int32(-9), "big": uint64(7)}) {
		f.Add(m.Value)
	}
	md, _ := compileProto(orderProto, "")
	names := []string{"id", "user_id", "amount", "status", "ratio", "delta", "big", "note"}
	wireFS, slowFS := newFieldSet(nil), newFieldSet(nil)
	for _, n := range names {
		wireFS.ref(n)
		slowFS.ref(n)
	}
	slowFS.ref("tags") // a repeated field: the dynamicpb path
	wire := newProtoDecoder(md, &DecodeSpec{}, wireFS)
	slow := newProtoDecoder(md, &DecodeSpec{}, slowFS)
	if !wire.wire || slow.wire {
		f.Fatal("the decoders did not take the two paths")
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		if proto.Unmarshal(value, dynamicpb.NewMessage(md)) != nil {
			return
		}
		if !wire.decode(value) || !slow.decode(value) {
			t.Fatalf("%x: proto.Unmarshal accepts it; wire %v", value, wire.decode(value))
		}
		for _, n := range names {
			a, aok := wire.field(wireFS.byName[n])
			b, bok := slow.field(slowFS.byName[n])
			if aok != bok {
				t.Fatalf("%x: field %s present on the wire path %v, on dynamicpb %v", value, n, aok, bok)
			}
			an, aNum := a.Number()
			bn, bNum := b.Number()
			switch {
			case aNum && bNum:
				if an != bn && !(math.IsNaN(an) && math.IsNaN(bn)) {
					t.Fatalf("%x: field %s: %v vs %v", value, n, an, bn)
				}
			case string(a.AppendText(nil)) != string(b.AppendText(nil)):
				t.Fatalf("%x: field %s: %q vs %q", value, n, a.AppendText(nil), b.AppendText(nil))
			}
		}
	})
}

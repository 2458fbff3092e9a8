package query

import (
	"encoding/json"
	"testing"

	"github.com/hamba/avro/v2"
)

const orderAvsc = `{"type":"record","name":"Order","namespace":"shop","fields":[
 {"name":"id","type":"long"},
 {"name":"user","type":"string","aliases":["customer"]},
 {"name":"amount","type":"double"},
 {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
 {"name":"note","type":["null","string"],"default":null},
 {"name":"tags","type":{"type":"array","items":"string"},"default":[]},
 {"name":"meta","type":{"type":"record","name":"Meta","fields":[{"name":"src","type":"string"}]},"default":{"src":"web"}},
 {"name":"qty","type":"int","default":1}]}`

// avroOrders encodes orders in Avro binary with hamba/avro.
func avroOrders(t testing.TB, orders ...map[string]any) []Message {
	t.Helper()
	s := avro.MustParse(orderAvsc)
	var out []Message
	for i, o := range orders {
		b, err := avro.Marshal(s, o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Message{Offset: uint64(i), TimestampMs: int64(1000 * (i + 1)), Value: b})
	}
	return out
}

func order(id int64, user string, amount float64, status string, note any) map[string]any {
	return map[string]any{"id": id, "user": user, "amount": amount, "status": status, "note": note,
		"tags": []string{"t" + user}, "meta": map[string]any{"src": "app"}, "qty": 2}
}

func decodeJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestAvroBinary(t *testing.T) {
	msgs := avroOrders(t,
		order(1, "ann", 10, "NEW", nil),
		order(2, "bob", 20.5, "PAID", "gift"),
		order(3, "ann", 5, "PAID", nil),
	)
	msgs = append(msgs, Message{Offset: 3, Value: []byte{0xff, 0xff}})                                               // truncated varint
	msgs = append(msgs, Message{Offset: 4, Value: append(msgs[0].Value[:len(msgs[0].Value):len(msgs[0].Value)], 0)}) // a trailing byte
	dec := `"decode":{"type":"avro","encoding":"binary","schema_text":` + decodeJSON(orderAvsc) + `}`
	m := mustQuery(t, `{"source":{"topic":"t",`+dec+`},"filter":[{"field":"amount","op":"ge","value":5}],
		"aggregate":{"group_by":["status"],"measures":[{"op":"count"},{"op":"sum","field":"amount"},{"op":"max","field":"id"}]},
		"transform":{"emit_rows":1}}`, msgs)
	if got := canon(t, m["aggregates"]); got != `[{"count":1,"key":"status=NEW","max":1,"sum":10},{"count":2,"key":"status=PAID","max":3,"sum":25.5}]` {
		t.Errorf("aggregates %s", got)
	}
	// Rows are plain JSON: unions untagged, nested records as objects.
	want := `[{"amount":10,"id":1,"meta":{"src":"app"},"note":null,"qty":2,"status":"NEW","tags":["tann"],"user":"ann"}]`
	if got := canon(t, m["rows"]); got != want {
		t.Errorf("rows\n got %s\nwant %s", got, want)
	}
	if st := m["stats"].(map[string]any); st["skipped"] != 2.0 {
		t.Errorf("stats %v: a truncated value and one with a trailing byte do not decode", st)
	}
	// Union values, schema aliases, nested paths, projection.
	m = mustQuery(t, `{"source":{"topic":"t",`+dec+`},"filter":[{"field":"note","op":"eq","value":"gift"}],
		"transform":{"left_fields":["customer","meta.src","tags"],"emit_rows":5}}`, msgs)
	if got := canon(t, m["rows"]); got != `[{"customer":"bob","meta.src":"app","tags":["tbob"]}]` {
		t.Errorf("rows %s", got)
	}
}

func TestAvroJSONEncoding(t *testing.T) {
	msgs := msgsOf(
		`{"id":1,"user":"ann","amount":2.5,"status":"NEW","note":{"string":"tagged"}}`,
		`{"id":2,"customer":"bob","amount":3,"status":"PAID","note":"untagged","qty":5}`,
		`{"id":3,"uid":"cy","amount":1,"status":"NEW","note":null,"extra":"dropped"}`,
		`{"user":"no id","amount":1,"status":"NEW"}`,
		`{"id":4,"user":"dee","amount":1,"status":"LOST"}`,
		`{"id":5.5,"user":"eve","amount":1,"status":"NEW"}`,
	)
	dec := `"decode":{"type":"avro","encoding":"json","schema_text":` + decodeJSON(orderAvsc) + `,"field_aliases":{"user":["uid"]}}`
	m := mustQuery(t, `{"source":{"topic":"t",`+dec+`},"transform":{"emit_rows":10}}`, msgs)
	want := `[{"amount":2.5,"id":1,"meta":{"src":"web"},"note":"tagged","qty":1,"status":"NEW","tags":[],"user":"ann"},` +
		`{"amount":3,"id":2,"meta":{"src":"web"},"note":"untagged","qty":5,"status":"PAID","tags":[],"user":"bob"},` +
		`{"amount":1,"id":3,"meta":{"src":"web"},"note":null,"qty":1,"status":"NEW","tags":[],"user":"cy"}]`
	if got := canon(t, m["rows"]); got != want {
		t.Errorf("rows (defaults applied)\n got %s\nwant %s", got, want)
	}
	if st := m["stats"].(map[string]any); st["skipped"] != 3.0 {
		t.Errorf("stats %v: no id, an unknown symbol and a fractional long do not decode", st)
	}
	// apply_defaults false: a missing field stays missing.
	dec = `"decode":{"type":"avro","encoding":"json","apply_defaults":false,"schema_text":` + decodeJSON(orderAvsc) + `}`
	m = mustQuery(t, `{"source":{"topic":"t",`+dec+`},"filter":[{"field":"qty","op":"ge","value":0}],"transform":{"left_fields":["id"],"emit_rows":10}}`, msgs)
	if got := canon(t, m["rows"]); got != `[{"id":2}]` {
		t.Errorf("without defaults %s", got)
	}
}

// TestAvroHostileValues: claimed lengths and counts past the value's end
// fail the value, quickly, without allocating what they claim.
func TestAvroHostileValues(t *testing.T) {
	s, _ := compileAvro(`{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}},{"name":"s","type":"string"}]}`)
	fs := newFieldSet(nil)
	fs.ref("s")
	d := newAvroBinaryDecoder(s, fs)
	for _, v := range [][]byte{
		{0xfe, 0xff, 0xff, 0xff, 0x0f},            // an array block of 2^31 nulls
		{0x00, 0xfe, 0xff, 0xff, 0xff, 0x0f, 'x'}, // a string of 2^31 bytes
		{0x01, 0x02}, // a negative block count with a size past the end
	} {
		if d.decode(v) {
			t.Errorf("%x decoded", v)
		}
	}
	if !d.decode([]byte{0x02, 0x00, 0x02, 'h'}) {
		t.Error("a good value did not decode")
	}
}

func TestAvroSchemaBounds(t *testing.T) {
	for _, text := range []string{
		`{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"fixed","name":"F","size":1125899906842624}}]}`,
		`{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"fixed","name":"F","size":70000},"default":"x"}]}`,
		`not json`,
	} {
		if _, err := compileAvro(text); err == nil || err.Code != "invalid_schema" {
			t.Errorf("%s: got %v, want invalid_schema", text, err)
		}
	}
	// A fixed within bounds, with a default, renders it as Avro's JSON does.
	s, err := compileAvro(`{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"fixed","name":"F","size":2},"default":"\u00ffa"},{"name":"b","type":"bytes","default":"\u00e9"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	fields := s.rec.Fields()
	if got := string(s.defaults[fields[0]]) + " " + string(s.defaults[fields[1]]); got != `"ÿa" "é"` {
		t.Errorf("defaults %s", got)
	}
	// Bytes values read the same text in binary and in rows.
	fs := newFieldSet(nil)
	fs.ref("b")
	d := newAvroBinaryDecoder(s, fs)
	if !d.decode([]byte{0xff, 0x61, 0x02, 0xe9}) {
		t.Fatal("did not decode")
	}
	v, _ := d.field(fs.byName["b"])
	if string(v.Text) != "é" || string(d.appendObject(nil)) != `{"f":"ÿa","b":"é"}` {
		t.Errorf("bytes %q, row %s", v.Text, d.appendObject(nil))
	}
}

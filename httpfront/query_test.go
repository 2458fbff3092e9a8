package httpfront

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestQueryOverHTTP: a query reads like consume (committed + 1, an
// explicit offset, a negative one for the log start), never commits,
// and answers next_offset and consumed so a client resumes by committing
// next_offset - 1.
func TestQueryOverHTTP(t *testing.T) {
	ts := startServer(t, nil)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"ev","partitions":1}`), 200, "")
	for i := 0; i < 10; i++ {
		body := fmt.Sprintf(`{"user":"u%d","amount":%d}`, i%3, i)
		ts.expect(ts.do("POST", "/broker/topics/ev/produce?partition=0", body), 200, "")
	}
	ts.expect(ts.do("POST", "/broker/topics/ev/produce?partition=0", "not json"), 200, "")
	ts.expect(ts.do("POST", "/broker/commit", `{"topic":"ev","group":"g","partition":0,"offset":3}`), 200, "")
	q := `{"source":{"topic":"ev","partition":0,"group":"g"},"filter":[{"field":"amount","op":"ge","value":0}],
		"aggregate":{"group_by":["user"],"measures":[{"op":"count"},{"op":"sum","field":"amount","as":"total"}]}}`
	r := ts.do("POST", "/broker/query", q, "Authorization", "Bearer readtok")
	ts.expect(r, 200, "")
	got, _ := json.Marshal(r.json["aggregates"])
	if string(got) != `[{"count":2,"key":"user=u0","total":15},{"count":2,"key":"user=u1","total":11},{"count":2,"key":"user=u2","total":13}]` {
		t.Fatalf("aggregates from committed + 1 (offsets 4..9): %s", got)
	}
	src := r.json["source"].(map[string]any)
	if src["next_offset"] != 11.0 || src["consumed"] != 7.0 || src["topic"] != "ev" || src["group"] != "g" || src["partition"] != 0.0 {
		t.Fatalf("source %v", src)
	}
	if c := ts.do("GET", "/broker/consume/ev/g/0?limit=1", ""); c.json["committed_offset"] != 3.0 {
		t.Fatalf("a query committed: %s", c.body)
	}
	for off, want := range map[string]float64{`-1`: 11, `8`: 3} {
		r = ts.do("POST", "/broker/query", `{"source":{"topic":"ev","group":"g","offset":`+off+`}}`)
		if src := r.json["source"].(map[string]any); src["consumed"] != want {
			t.Fatalf("offset %s: consumed %v, want %v", off, src["consumed"], want)
		}
	}
	r = ts.do("POST", "/broker/query", `{"source":{"topic":"ev","limit":2},"transform":{"emit_rows":5,"left_fields":["user"]}}`)
	if rows, _ := json.Marshal(r.json["rows"]); string(rows) != `[{"user":"u0"},{"user":"u1"}]` {
		t.Fatalf("rows %s", rows)
	}
	// Refusals: the error shape, and nothing changed.
	ts.expect(ts.do("POST", "/broker/query", `{"source":`), 400, "invalid_json")
	ts.expect(ts.do("POST", "/broker/query", `{}`), 400, "missing_source")
	ts.expect(ts.do("POST", "/broker/query", `{"source":{"topic":"nope"}}`), 404, "unknown_topic")
	ts.expect(ts.do("POST", "/broker/query", `{"source":{"topic":"ev","partition":4}}`), 404, "unknown_partition")
	ts.expect(ts.do("POST", "/broker/query", `{"source":{"topic":"ev","limit":0}}`), 400, "invalid_limit")
	ts.expect(ts.do("POST", "/broker/query", `{"source":{"topic":"ev","decode":{"type":"proto","schema_text":"message {"}}}`), 400, "invalid_schema")
	ts.expect(ts.do("GET", "/broker/query", ""), 405, "method_not_allowed")
	ts.expect(ts.do("POST", "/broker/join", `{"left":{"topic":"ev"},"right":{"topic":"ev"},"window":{"size_ms":1}}`), 400, "missing_join_keys")
	big := `{"source":{"topic":"ev","decode":{"type":"avro","schema_text":"` + strings.Repeat(" ", 2<<20) + `"}}}`
	ts.expect(ts.do("POST", "/broker/query", big), 413, "body_too_large")
	if m := ts.do("GET", "/metrics", ""); !strings.Contains(string(m.body), "keel_queries_total ") {
		t.Fatal("no keel_queries_total in /metrics")
	}
	// Records past the partition's TTL are never read, before the
	// retention sweep deletes them too.
	ts.expect(ts.do("POST", "/broker/retention", `{"topic":"ev","ttl_ms":1}`), 200, "")
	time.Sleep(20 * time.Millisecond)
	r = ts.do("POST", "/broker/query", `{"source":{"topic":"ev","offset":-1},"transform":{"emit_rows":5}}`)
	if src := r.json["source"].(map[string]any); src["consumed"] != 0.0 || src["next_offset"] != 11.0 || len(r.json["rows"].([]any)) != 0 {
		t.Fatalf("expired records read: %s", r.body)
	}
}

const httpOrderAvsc = `{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"user","type":"string"},{"name":"amount","type":"double"}]}`

const httpPaymentProto = `syntax = "proto3";
message Payment {
  string user_id = 1;
  int64 order_id = 2;
  Method method = 3;
}
enum Method { CARD = 0; CASH = 1; }
`

// TestCrossFormatJoinOverHTTP joins Avro binary orders with Protobuf
// binary payments, produced as raw bodies.
func TestCrossFormatJoinOverHTTP(t *testing.T) {
	ts := startServer(t, nil)
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"orders","partitions":1}`), 200, "")
	ts.expect(ts.do("POST", "/broker/topics", `{"name":"payments","partitions":1}`), 200, "")
	schema := avro.MustParse(httpOrderAvsc)
	for i, user := range []string{"ann", "bob", "cy"} {
		b, err := avro.Marshal(schema, map[string]any{"id": int64(i + 1), "user": user, "amount": float64(10 * (i + 1))})
		if err != nil {
			t.Fatal(err)
		}
		ts.expect(ts.do("POST", "/broker/topics/orders/produce?partition=0", string(b)), 200, "")
	}
	for i, user := range []string{"bob", "ann", "dee"} {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, user)
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(i+10))
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(i%2))
		ts.expect(ts.do("POST", "/broker/topics/payments/produce?partition=0", string(b)), 200, "")
	}
	avsc, _ := json.Marshal(httpOrderAvsc)
	proto, _ := json.Marshal(httpPaymentProto)
	body := `{"left":{"topic":"orders","partition":0,"decode":{"type":"avro","encoding":"binary","schema_text":` + string(avsc) + `}},
		"right":{"topic":"payments","partition":0,"decode":{"type":"proto","encoding":"binary","schema_text":` + string(proto) + `}},
		"on":{"left_key":"user","right_key":"user_id"},"window":{"size_ms":60000},"join":{"type":"full"},
		"emit":{"left_fields":["id","amount"],"right_fields":["order_id","method"],"missing_as":"empty"}}`
	r := ts.do("POST", "/broker/join", body, "Authorization", "Bearer readtok")
	ts.expect(r, 200, "")
	var keys []string
	for _, row := range r.json["rows"].([]any) {
		m := row.(map[string]any)
		l, _ := json.Marshal(m["left"])
		rt, _ := json.Marshal(m["right"])
		keys = append(keys, fmt.Sprintf("%s %s %s", m["key"], l, rt))
	}
	want := []string{
		`ann {"amount":10,"id":1} {"method":"CASH","order_id":11}`,
		`bob {"amount":20,"id":2} {"method":"CARD","order_id":10}`,
		`cy {"amount":30,"id":3} {}`,
		`dee {} {"method":"CARD","order_id":12}`,
	}
	if strings.Join(keys, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rows\n%s\nwant\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
	if no := r.json["next_offsets"].(map[string]any); no["left"] != 3.0 || no["right"] != 3.0 {
		t.Fatalf("next_offsets %v", no)
	}
	st := r.json["stats"].(map[string]any)
	if st["left_scanned"] != 3.0 || st["right_scanned"] != 3.0 || st["outer_rows"] != 2.0 || st["rows"] != 4.0 {
		t.Fatalf("stats %v", st)
	}
}

// TestQueryStopsAtScanBudget: past --query-scan-bytes-max a scan stops
// early, says why, and next_offset is where to go on.
func TestQueryStopsAtScanBudget(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.QueryLimits.ScanBytesMax = 50 })
	for i := 0; i < 10; i++ {
		ts.expect(ts.do("POST", "/broker/topics/s/produce?partition=0", fmt.Sprintf(`{"i":%d,"pad":"xxxxxxxxxx"}`, i)), 200, "")
	}
	r := ts.do("POST", "/broker/query", `{"source":{"topic":"s","offset":-1},"aggregate":{"measures":[{"op":"count"}]}}`)
	src := r.json["source"].(map[string]any)
	if src["stopped_by"] != "bytes" || src["consumed"] != 2.0 || src["next_offset"] != 2.0 || src["log_end_offset"] != 10.0 {
		t.Fatalf("source %v: want 2 messages of 26 B, stopped by bytes", src)
	}
	r = ts.do("POST", "/broker/query", `{"source":{"topic":"s","offset":2,"limit":1}}`)
	if src := r.json["source"].(map[string]any); src["stopped_by"] != nil || src["next_offset"] != 3.0 {
		t.Fatalf("source %v", src)
	}
}

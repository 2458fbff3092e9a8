package query

import (
	"strings"
	"testing"
)

var events = msgsOf(
	`{"user":"a","amount":10,"country":"DE","tags":["x","y"],"n":"5"}`,
	`{"user":"b","amount":25.5,"country":"FR","tags":["y"],"n":"12"}`,
	`{"user":"a","amount":"7","country":"DE","ok":true}`,
	`not json`,
	`[1,2,3]`,
	`{"user":"c","amount":100,"country":null,"nested":{"k":"v","d":{"e":3}}}`,
	`{"user":"d","country":"US","amount":-3}`,
)

// TestFilterOperators checks each operator and the type rules: numbers
// compare numerically (numeric strings too), else as strings; a missing
// field fails every condition, ne included.
func TestFilterOperators(t *testing.T) {
	tests := []struct {
		name   string
		filter string
		want   string // users of the matching rows, in order
	}{
		{"eq string", `[{"field":"user","op":"eq","value":"a"}]`, "a,a"},
		{"eq number", `[{"field":"amount","op":"eq","value":10}]`, "a"},
		{"eq numeric string field", `[{"field":"amount","op":"eq","value":7}]`, "a"},
		{"eq numeric string value", `[{"field":"amount","op":"eq","value":"25.5"}]`, "b"},
		{"ne skips missing", `[{"field":"ok","op":"ne","value":false}]`, "a"},
		{"ne", `[{"field":"country","op":"ne","value":"DE"}]`, "b,c,d"},
		{"lt numeric not lexical", `[{"field":"n","op":"lt","value":10}]`, "a"},
		{"le", `[{"field":"amount","op":"le","value":10}]`, "a,a,d"},
		{"gt", `[{"field":"amount","op":"gt","value":"10"}]`, "b,c"},
		{"ge", `[{"field":"amount","op":"ge","value":25.5}]`, "b,c"},
		{"string order", `[{"field":"user","op":"gt","value":"b"}]`, "c,d"},
		{"in", `[{"field":"country","op":"in","value":["FR","US"]}]`, "b,d"},
		{"in numbers", `[{"field":"amount","op":"in","value":[7,100]}]`, "a,c"},
		{"contains substring", `[{"field":"country","op":"contains","value":"E"}]`, "a,a"},
		{"contains array element", `[{"field":"tags","op":"contains","value":"x"}]`, "a"},
		{"eq null", `[{"field":"country","op":"eq","value":null}]`, "c"},
		{"eq bool", `[{"field":"ok","op":"eq","value":true}]`, "a"},
		{"dotted path", `[{"field":"nested.d.e","op":"ge","value":3}]`, "c"},
		{"and", `[{"field":"user","op":"eq","value":"a"},{"field":"amount","op":"gt","value":8}]`, "a"},
		{"empty filter", `[]`, "a,b,a,c,d"},
		{"missing field", `[{"field":"nope","op":"ne","value":1}]`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustQuery(t, `{"source":{"topic":"t"},"filter":`+tc.filter+`,"transform":{"emit_rows":100}}`, events)
			var users []string
			for _, r := range m["rows"].([]any) {
				users = append(users, r.(map[string]any)["user"].(string))
			}
			if got := strings.Join(users, ","); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestQueryAnswer(t *testing.T) {
	m := mustQuery(t, `{"source":{"topic":"t","group":"g"},"filter":[{"field":"user","op":"eq","value":"a"}],
		"transform":{"emit_rows":1}}`, events)
	if got := canon(t, m["rows"]); got != `[{"amount":10,"country":"DE","n":"5","tags":["x","y"],"user":"a"}]` {
		t.Errorf("rows %s", got)
	}
	src := m["source"].(map[string]any)
	if src["next_offset"] != 7.0 || src["consumed"] != 7.0 || src["group"] != "g" {
		t.Errorf("source %v", src)
	}
	if st := m["stats"].(map[string]any); st["skipped"] != 2.0 || st["matched"] != 2.0 {
		t.Errorf("stats %v (2 values are not JSON objects)", st)
	}
	// No emit_rows: no rows.
	m = mustQuery(t, `{"source":{"topic":"t"}}`, events)
	if len(m["rows"].([]any)) != 0 {
		t.Errorf("rows without emit_rows: %v", m["rows"])
	}
}

func TestProjection(t *testing.T) {
	m := mustQuery(t, `{"source":{"topic":"t"},"transform":{"left_fields":["user","ok","nested.k"],"emit_rows":3}}`, events)
	want := `[{"user":"a"},{"user":"b"},{"ok":true,"user":"a"}]`
	if got := canon(t, m["rows"]); got != want {
		t.Errorf("rows %s, want %s (a missing field leaves the row)", got, want)
	}
	m = mustQuery(t, `{"source":{"topic":"t"},"filter":[{"field":"user","op":"eq","value":"c"}],"transform":{"left_fields":["nested.k","nested"],"emit_rows":3}}`, events)
	if got := canon(t, m["rows"]); got != `[{"nested":{"d":{"e":3},"k":"v"},"nested.k":"v"}]` {
		t.Errorf("rows %s", got)
	}
}

func TestAggregates(t *testing.T) {
	m := mustQuery(t, `{"source":{"topic":"t"},"aggregate":{"group_by":["country","user"],
		"measures":[{"op":"count"},{"op":"sum","field":"amount"},{"op":"avg","field":"amount","as":"mean"},
		{"op":"min","field":"amount"},{"op":"max","field":"amount"},{"op":"count","field":"tags","as":"tagged"}]}}`, events)
	want := `[{"count":2,"key":"country=DE|user=a","max":10,"mean":8.5,"min":7,"sum":17,"tagged":1},` +
		`{"count":1,"key":"country=FR|user=b","max":25.5,"mean":25.5,"min":25.5,"sum":25.5,"tagged":1},` +
		`{"count":1,"key":"country=US|user=d","max":-3,"mean":-3,"min":-3,"sum":-3,"tagged":0},` +
		`{"count":1,"key":"country=null|user=c","max":100,"mean":100,"min":100,"sum":100,"tagged":0}]`
	if got := canon(t, m["aggregates"]); got != want {
		t.Errorf("aggregates\n got %s\nwant %s", got, want)
	}
	// No numeric values: sum 0, the rest null.
	m = mustQuery(t, `{"source":{"topic":"t"},"aggregate":{"measures":[{"op":"sum","field":"user"},{"op":"max","field":"user"}]}}`, events)
	if got := canon(t, m["aggregates"]); got != `[{"key":"","max":null,"sum":0}]` {
		t.Errorf("aggregates %s", got)
	}
}

func TestWindows(t *testing.T) {
	msgs := msgsOf( // broker times 1000..6000
		`{"k":"a","at":100}`, `{"k":"a","at":2500}`, `{"k":"b","at":2999}`,
		`{"k":"a","at":3000}`, `{"k":"a"}`, `{"k":"a","at":"5000"}`)
	m := mustQuery(t, `{"source":{"topic":"t"},"aggregate":{"group_by":["k"],"measures":[{"op":"count"}]},"window":{"type":"tumbling","size_ms":3000}}`, msgs)
	want := `[{"count":2,"key":"k=a","window_end_ms":3000,"window_start_ms":0},{"count":2,"key":"k=a","window_end_ms":6000,"window_start_ms":3000},` +
		`{"count":1,"key":"k=b","window_end_ms":6000,"window_start_ms":3000},{"count":1,"key":"k=a","window_end_ms":9000,"window_start_ms":6000}]`
	if got := canon(t, m["aggregates"]); got != want {
		t.Errorf("broker time\n got %s\nwant %s", got, want)
	}
	m = mustQuery(t, `{"source":{"topic":"t"},"aggregate":{"group_by":["k"]},"window":{"size_ms":3000,"time_field":"at"}}`, msgs)
	want = `[{"count":2,"key":"k=a","window_end_ms":3000,"window_start_ms":0},{"count":1,"key":"k=b","window_end_ms":3000,"window_start_ms":0},` +
		`{"count":2,"key":"k=a","window_end_ms":6000,"window_start_ms":3000}]`
	if got := canon(t, m["aggregates"]); got != want {
		t.Errorf("event time\n got %s\nwant %s", got, want)
	}
	if st := m["stats"].(map[string]any); st["untimed"] != 1.0 {
		t.Errorf("untimed %v", st)
	}
	if windowStart(-1, 1000) != -1000 || windowStart(-1000, 1000) != -1000 || windowStart(999, 1000) != 0 {
		t.Error("windowStart")
	}
}

func TestQueryRefusals(t *testing.T) {
	tests := []struct{ body, code string }{
		{``, "invalid_json"},
		{`{"source":`, "invalid_json"},
		{`{"source":{"topic":"t"}} {}`, "invalid_json"},
		{`{"filter":[]}`, "missing_source"},
		{`{"source":{"topic":"t"},"filter":[{"field":"a","op":"like","value":1}]}`, "invalid_filter"},
		{`{"source":{"topic":"t"},"filter":[{"field":"a","op":"in","value":1}]}`, "invalid_filter"},
		{`{"source":{"topic":"t"},"filter":[{"field":"a","op":"eq","value":{"x":1}}]}`, "invalid_filter"},
		{`{"source":{"topic":"t"},"filter":[{"field":"a","op":"eq"}]}`, "invalid_filter"},
		{`{"source":{"topic":"t"},"filter":[{"field":"","op":"eq","value":1}]}`, "invalid_field"},
		{`{"source":{"topic":"t"},"filter":[{"field":"a..b","op":"eq","value":1}]}`, "invalid_field"},
		{`{"source":{"topic":"t"},"aggregate":{"measures":[{"op":"median","field":"a"}]}}`, "invalid_aggregate"},
		{`{"source":{"topic":"t"},"aggregate":{"measures":[{"op":"sum"}]}}`, "invalid_aggregate"},
		{`{"source":{"topic":"t"},"aggregate":{"measures":[{"op":"count"},{"op":"sum","field":"a","as":"count"}]}}`, "invalid_aggregate"},
		{`{"source":{"topic":"t"},"window":{"type":"sliding","size_ms":10}}`, "invalid_window"},
		{`{"source":{"topic":"t"},"window":{"size_ms":0}}`, "invalid_window"},
		{`{"source":{"topic":"t"},"transform":{"emit_rows":10001}}`, "invalid_limit"},
		{`{"source":{"topic":"t","decode":{"type":"xml"}}}`, "invalid_decode"},
		{`{"source":{"topic":"t","decode":{"type":"avro"}}}`, "invalid_schema"},
		{`{"source":{"topic":"t","decode":{"type":"avro","schema_text":"{\"type\":\"recrd\"}"}}}`, "invalid_schema"},
		{`{"source":{"topic":"t","decode":{"type":"avro","schema_text":"\"string\""}}}`, "invalid_schema"},
		{`{"source":{"topic":"t","decode":{"type":"proto","schema_text":"message M { int32 a = 1 }"}}}`, "invalid_schema"},
	}
	for _, tc := range tests {
		_, err := runQueryOn(t, tc.body, events)
		if err == nil || err.Code != tc.code || err.Status != 400 {
			t.Errorf("%s: got %v, want 400 %s", tc.body, err, tc.code)
		}
	}
}

func TestGroupsLimit(t *testing.T) {
	e := New(nil, NewSchemas(1), Limits{ScanMax: 10, RowsMax: 10, GroupsMax: 2, AnswerBytesMax: 1 << 20})
	var req QueryRequest
	decodeBody([]byte(`{"source":{"topic":"t"},"aggregate":{"group_by":["user"]}}`), &req)
	q, err := e.compileQuery(&req)
	if err != nil {
		t.Fatal(err)
	}
	_, rerr := q.run(&sliceMessages{msgs: events}, 1<<20)
	if qe, ok := rerr.(*Error); !ok || qe.Status != 413 || qe.Code != "too_many_groups" {
		t.Fatalf("got %v, want 413 too_many_groups", rerr)
	}
}

func TestRowsStopAtAnswerBytes(t *testing.T) {
	var req QueryRequest
	decodeBody([]byte(`{"source":{"topic":"t"},"transform":{"emit_rows":100}}`), &req)
	q, _ := testEngine.compileQuery(&req)
	r, err := q.run(&sliceMessages{msgs: events}, 120)
	if err != nil {
		t.Fatal(err)
	}
	if !r.rowsTruncated || r.rowCount != 1 || r.matched != 5 {
		t.Fatalf("rows %d truncated %v matched %d: want 1 row, truncated, every message still counted", r.rowCount, r.rowsTruncated, r.matched)
	}
}

// TestNumbersGroupAsOne: 1, 1.0 and 1e0 are one key, and the text of a
// number is its shortest form; an integer past 2^53 keeps every digit.
func TestNumbersGroupAsOne(t *testing.T) {
	msgs := msgsOf(`{"n":1}`, `{"n":1.0}`, `{"n":1e0}`, `{"n":"1"}`, `{"n":12345678901234567890}`, `{"n":0.50}`)
	m := mustQuery(t, `{"source":{"topic":"t"},"aggregate":{"group_by":["n"]}}`, msgs)
	if got := canon(t, m["aggregates"]); got != `[{"count":1,"key":"n=0.5"},{"count":4,"key":"n=1"},{"count":1,"key":"n=12345678901234567890"}]` {
		t.Errorf("aggregates %s", got)
	}
}

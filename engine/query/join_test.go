package query

import (
	"fmt"
	"strings"
	"testing"
)

// sideOf makes messages with explicit offsets and broker times.
func sideOf(items ...any) []Message {
	var out []Message
	for i := 0; i < len(items); i += 3 {
		out = append(out, Message{Offset: uint64(items[i].(int)), TimestampMs: int64(items[i+1].(int)), Value: []byte(items[i+2].(string))})
	}
	return out
}

// rowsText renders rows as "key:leftOffset/rightOffset" using each side's
// "o" field (- for a missing side).
func rowsText(t *testing.T, m map[string]any) string {
	t.Helper()
	var parts []string
	for _, r := range m["rows"].([]any) {
		row := r.(map[string]any)
		side := func(name string) string {
			o, ok := row[name].(map[string]any)
			if !ok {
				return "-"
			}
			if len(o) == 0 {
				return "{}"
			}
			return fmt.Sprint(o["o"])
		}
		parts = append(parts, fmt.Sprintf("%s:%s/%s", row["key"], side("left"), side("right")))
	}
	return strings.Join(parts, " ")
}

var (
	joinLeftSide = sideOf(
		0, 1000, `{"id":"a","o":"L0"}`,
		1, 2000, `{"id":"b","o":"L1"}`,
		2, 9000, `{"id":"a","o":"L2"}`,
		3, 3000, `{"o":"L3"}`, // no key
		4, 3000, `{"id":"c","o":"L4"}`,
	)
	joinRightSide = sideOf(
		0, 1500, `{"uid":"a","o":"R0"}`,
		1, 8000, `{"uid":"b","o":"R1"}`,
		2, 9500, `{"uid":"a","o":"R2"}`,
		5, 3100, `{"uid":"c","o":"R5"}`,
		6, 3200, `{"uid":"d","o":"R6"}`,
	)
)

// TestJoinTypes: a pair matches when keys are equal and the times are
// within size_ms; outer joins add the unmatched records of their side.
func TestJoinTypes(t *testing.T) {
	tests := []struct{ typ, want string }{
		{"inner", "a:L0/R0 a:L2/R2 c:L4/R5"},
		{"left", "a:L0/R0 b:L1/- a:L2/R2 c:L4/R5"},
		{"right", "a:L0/R0 a:L2/R2 c:L4/R5 b:-/R1 d:-/R6"},
		{"full", "a:L0/R0 b:L1/- a:L2/R2 c:L4/R5 b:-/R1 d:-/R6"},
	}
	for _, tc := range tests {
		body := `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_key":"id","right_key":"uid"},
			"window":{"size_ms":1000,"allowed_lateness_ms":100000},"join":{"type":"` + tc.typ + `"}}`
		m, err := runJoinOn(t, body, joinLeftSide, joinRightSide)
		if err != nil {
			t.Fatal(err)
		}
		if got := rowsText(t, m); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.typ, got, tc.want)
		}
		st := m["stats"].(map[string]any)
		if st["left_keyless"] != 1.0 || st["left_scanned"] != 5.0 || st["right_scanned"] != 5.0 {
			t.Errorf("%s: stats %v", tc.typ, st)
		}
	}
}

func TestJoinRowShape(t *testing.T) {
	body := `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_key":"id","right_key":"uid"},
		"window":{"size_ms":1000,"allowed_lateness_ms":100000},"join":{"type":"left"},
		"emit":{"left_fields":["o","nope"],"right_fields":["o"],"missing_as":"empty"}}`
	m, err := runJoinOn(t, body, joinLeftSide, joinRightSide)
	if err != nil {
		t.Fatal(err)
	}
	rows := m["rows"].([]any)
	if got := canon(t, rows[0]); got != `{"key":"a","left":{"o":"L0"},"left_ts_ms":1000,"right":{"o":"R0"},"right_ts_ms":1500}` {
		t.Errorf("row %s", got)
	}
	if got := canon(t, rows[1]); got != `{"key":"b","left":{"o":"L1"},"left_ts_ms":2000,"right":{},"right_ts_ms":null}` {
		t.Errorf("outer row %s", got)
	}
	if no := m["next_offsets"].(map[string]any); no["left"] != 5.0 || no["right"] != 7.0 {
		t.Errorf("next_offsets %v", no)
	}
}

// TestJoinDedupeOnce: a pair is emitted only when left.offset <=
// right.offset, and a pair suppressed that way leaves both records
// unmatched, so a full join shows them as outer rows.
func TestJoinDedupeOnce(t *testing.T) {
	left := sideOf(0, 1000, `{"k":"x","o":"L0"}`, 5, 1000, `{"k":"y","o":"L5"}`)
	right := sideOf(3, 1000, `{"k":"x","o":"R3"}`, 4, 1000, `{"k":"y","o":"R4"}`)
	for _, dedupe := range []string{`"dedupe_once":true`, `"dedupe":{"mode":"once"}`} {
		body := `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_key":"k","right_key":"k"},
			"window":{"size_ms":0},"join":{"type":"full"},` + dedupe + `}`
		m, err := runJoinOn(t, body, left, right)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := rowsText(t, m), "x:L0/R3 y:L5/- y:-/R4"; got != want {
			t.Errorf("%s: got %q, want %q", dedupe, got, want)
		}
		if st := m["stats"].(map[string]any); st["outer_rows"] != 2.0 || st["rows"] != 3.0 {
			t.Errorf("stats %v", st)
		}
	}
	// Without dedupe the y pair matches.
	m, _ := runJoinOn(t, `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_key":"k","right_key":"k"},"window":{"size_ms":0},"join":{"type":"full"}}`, left, right)
	if got := rowsText(t, m); got != "x:L0/R3 y:L5/R4" {
		t.Errorf("no dedupe: %q", got)
	}
}

// TestJoinLateness: records older than min(left max, right max) -
// lateness - size are dropped, by broker or event time.
func TestJoinLateness(t *testing.T) {
	left := sideOf(0, 1000, `{"k":"a","o":"L0","at":50000}`, 1, 20000, `{"k":"a","o":"L1","at":1000}`)
	right := sideOf(0, 1200, `{"k":"a","o":"R0","at":50500}`, 1, 30000, `{"k":"a","o":"R1","at":1100}`)
	// Broker time: maxes 20000 and 30000 → watermark 20000-5000-1000=14000.
	m, _ := runJoinOn(t, `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_key":"k","right_key":"k"},
		"window":{"size_ms":1000,"allowed_lateness_ms":5000},"join":{"type":"full"}}`, left, right)
	if got := rowsText(t, m); got != "a:L1/- a:-/R1" {
		t.Errorf("broker time: %q", got)
	}
	st := m["stats"].(map[string]any)
	if st["watermark_ms"] != 14000.0 || st["late_dropped"] != 2.0 {
		t.Errorf("stats %v", st)
	}
	// Event time: maxes 50000 and 50500 → watermark 44000; L1, R1 late.
	m, _ = runJoinOn(t, `{"left":{"topic":"l","time_field":"at"},"right":{"topic":"r","time_field":"at"},"on":{"left_key":"k","right_key":"k"},
		"window":{"size_ms":1000,"allowed_lateness_ms":5000},"join":{"type":"full"}}`, left, right)
	if got := rowsText(t, m); got != "a:L0/R0" {
		t.Errorf("event time: %q", got)
	}
}

func TestJoinCompositeKeysAndMaxRows(t *testing.T) {
	left := sideOf(0, 1000, `{"a":1,"b":"x","o":"L0"}`, 1, 1000, `{"a":1,"b":"y","o":"L1"}`, 2, 1000, `{"a":1,"o":"L2"}`)
	right := sideOf(0, 1000, `{"c":"1","d":"x","o":"R0"}`, 1, 1000, `{"c":1,"d":"y","o":"R1"}`, 2, 1000, `{"c":1,"d":"y","o":"R2"}`)
	m, err := runJoinOn(t, `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_keys":["a","b"],"right_keys":["c","d"]},"window":{"size_ms":10}}`, left, right)
	if err != nil {
		t.Fatal(err)
	}
	if got := rowsText(t, m); got != "1|x:L0/R0 1|y:L1/R1 1|y:L1/R2" {
		t.Errorf("composite: %q", got)
	}
	m, _ = runJoinOn(t, `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_keys":["a","b"],"right_keys":["c","d"]},"window":{"size_ms":10},"emit":{"max_rows":2}}`, left, right)
	if st := m["stats"].(map[string]any); rowsText(t, m) != "1|x:L0/R0 1|y:L1/R1" || st["rows_truncated"] != true {
		t.Errorf("max_rows: %q %v", rowsText(t, m), st)
	}
}

func TestJoinRefusals(t *testing.T) {
	base := `"left":{"topic":"l"},"right":{"topic":"r"}`
	tests := []struct{ body, code string }{
		{`{"left":{"topic":"l"},"on":{"left_key":"a","right_key":"b"},"window":{"size_ms":1}}`, "missing_source"},
		{`{` + base + `,"window":{"size_ms":1}}`, "missing_join_keys"},
		{`{` + base + `,"on":{"left_keys":["a"],"right_keys":["b","c"]},"window":{"size_ms":1}}`, "missing_join_keys"},
		{`{` + base + `,"on":{"left_key":"a"},"window":{"size_ms":1}}`, "missing_join_keys"},
		{`{` + base + `,"on":{"left_key":"a","right_key":"b"}}`, "invalid_window"},
		{`{` + base + `,"on":{"left_key":"a","right_key":"b"},"window":{"size_ms":1,"allowed_lateness_ms":-1}}`, "invalid_window"},
		{`{` + base + `,"on":{"left_key":"a","right_key":"b"},"window":{"size_ms":1},"join":{"type":"cross"}}`, "invalid_join"},
		{`{` + base + `,"on":{"left_key":"a","right_key":"b"},"window":{"size_ms":1},"dedupe":{"mode":"twice"}}`, "invalid_join"},
		{`{` + base + `,"on":{"left_key":"a","right_key":"b"},"window":{"size_ms":1},"emit":{"missing_as":"zero"}}`, "invalid_join"},
		{`{` + base + `,"on":{"left_key":"a","right_key":"b"},"window":{"size_ms":1},"emit":{"max_rows":-1}}`, "invalid_limit"},
	}
	for _, tc := range tests {
		_, err := runJoinOn(t, tc.body, nil, nil)
		if err == nil || err.Code != tc.code {
			t.Errorf("%s: got %v, want %s", tc.body, err, tc.code)
		}
	}
}

func TestJoinLimits(t *testing.T) {
	var left, right []Message
	for i := 0; i < 100; i++ {
		left = append(left, Message{Offset: uint64(i), TimestampMs: 1000, Value: []byte(`{"k":"same","pad":"` + strings.Repeat("x", 100) + `"}`)})
		right = append(right, Message{Offset: uint64(i), TimestampMs: 1000, Value: []byte(`{"k":"same"}`)})
	}
	body := `{"left":{"topic":"l"},"right":{"topic":"r"},"on":{"left_key":"k","right_key":"k"},"window":{"size_ms":10},"emit":{"max_rows":1}}`
	check := func(lim Limits, code string) {
		t.Helper()
		e := New(nil, NewSchemas(1), lim)
		var req JoinRequest
		decodeBody([]byte(body), &req)
		j, _ := e.compileJoin(&req)
		j.left.src = &source{messages: &sliceMessages{msgs: left}}
		j.right.src = &source{messages: &sliceMessages{msgs: right}}
		var err error
		if err = j.left.read(); err == nil {
			if err = j.right.read(); err == nil {
				_, jerr := j.run(lim.JoinPairsMax, lim.AnswerBytesMax)
				if jerr != nil {
					err = jerr
				}
			}
		}
		if qe, ok := err.(*Error); !ok || qe.Status != 413 || qe.Code != code {
			t.Errorf("got %v, want 413 %s", err, code)
		}
	}
	lim := DefaultLimits()
	lim.JoinPairsMax = 5000 // 100 × 100 pairs
	check(lim, "join_too_large")
	lim = DefaultLimits()
	lim.JoinStateBytesMax = 16 << 10 // the left side holds ~ 12 KB of JSON, and more in its arena
	check(lim, "join_state_too_large")
}

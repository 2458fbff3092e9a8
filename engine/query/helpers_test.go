package query

import (
	"encoding/json"
	"testing"
)

// msgsOf returns JSON messages at offsets 0.. with broker times 1000,
// 2000, ...
func msgsOf(values ...string) []Message {
	out := make([]Message, len(values))
	for i, v := range values {
		out[i] = Message{Offset: uint64(i), TimestampMs: int64(1000 * (i + 1)), Value: []byte(v)}
	}
	return out
}

var testEngine = New(nil, NewSchemas(16), DefaultLimits())

// runQueryOn compiles body and runs it over msgs, as Query does after
// resolving its source; a refused request returns the *Error.
func runQueryOn(t *testing.T, body string, msgs []Message) (map[string]any, *Error) {
	t.Helper()
	var req QueryRequest
	if err := decodeBody([]byte(body), &req); err != nil {
		return nil, err
	}
	q, err := testEngine.compileQuery(&req)
	if err != nil {
		return nil, err
	}
	r, rerr := q.run(&sliceMessages{msgs: msgs}, testEngine.lim.AnswerBytesMax)
	if rerr != nil {
		return nil, rerr.(*Error)
	}
	src := &source{spec: req.Source}
	return parseAnswer(t, q.appendAnswer(nil, r, src)), nil
}

// runJoinOn runs a join over in-memory sides.
func runJoinOn(t *testing.T, body string, left, right []Message) (map[string]any, *Error) {
	t.Helper()
	var req JoinRequest
	if err := decodeBody([]byte(body), &req); err != nil {
		return nil, err
	}
	j, err := testEngine.compileJoin(&req)
	if err != nil {
		return nil, err
	}
	for _, s := range []struct {
		side *joinSide
		msgs []Message
	}{{j.left, left}, {j.right, right}} {
		s.side.src = &source{messages: &sliceMessages{msgs: s.msgs}}
		if err := s.side.read(); err != nil {
			return nil, err.(*Error)
		}
	}
	r, err := j.run(testEngine.lim.JoinPairsMax, testEngine.lim.AnswerBytesMax)
	if err != nil {
		return nil, err
	}
	return parseAnswer(t, j.appendAnswer(nil, r)), nil
}

func parseAnswer(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("the answer is not JSON: %v\n%s", err, b)
	}
	return m
}

// canon renders v as compact JSON for comparisons.
func canon(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustQuery runs a query that must succeed.
func mustQuery(t *testing.T, body string, msgs []Message) map[string]any {
	t.Helper()
	m, err := runQueryOn(t, body, msgs)
	if err != nil {
		t.Fatalf("query refused: %v\n%s", err, body)
	}
	return m
}

package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// QueryIsolation is produce latency at a constant rate with no query
// running, then with queries running back to back, in the same run: a
// query must not delay the write path beyond the CPU it takes.
type QueryIsolation struct {
	Rate               float64 `json:"produce_rate"`
	AloneP50Ms         float64 `json:"alone_p50_ms"`
	AloneP99Ms         float64 `json:"alone_p99_ms"`
	AloneServerP99Ms   float64 `json:"alone_server_p99_ms"`
	QueriedP50Ms       float64 `json:"with_queries_p50_ms"`
	QueriedP99Ms       float64 `json:"with_queries_p99_ms"`
	QueriedServerP99Ms float64 `json:"with_queries_server_p99_ms"`
	Queries            int     `json:"queries_meanwhile"`
}

// QueryResult is one stream query or join timed over stored messages.
type QueryResult struct {
	Name       string  `json:"name"`
	Messages   int     `json:"messages"` // read per run (both sides of a join)
	Runs       int     `json:"runs"`
	MedianSec  float64 `json:"median_s"`
	MinSec     float64 `json:"min_s"`
	MsgsPerSec float64 `json:"msgs_per_s"` // Messages / MedianSec
}

// QueryRun starts binary on a fresh data directory, stores Messages
// orders of about 100 B three times (JSON, Avro binary, Protobuf binary)
// and JoinMessages on each side of a join, then times POST /broker/query
// (filter + group_by over every stored message) and POST /broker/join
// (a 60 s window), Runs times each; the server runs one query at a time
// on its own core (--queries-max 1).
type QueryRun struct {
	Binary       string
	Port         int
	Messages     int
	JoinMessages int
	Runs         int
	Progress     *Progress
}

// The schemas of the query benchmark's Avro and Protobuf orders.
const (
	QueryBenchAvroSchema = `{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"user","type":"string"},` +
		`{"name":"country","type":"string"},{"name":"amount","type":"double"},{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}}]}`
	QueryBenchProto = "syntax = \"proto3\";\nmessage Order {\n  int64 id = 1;\n  string user = 2;\n  string country = 3;\n  double amount = 4;\n  Status status = 5;\n}\nenum Status { NEW = 0; PAID = 1; }\n"
)

var queryBenchCountries = []string{"DE", "FR", "US", "JP", "BR"}

// Run performs the measurement. The server is always stopped on return.
func (r QueryRun) Run() ([]QueryResult, *QueryIsolation, error) {
	data, err := os.MkdirTemp("", "keel-bench-query")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(data)
	target := fmt.Sprintf("http://127.0.0.1:%d", r.Port)
	c := NewClient(target, "dev")
	c.HTTP.Timeout = 5 * time.Minute
	cmd := exec.Command(r.Binary, "serve", "--port", fmt.Sprint(r.Port), "--data", data, "--log-level", "warn", "--queries-max", "1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := c.WaitReady(time.Minute); err != nil {
		return nil, nil, err
	}
	avroSchema := avro.MustParse(QueryBenchAvroSchema)
	encoders := []struct {
		topic string
		enc   func(i int) []byte
	}{
		{"bench-query-json", queryJSON},
		{"bench-query-avro", func(i int) []byte { return queryAvro(avroSchema, i) }},
		{"bench-query-proto", queryProto},
	}
	for _, e := range encoders {
		if err := r.fill(c, e.topic, r.Messages, e.enc); err != nil {
			return nil, nil, err
		}
	}
	joinEnc := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"user":"user-%d","seq":%d,"pad":"%s"}`, i%10000, i, strings.Repeat("p", 40)))
	}
	for _, side := range []string{"bench-join-left", "bench-join-right"} {
		if err := r.fill(c, side, r.JoinMessages, joinEnc); err != nil {
			return nil, nil, err
		}
	}
	filter := `"filter":[{"field":"amount","op":"gt","value":100}],"aggregate":{"group_by":["country"],"measures":[{"op":"count"},{"op":"sum","field":"amount"},{"op":"avg","field":"amount"}]}`
	avroSchemaJSON, _ := json.Marshal(QueryBenchAvroSchema)
	protoJSON, _ := json.Marshal(QueryBenchProto)
	source := func(topic, decode string) string {
		return fmt.Sprintf(`{"source":{"topic":%q,"partition":0,"offset":-1,"limit":%d%s},%s}`, topic, r.Messages, decode, filter)
	}
	cases := []struct {
		name, path, body string
		messages         int
	}{
		{"query json: filter + group_by", "/broker/query", source("bench-query-json", ""), r.Messages},
		{"query avro binary: filter + group_by", "/broker/query", source("bench-query-avro", `,"decode":{"type":"avro","encoding":"binary","schema_text":`+string(avroSchemaJSON)+`}`), r.Messages},
		{"query proto binary: filter + group_by", "/broker/query", source("bench-query-proto", `,"decode":{"type":"proto","encoding":"binary","schema_text":`+string(protoJSON)+`}`), r.Messages},
		{"join json: 60 s window, 10,000 keys", "/broker/join", fmt.Sprintf(`{"left":{"topic":"bench-join-left","offset":-1,"limit":%d},"right":{"topic":"bench-join-right","offset":-1,"limit":%d},`+
			`"on":{"left_key":"user","right_key":"user"},"window":{"size_ms":60000},"emit":{"max_rows":1000,"left_fields":["seq"],"right_fields":["seq"]}}`, r.JoinMessages, r.JoinMessages), 2 * r.JoinMessages},
	}
	var out []QueryResult
	for _, cs := range cases {
		res, err := r.time(c, cs.name, cs.path, cs.body, cs.messages)
		if err != nil {
			return out, nil, err
		}
		out = append(out, res)
	}
	iso, err := r.isolation(target, c, cases[0].body)
	return out, iso, err
}

// isolationRate is the produce rate of the isolation runs: a fraction
// of what this machine sustains, so the latency measured is the write
// path's, not a queue's.
const isolationRate = 5000

// isolation measures durable 64 B produce at isolationRate for 5 s with
// no query running, then while one client runs queryBody back to back.
func (r QueryRun) isolation(target string, c *Client, queryBody string) (*QueryIsolation, error) {
	const topic = "bench-query-produce"
	if err := c.CreateTopic(topic, 1); err != nil {
		return nil, err
	}
	body := bytes.Repeat([]byte{'x'}, 64)
	run := func() (Result, error) {
		return Run(Load{Target: target, Token: "dev", Connections: 16, Duration: 5 * time.Second, Rate: isolationRate,
			Next: func(int, int) Request {
				return Request{Method: "POST", Path: "/broker/topics/" + topic + "/produce?partition=0&timing=1", Body: body, Check: durableCheck(1), ServerTiming: true}
			}})
	}
	alone, err := run()
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			if status, _, err := c.do("POST", "/broker/query", []byte(queryBody)); err == nil && status == 200 {
				n++
			}
		}
	}()
	queried, err := run()
	close(stop)
	queries := <-done
	if err != nil {
		return nil, err
	}
	if alone.Errors+queried.Errors > 0 {
		return nil, fmt.Errorf("bench: query isolation: %d produce errors: %s%s", alone.Errors+queried.Errors, alone.FirstError, queried.FirstError)
	}
	a, q := quantilesMs(alone.Latency), quantilesMs(queried.Latency)
	as, qs := quantilesMs(alone.ServerLatency), quantilesMs(queried.ServerLatency)
	return &QueryIsolation{Rate: isolationRate, AloneP50Ms: a.P50, AloneP99Ms: a.P99, AloneServerP99Ms: as.P99,
		QueriedP50Ms: q.P50, QueriedP99Ms: q.P99, QueriedServerP99Ms: qs.P99, Queries: queries}, nil
}

// fill stores n messages made by enc in partition 0 of topic, 1000 per
// NDJSON request.
func (r QueryRun) fill(c *Client, topic string, n int, enc func(int) []byte) error {
	if err := c.CreateTopic(topic, 1); err != nil {
		return err
	}
	start := time.Now()
	var batch bytes.Buffer
	for i := 0; i < n; {
		batch.Reset()
		for j := 0; j < 1000 && i < n; j, i = j+1, i+1 {
			batch.Write(enc(i))
			batch.WriteByte('\n')
		}
		status, body, err := c.do("POST", "/broker/topics/"+topic+"/produce-ndjson?partition=0&timeout_ms=60000", batch.Bytes())
		if err != nil || status != 200 {
			return fmt.Errorf("bench: query fill %s: %d %v %s", topic, status, err, truncate(body, 200))
		}
		if r.Progress != nil && i%50000 == 0 {
			r.Progress.Update("query: fill "+topic, time.Since(start), time.Since(start)*time.Duration(n)/time.Duration(max(i, 1)))
		}
	}
	return nil
}

// time runs one request Runs times and checks each answer read every
// message it asked for.
func (r QueryRun) time(c *Client, name, path, body string, messages int) (QueryResult, error) {
	var secs []float64
	for run := 0; run < max(1, r.Runs); run++ {
		start := time.Now()
		status, b, err := c.do("POST", path, []byte(body))
		d := time.Since(start).Seconds()
		if err != nil || status != 200 {
			return QueryResult{}, fmt.Errorf("bench: %s: %d %v %s", name, status, err, truncate(b, 300))
		}
		if err := checkQueryAnswer(b, messages); err != nil {
			return QueryResult{}, fmt.Errorf("bench: %s: %w", name, err)
		}
		secs = append(secs, d)
	}
	sort.Float64s(secs)
	med := secs[len(secs)/2]
	return QueryResult{Name: name, Messages: messages, Runs: len(secs), MedianSec: med, MinSec: secs[0], MsgsPerSec: float64(messages) / med}, nil
}

// checkQueryAnswer checks that an answer read messages messages (a
// query's consumed; a join's scanned, both sides) and found something.
func checkQueryAnswer(b []byte, messages int) error {
	var a struct {
		Source     struct{ Consumed int }
		Aggregates []map[string]any
		Rows       []any
		Stats      struct {
			LeftScanned  int `json:"left_scanned"`
			RightScanned int `json:"right_scanned"`
		}
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	read := a.Source.Consumed + a.Stats.LeftScanned + a.Stats.RightScanned
	if read != messages || len(a.Aggregates)+len(a.Rows) == 0 {
		return fmt.Errorf("read %d messages (want %d), %d aggregates, %d rows: %s", read, messages, len(a.Aggregates), len(a.Rows), truncate(b, 300))
	}
	return nil
}

// queryOrder is the i-th order of the benchmark, the same in every
// encoding: amount avoids NDJSON's line breaks in the binary encodings.
func queryOrder(i int) (id int64, user, country string, amount float64, status int) {
	return int64(i), fmt.Sprintf("user-%d", i%1000), queryBenchCountries[i%len(queryBenchCountries)], float64(i%500) + 0.5, i % 2
}

func queryJSON(i int) []byte {
	id, user, country, amount, status := queryOrder(i)
	return []byte(fmt.Sprintf(`{"id":%d,"user":%q,"country":%q,"amount":%g,"status":%q,"ok":true}`, id, user, country, amount, []string{"NEW", "PAID"}[status]))
}

// ndjsonSafe reports whether b can be an NDJSON line stored byte for
// byte: no line break, no carriage return, not a JSON string literal.
func ndjsonSafe(b []byte) bool {
	return !bytes.ContainsAny(b, "\n\r") && (len(b) == 0 || b[0] != '"')
}

func queryAvro(s avro.Schema, i int) []byte {
	id, user, country, amount, status := queryOrder(i)
	for {
		b, err := avro.Marshal(s, map[string]any{"id": id, "user": user, "country": country, "amount": amount, "status": []string{"NEW", "PAID"}[status]})
		if err != nil {
			panic(err)
		}
		if ndjsonSafe(b) {
			return b
		}
		id, amount = nudge(id, amount)
	}
}

func queryProto(i int) []byte {
	id, user, country, amount, status := queryOrder(i)
	for {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(id))
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, user)
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, country)
		b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(amount))
		if status != 0 {
			b = protowire.AppendTag(b, 5, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(status))
		}
		if ndjsonSafe(b) {
			return b
		}
		id, amount = nudge(id, amount)
	}
}

// nudge changes an order that cannot be an NDJSON line as little as the
// query cares: the amount by one unit in the last place (another bit
// pattern), and the id (which no query reads) into other varint bytes.
func nudge(id int64, amount float64) (int64, float64) {
	return id + 1<<21, math.Nextafter(amount, math.Inf(1))
}

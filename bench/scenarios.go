package bench

import (
	"bytes"
	"fmt"
	"strconv"
)

// Scenario is one workload. Setup prepares the Keel server (topics, data);
// Request builds the i-th request of a worker.
type Scenario struct {
	Name        string
	Description string
	Setup       func(c *Client) error
	Request     func(worker, i int) Request
}

// Scenarios returns the standard workloads by name, in report order.
func Scenarios() []Scenario {
	return []Scenario{
		produceScenario("produce-64", 64),
		produceScenario("produce-1k", 1024),
		ndjsonScenario("ndjson-100", 100),
		ndjsonScenario("ndjson-1000", 1000),
		consumeScenario(),
		mixedScenario(),
		kvPutScenario(),
		kvGetScenario(),
	}
}

// ExtraScenarios are run only when named: they need a server started
// with particular flags (see each description).
func ExtraScenarios() []Scenario {
	return []Scenario{retainedScenario(), compactedScenario()}
}

// ScenarioByName finds a standard or extra scenario.
func ScenarioByName(name string) (Scenario, bool) {
	for _, s := range append(Scenarios(), ExtraScenarios()...) {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

const (
	consumeTopic    = "bench-consume"
	consumeMessages = 200_000
	consumePage     = 1000
)

func produceScenario(name string, size int) Scenario {
	topic := "bench-" + name
	body := bytes.Repeat([]byte{'x'}, size)
	path := "/broker/topics/" + topic + "/produce?partition=0&timing=1"
	return Scenario{
		Name:        name,
		Description: fmt.Sprintf("durable single-message produce, %d B body, one partition", size),
		Setup:       func(c *Client) error { return c.CreateTopic(topic, 1) },
		Request: func(worker, i int) Request {
			return Request{Method: "POST", Path: path, Body: body, Check: durableCheck(1), ServerTiming: true}
		},
	}
}

func ndjsonScenario(name string, lines int) Scenario {
	topic := "bench-" + name
	body := ndjsonBody(lines, 64)
	path := "/broker/topics/" + topic + "/produce-ndjson?partition=0&timing=1"
	return Scenario{
		Name:        name,
		Description: fmt.Sprintf("durable NDJSON produce, %d messages of 64 B per request, one partition", lines),
		Setup:       func(c *Client) error { return c.CreateTopic(topic, 1) },
		Request: func(worker, i int) Request {
			return Request{Method: "POST", Path: path, Body: body, Check: durableCheck(lines), ServerTiming: true}
		},
	}
}

func consumeScenario() Scenario {
	return Scenario{
		Name:        "consume-1000",
		Description: fmt.Sprintf("consume pages of %d messages of 64 B from %d stored, text mode", consumePage, consumeMessages),
		Setup:       func(c *Client) error { return c.Fill(consumeTopic, consumeMessages) },
		Request: func(worker, i int) Request {
			off := ((worker*7919 + i) * consumePage) % (consumeMessages - consumePage)
			return Request{Method: "GET", Path: "/broker/consume/" + consumeTopic + "/bench/0?limit=1000&offset=" + strconv.Itoa(off), Check: consumeCheck}
		},
	}
}

func mixedScenario() Scenario {
	produce := produceScenario("mixed", 64)
	consume := consumeScenario()
	return Scenario{
		Name:        "mixed",
		Description: "half the connections produce 64 B durably, half consume pages of 1000",
		Setup: func(c *Client) error {
			if err := produce.Setup(c); err != nil {
				return err
			}
			return consume.Setup(c)
		},
		Request: func(worker, i int) Request {
			if worker%2 == 0 {
				return produce.Request(worker, i)
			}
			return consume.Request(worker, i)
		},
	}
}

const (
	kvKeys      = 1000
	kvGetNS     = "bench-kv-get"
	kvValueSize = 64
)

func kvPutScenario() Scenario {
	body := bytes.Repeat([]byte{'v'}, kvValueSize)
	return Scenario{
		Name:        "kv-put",
		Description: fmt.Sprintf("durable KV put, %d B values over %d keys", kvValueSize, kvKeys),
		Setup:       func(c *Client) error { return nil },
		Request: func(worker, i int) Request {
			return Request{Method: "POST", Path: fmt.Sprintf("/kv/bench-kv-put/k%d", (worker*7919+i)%kvKeys), Body: body, Check: durableCheck(1)}
		},
	}
}

var casKey = []byte(`"cas":`)

func kvGetScenario() Scenario {
	return Scenario{
		Name:        "kv-get",
		Description: fmt.Sprintf("KV get of %d B values over %d keys", kvValueSize, kvKeys),
		Setup: func(c *Client) error {
			return c.PutKeys(kvGetNS, kvKeys, kvValueSize)
		},
		Request: func(worker, i int) Request {
			return Request{Method: "GET", Path: fmt.Sprintf("/kv/%s/k%d", kvGetNS, (worker*7919+i)%kvKeys), Check: func(status int, body []byte) (bool, int) {
				return status == 200 && bytes.Contains(body, casKey), 1
			}}
		},
	}
}

// retainedScenario is produce-64 onto a topic whose size policy keeps the
// retention sweep trimming while it runs. Start the server with small
// segments and a quick sweep, and compare its server percentiles with
// produce-64 in the same run (BENCHMARKS.md):
//
//	keel serve --segment-bytes 1179648 --retention-interval 500ms
//	keel bench --target http://127.0.0.1:1109 --rate-fraction 0.5 produce-64 produce-64-retained
func retainedScenario() Scenario {
	const topic = "bench-produce-64-retained"
	sc := produceScenario("produce-64-retained", 64)
	sc.Description = "produce-64 onto a topic with max_bytes 4 MiB: the retention sweep trims whole segments while it runs (needs a server with small --segment-bytes)"
	sc.Setup = func(c *Client) error {
		if err := c.CreateTopic(topic, 1); err != nil {
			return err
		}
		status, body, err := c.do("POST", "/broker/retention", []byte(`{"topic":"`+topic+`","max_bytes":4194304}`))
		if err != nil || status != 200 {
			return fmt.Errorf("bench: retention on %s: %d %s %v", topic, status, truncate(body, 200), err)
		}
		return nil
	}
	return sc
}

// compactedScenario is produce-64 with keys (1,000 of them, so each is
// overwritten again and again) onto a topic with cleanup compact: every
// node's compaction rewrites its sealed segments while it runs. Start
// the server with small segments and frequent compaction and compare with
// produce-64 in the same run (BENCHMARKS.md):
//
//	keel serve --segment-bytes 1179648 --compaction-interval 1s --checkpoint-bytes 4194304
//	keel bench --target http://127.0.0.1:1109 --rate-fraction 0.5 produce-64 produce-64-compacted
func compactedScenario() Scenario {
	const topic = "bench-produce-64-compacted"
	body := bytes.Repeat([]byte{'x'}, 64)
	return Scenario{
		Name:        "produce-64-compacted",
		Description: "produce-64 with 1,000 keys onto a topic with cleanup compact: compaction rewrites segments while it runs (needs a server with small --segment-bytes and --compaction-interval)",
		Setup: func(c *Client) error {
			status, b, err := c.do("POST", "/broker/topics", []byte(`{"name":"`+topic+`","partitions":1,"cleanup":"compact"}`))
			if err != nil || status != 200 {
				return fmt.Errorf("bench: create %s: %d %s %v", topic, status, truncate(b, 200), err)
			}
			return nil
		},
		Request: func(worker, i int) Request {
			return Request{Method: "POST", Path: fmt.Sprintf("/broker/topics/%s/produce?partition=0&timing=1&key=k%d", topic, (worker*7919+i)%1000),
				Body: body, Check: durableCheck(1), ServerTiming: true}
		},
	}
}

func ndjsonBody(lines, size int) []byte {
	var b bytes.Buffer
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&b, "%0*d\n", size, i)
	}
	return b.Bytes()
}

var durableMark = []byte(`"durable":true`)

// durableCheck accepts 200 answers that say durable; each carries n messages.
func durableCheck(n int) func(int, []byte) (bool, int) {
	return func(status int, body []byte) (bool, int) {
		if status != 200 || !bytes.Contains(body, durableMark) {
			return false, 0
		}
		return true, n
	}
}

var countKey = []byte(`"count":`)

// consumeCheck accepts 200 pages and counts their messages.
func consumeCheck(status int, body []byte) (bool, int) {
	if status != 200 {
		return false, 0
	}
	n, ok := intAfter(body, countKey)
	return ok && n > 0, int(n)
}

// noopCheck accepts any 200 (the no-op server answers every path).
func noopCheck(status int, _ []byte) (bool, int) { return status == 200, 0 }

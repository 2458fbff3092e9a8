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
	}
}

// ScenarioByName finds a standard scenario.
func ScenarioByName(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
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

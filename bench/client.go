package bench

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client makes the setup calls of scenarios over Keel's HTTP API.
type Client struct {
	Target string
	Token  string
	HTTP   *http.Client
}

// NewClient returns a client for target.
func NewClient(target, token string) *Client {
	return &Client{Target: strings.TrimSuffix(target, "/"), Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

func (c *Client) do(method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, c.Target+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// CreateTopic creates a topic (an existing one with the same count is fine).
func (c *Client) CreateTopic(name string, partitions int) error {
	status, body, err := c.do("POST", "/broker/topics", []byte(fmt.Sprintf(`{"name":%q,"partitions":%d}`, name, partitions)))
	if err != nil {
		return fmt.Errorf("bench: create topic %s: %w", name, err)
	}
	if status != 200 {
		return fmt.Errorf("bench: create topic %s: %d %s", name, status, truncate(body, 200))
	}
	return nil
}

// PutKeys writes keys k0..k(n-1) of namespace ns with values of size
// bytes, 16 at a time.
func (c *Client) PutKeys(ns string, n, size int) error {
	value := bytes.Repeat([]byte{'v'}, size)
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			status, body, err := c.do("POST", fmt.Sprintf("/kv/%s/k%d", ns, i), value)
			if err == nil && status != 200 {
				err = fmt.Errorf("bench: put %s/k%d: %d %s", ns, i, status, truncate(body, 200))
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// Fill makes sure partition 0 of topic holds at least n messages of 64 B,
// writing NDJSON batches of 1000.
func (c *Client) Fill(topic string, n int) error {
	if err := c.CreateTopic(topic, 1); err != nil {
		return err
	}
	have, err := c.EndOffset(topic)
	if err != nil {
		return err
	}
	batch := ndjsonBody(1000, 64)
	for have < n {
		status, body, err := c.do("POST", "/broker/topics/"+topic+"/produce-ndjson?partition=0", batch)
		if err != nil || status != 200 {
			return fmt.Errorf("bench: fill %s: %d %v %s", topic, status, err, truncate(body, 200))
		}
		have += 1000
	}
	return nil
}

// EndOffset returns the log end offset of partition 0 of topic.
func (c *Client) EndOffset(topic string) (int, error) {
	status, body, err := c.do("GET", "/broker/topics/"+topic, nil)
	if err != nil || status != 200 {
		return 0, fmt.Errorf("bench: describe %s: %d %v", topic, status, err)
	}
	i := bytes.Index(body, []byte(`"log_end_offset":`))
	if i < 0 {
		return 0, fmt.Errorf("bench: describe %s: no log_end_offset", topic)
	}
	var n int
	_, err = fmt.Sscanf(string(body[i+len(`"log_end_offset":`):]), "%d", &n)
	return n, err
}

// WaitReady polls /ready until it answers 200 or the timeout passes, and
// returns how long it took.
func (c *Client) WaitReady(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for time.Since(start) < timeout {
		if status, _, err := c.do("GET", "/ready", nil); err == nil && status == 200 {
			return time.Since(start), nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("bench: %s not ready after %v", c.Target, timeout)
}

package cli

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

const consumeExamples = `  keel consume events --from start -n 10
  keel consume events --partition 0 --from 1200 --format json
  keel consume events --group billing --follow --commit          # long polls
  keel consume events --partition 2 --follow --sse               # Server-Sent Events
  keel consume events --from 2026-11-30T12:00:00Z                # the first message at or after a time
  keel consume events --from -15m --format b64                   # the last 15 minutes
`

// message is one consumed message as the server answers it.
type message struct {
	Offset      int64   `json:"offset"`
	Partition   int     `json:"partition"`
	Key         *string `json:"key,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueB64    string  `json:"value_b64,omitempty"`
	KeyB64      string  `json:"key_b64,omitempty"`
	TimestampMs int64   `json:"timestamp_ms"`
}

type consumer struct {
	c         *command
	topic     string
	group     string
	format    string
	commit    bool
	limit     int64 // -n: stop after this many (0: no limit)
	mu        sync.Mutex
	printed   int64
	done      chan struct{}
	ctx       context.Context // canceled by stop: ends long polls and streams at once
	cancel    context.CancelFunc
	closeOnce sync.Once
	firstErr  error
}

// runConsume prints messages of a topic: every partition (or
// --partition), from --from, until caught up, or for ever with --follow.
func runConsume(c *command, args []string) int {
	fs := c.flags("consume", "TOPIC [flags]", consumeExamples)
	group := fs.String("group", "keel-cli", "consumer group: where --from committed starts, and what --commit moves")
	partition := fs.Int("partition", -1, "one partition (-1: every partition)")
	from := fs.String("from", "committed", "start: committed (after the group's commit, else the log start), start, end, an offset, a time (RFC 3339), or a duration ago (-15m)")
	n := fs.Int64("n", 0, "stop after this many messages (0: no limit)")
	follow := fs.Bool("follow", false, "keep reading as messages arrive (long polls; --sse for Server-Sent Events)")
	sse := fs.Bool("sse", false, "with --follow: read over Server-Sent Events (GET /broker/stream)")
	commit := fs.Bool("commit", false, "commit each partition's last printed offset for --group")
	format := fs.String("format", "text", "text (the value, one per line), json (the message object), b64 (the value in base64)")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if len(c.pos) != 1 {
		return c.usageError(fs, "consume needs one TOPIC")
	}
	if *format != "text" && *format != "json" && *format != "b64" {
		return c.usageError(fs, "--format %q: text, json or b64", *format)
	}
	if *sse && !*follow {
		return c.usageError(fs, "--sse needs --follow")
	}
	k := &consumer{c: c, topic: c.pos[0], group: *group, format: *format, commit: *commit, limit: *n, done: make(chan struct{})}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	defer k.cancel()
	var desc struct {
		PartitionInfo []struct {
			Partition    int   `json:"partition"`
			LogEndOffset int64 `json:"log_end_offset"`
		} `json:"partition_info"`
	}
	if _, err := c.getJSON("GET", "/broker/topics/"+pathEscape(k.topic), nil, &desc); err != nil {
		return c.fail(err)
	}
	var parts []int
	ends := map[int]int64{}
	for _, p := range desc.PartitionInfo {
		ends[p.Partition] = p.LogEndOffset
		if *partition < 0 || p.Partition == *partition {
			parts = append(parts, p.Partition)
		}
	}
	if len(parts) == 0 {
		fmt.Fprintf(c.env.Stderr, "keel: topic %s has no partition %d\n", k.topic, *partition)
		return ExitRefused
	}
	start, err := startQuery(*from, ends)
	if err != nil {
		return c.usageError(fs, "--from %q: %v", *from, err)
	}
	if !*follow {
		for _, p := range parts {
			if err := k.readPartition(p, start(p), false); err != nil {
				return c.fail(err)
			}
			if k.full() {
				break
			}
		}
		return ExitOK
	}
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if *sse {
				err = k.streamPartition(p, start(p))
			} else {
				err = k.readPartition(p, start(p), true)
			}
			if err != nil {
				k.stop(err)
			}
		}()
	}
	wg.Wait()
	if k.firstErr != nil {
		return c.fail(k.firstErr)
	}
	return ExitOK
}

// startQuery returns, per partition, the query parameters that start a
// read where --from says.
func startQuery(from string, ends map[int]int64) (func(p int) url.Values, error) {
	v := url.Values{}
	switch {
	case from == "committed":
	case from == "start":
		v.Set("offset", "-1")
	case from == "end":
		return func(p int) url.Values { return url.Values{"offset": {strconv.FormatInt(ends[p], 10)}} }, nil
	default:
		if o, err := strconv.ParseUint(from, 10, 63); err == nil {
			v.Set("offset", strconv.FormatUint(o, 10))
			break
		}
		if d, err := time.ParseDuration(from); err == nil && d < 0 {
			v.Set("from_ts_ms", strconv.FormatInt(time.Now().Add(d).UnixMilli(), 10))
			break
		}
		t, err := time.Parse(time.RFC3339, from)
		if err != nil {
			return nil, fmt.Errorf("want committed, start, end, an offset, an RFC 3339 time or a negative duration")
		}
		v.Set("from_ts_ms", strconv.FormatInt(t.UnixMilli(), 10))
	}
	return func(int) url.Values { return v }, nil
}

func (k *consumer) encoding() string {
	if k.format == "json" {
		return ""
	}
	return "b64" // text prints the raw bytes; b64 keeps them safe in the answer
}

// readPartition pages through partition p; with follow it long-polls
// once caught up, else it stops there.
func (k *consumer) readPartition(p int, q url.Values, follow bool) error {
	for {
		q.Set("limit", "1000")
		if e := k.encoding(); e != "" {
			q.Set("encoding", e)
		}
		if follow {
			q.Set("wait_ms", "10000")
		}
		var page struct {
			Messages   []message `json:"messages"`
			Count      int       `json:"count"`
			NextOffset int64     `json:"next_offset"`
		}
		b, err := k.c.doCtx(k.ctx, "GET", fmt.Sprintf("/broker/consume/%s/%s/%d?%s", pathEscape(k.topic), pathEscape(k.group), p, q.Encode()), nil, time.Minute)
		if k.ctx.Err() != nil {
			return nil // stopped: -n reached elsewhere
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return fmt.Errorf("the answer is not the JSON expected: %w", err)
		}
		if err := k.print(p, page.Messages); err != nil || k.full() {
			return err
		}
		q = url.Values{"offset": {strconv.FormatInt(page.NextOffset, 10)}}
		if page.Count == 0 && !follow {
			return nil
		}
		select {
		case <-k.done:
			return nil
		default:
		}
	}
}

// streamPartition follows partition p over Server-Sent Events, resuming
// with Last-Event-ID when the stream breaks.
func (k *consumer) streamPartition(p int, q url.Values) error {
	lastID := ""
	for attempt := 0; ; attempt++ {
		if e := k.encoding(); e != "" {
			q.Set("encoding", e)
		}
		req, _ := http.NewRequestWithContext(k.ctx, "GET", fmt.Sprintf("%s/broker/stream/%s/%s/%d?%s", k.c.url, pathEscape(k.topic), pathEscape(k.group), p, q.Encode()), nil)
		req.Header.Set("Authorization", "Bearer "+k.c.token)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := k.c.http.Do(req)
		if k.ctx.Err() != nil {
			if err == nil {
				resp.Body.Close()
			}
			return nil
		}
		if err != nil {
			if attempt >= 5 {
				return &unreachable{err}
			}
			time.Sleep(time.Second)
			continue
		}
		if resp.StatusCode != 200 {
			b := make([]byte, 4096)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			var e struct{ Error, Message string }
			json.Unmarshal(b[:n], &e)
			return &apiError{Status: resp.StatusCode, Code: e.Error, Message: e.Message}
		}
		attempt = 0
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		var id string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "data: "):
				var m message
				if json.Unmarshal([]byte(line[6:]), &m) != nil || m.Partition != p {
					continue // close or error events
				}
				if err := k.print(p, []message{m}); err != nil {
					resp.Body.Close()
					return err
				}
				lastID = id
				if k.full() {
					resp.Body.Close()
					return nil
				}
			}
		}
		resp.Body.Close()
		select {
		case <-k.done:
			return nil
		default:
		}
		time.Sleep(200 * time.Millisecond) // the stream ended (shutdown, timeout): resume
	}
}

// print writes msgs (at most up to -n) and commits the last one printed.
func (k *consumer) print(p int, msgs []message) error {
	k.mu.Lock()
	w := bufio.NewWriter(k.c.env.Stdout)
	var last int64 = -1
	for _, m := range msgs {
		if k.limit > 0 && k.printed >= k.limit {
			break
		}
		switch k.format {
		case "json":
			b, _ := json.Marshal(m)
			w.Write(b)
		case "b64":
			w.WriteString(m.ValueB64)
		default:
			v, err := base64.StdEncoding.DecodeString(m.ValueB64)
			if err != nil {
				k.mu.Unlock()
				return fmt.Errorf("offset %d: value_b64 does not decode: %w", m.Offset, err)
			}
			w.Write(v)
		}
		w.WriteByte('\n')
		k.printed++
		last = m.Offset
	}
	w.Flush()
	full := k.limit > 0 && k.printed >= k.limit
	k.mu.Unlock()
	if full {
		k.stop(nil)
	}
	if k.commit && last >= 0 {
		body := fmt.Sprintf(`{"topic":%q,"group":%q,"partition":%d,"offset":%d}`, k.topic, k.group, p, last)
		if _, err := k.c.do("POST", "/broker/commit", []byte(body), time.Minute); err != nil {
			return fmt.Errorf("commit of offset %d on partition %d: %w", last, p, err)
		}
	}
	return nil
}

func (k *consumer) full() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.limit > 0 && k.printed >= k.limit
}

// stop ends every partition's loop (the first error is kept).
func (k *consumer) stop(err error) {
	k.closeOnce.Do(func() {
		k.mu.Lock()
		k.firstErr = err
		k.mu.Unlock()
		close(k.done)
		k.cancel()
	})
}

package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

const produceExamples = `  echo hello | keel produce events
  keel produce events --file orders.log --partition 0 --idempotency-key orders-2026-11-30
  keel produce events --key user-42 < lines.txt
`

// runProduce sends one message per line (stdin, or --file) in NDJSON
// batches. Empty lines are skipped (as NDJSON does); every other line is
// stored byte for byte: a line the NDJSON route would change (a JSON
// string literal, which it stores decoded, or a line ending in \r, which
// it strips) is sent as a JSON string that decodes back to it, or alone
// when it is not valid UTF-8.
func runProduce(c *command, args []string) int {
	fs := c.flags("produce", "TOPIC [flags] < lines", produceExamples)
	file := fs.String("file", "", "read the lines from this file instead of stdin (a progress line is shown on a terminal)")
	partition := fs.Int("partition", -1, "partition to write (-1: the server chooses, by --key or round robin)")
	key := fs.String("key", "", "message key of every line")
	idem := fs.String("idempotency-key", "", "idempotency key: batch i is sent with KEY-i, so running the same command again (same input, same --batch) stores nothing twice; transient failures are then retried")
	batch := fs.Int("batch", 1000, "lines per request (at most the server's --max-batch-messages)")
	batchBytes := fs.Int("batch-bytes", 1<<20, "bytes per request (at most the server's --max-batch-bytes)")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if len(c.pos) != 1 {
		return c.usageError(fs, "produce needs one TOPIC")
	}
	topic := c.pos[0]
	if *batch < 1 || *batchBytes < 1 {
		return c.usageError(fs, "--batch and --batch-bytes must be positive")
	}
	in := c.env.Stdin
	var total int64 = -1
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			fmt.Fprintf(c.env.Stderr, "keel: %v\n", err)
			return ExitUsage
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil {
			total = st.Size()
		}
		in = f
	}
	p := &producer{c: c, topic: topic, partition: *partition, key: *key, idem: *idem, start: time.Now(), first: map[int]int64{}, last: map[int]int64{}}
	p.progress = *file != "" && isTerminal(c.env.Stderr)
	r := bufio.NewReaderSize(in, 1<<20)
	var body bytes.Buffer
	lines := 0
	var read int64
	flush := func() error {
		if lines == 0 {
			return nil
		}
		err := p.send("/produce-ndjson", body.Bytes(), lines)
		body.Reset()
		lines = 0
		if p.progress {
			p.showProgress(read, total)
		}
		return err
	}
	for {
		line, err := r.ReadBytes('\n')
		read += int64(len(line))
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte{'\n'})
			if e := p.add(&body, &lines, line, flush); e != nil {
				return c.fail(e)
			}
			if lines >= *batch || body.Len() >= *batchBytes {
				if e := flush(); e != nil {
					return c.fail(e)
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintf(c.env.Stderr, "keel: read: %v\n", err)
			return ExitRefused
		}
	}
	if e := flush(); e != nil {
		return c.fail(e)
	}
	p.summary()
	return ExitOK
}

// producer sends batches and keeps what they stored.
type producer struct {
	c           *command
	topic       string
	partition   int
	key, idem   string
	batches     int
	messages    int64
	skipped     int64
	bytes       int64
	start       time.Time
	first, last map[int]int64 // per partition: first and last offset written
	progress    bool
}

// add appends one line to the batch in body, or sends it alone when NDJSON
// cannot carry it.
func (p *producer) add(body *bytes.Buffer, lines *int, line []byte, flush func() error) error {
	if len(line) == 0 {
		p.skipped++
		return nil
	}
	p.bytes += int64(len(line))
	if !ndjsonChanges(line) {
		body.Write(line)
		body.WriteByte('\n')
		*lines++
		return nil
	}
	if utf8.Valid(line) {
		var q bytes.Buffer
		enc := json.NewEncoder(&q)
		enc.SetEscapeHTML(false)
		enc.Encode(string(line)) // ends with '\n'
		body.Write(q.Bytes())
		*lines++
		return nil
	}
	// Not valid UTF-8, so no JSON string holds it: alone, as a raw body,
	// after the lines before it (order is kept).
	if err := flush(); err != nil {
		return err
	}
	return p.send("/produce", line, 1)
}

// ndjsonChanges reports whether the NDJSON route would not store line as
// it is: it strips a trailing \r and decodes a JSON string literal.
func ndjsonChanges(line []byte) bool {
	n := len(line)
	return line[n-1] == '\r' || n >= 2 && line[0] == '"' && line[n-1] == '"'
}

// send posts one batch (or one raw message), retrying transient failures
// when an idempotency key makes that safe.
func (p *producer) send(route string, body []byte, lines int) error {
	q := url.Values{}
	if p.partition >= 0 {
		q.Set("partition", strconv.Itoa(p.partition))
	}
	if p.key != "" {
		q.Set("key", p.key)
	}
	if p.idem != "" {
		q.Set("idempotency_key", fmt.Sprintf("%s-%d", p.idem, p.batches))
	}
	path := "/broker/topics/" + pathEscape(p.topic) + route + "?" + q.Encode()
	var b []byte
	var err error
	for attempt := 0; ; attempt++ {
		b, err = p.c.do("POST", path, body, 2*time.Minute)
		var ae *apiError
		var un *unreachable
		transient := errors.As(err, &un) || errors.As(err, &ae) && ae.Status == 503
		if err == nil || p.idem == "" || !transient || attempt == 5 {
			break
		}
		time.Sleep(time.Duration(200<<attempt) * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("after %d messages: %w", p.messages, err)
	}
	var a struct {
		Offset      *int64 `json:"offset"`
		FirstOffset *int64 `json:"first_offset"`
		Count       int64  `json:"count"`
		Partition   int    `json:"partition"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return fmt.Errorf("the answer is not the JSON expected: %w", err)
	}
	first, count := a.FirstOffset, a.Count
	if first == nil {
		first, count = a.Offset, 1
	}
	if first != nil {
		if _, ok := p.first[a.Partition]; !ok {
			p.first[a.Partition] = *first
		}
		p.last[a.Partition] = *first + count - 1
	}
	p.batches++
	p.messages += int64(lines)
	return nil
}

func (p *producer) showProgress(read, total int64) {
	el := time.Since(p.start).Seconds()
	if total > 0 {
		pct := float64(read) * 100 / float64(total)
		width := 30
		done := int(pct / 100 * float64(width))
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = '.'
			if i < done {
				bar[i] = '#'
			}
		}
		fmt.Fprintf(p.c.env.Stderr, "\r[%s] %5.1f%%  %d messages  %.0f msg/s ", bar, pct, p.messages, float64(p.messages)/max(el, 0.001))
		return
	}
	fmt.Fprintf(p.c.env.Stderr, "\r%d messages  %.0f msg/s ", p.messages, float64(p.messages)/max(el, 0.001))
}

// summary reports what was stored: a line for people (stderr, so stdout
// stays clean), or JSON on stdout with --json.
func (p *producer) summary() {
	el := time.Since(p.start).Seconds()
	if p.progress {
		fmt.Fprintln(p.c.env.Stderr)
	}
	if p.c.json {
		parts := map[string][2]int64{}
		for part, f := range p.first {
			parts[strconv.Itoa(part)] = [2]int64{f, p.last[part]}
		}
		b, _ := json.Marshal(map[string]any{"ok": true, "topic": p.topic, "messages": p.messages, "skipped_empty_lines": p.skipped,
			"bytes": p.bytes, "requests": p.batches, "seconds": el, "offsets": parts})
		p.c.printRaw(b)
		return
	}
	fmt.Fprintf(p.c.env.Stderr, "produced %d messages (%d bytes) to %s in %.2f s, %.0f msg/s", p.messages, p.bytes, p.topic, el, float64(p.messages)/max(el, 0.001))
	if p.skipped > 0 {
		fmt.Fprintf(p.c.env.Stderr, "; %d empty lines skipped", p.skipped)
	}
	fmt.Fprintln(p.c.env.Stderr)
	for _, part := range slices.Sorted(maps.Keys(p.first)) {
		fmt.Fprintf(p.c.env.Stderr, "  partition %d: offsets %d..%d\n", part, p.first[part], p.last[part])
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

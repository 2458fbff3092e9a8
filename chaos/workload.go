package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// workload runs the clients and records the history.
type workload struct {
	c          *cluster
	topic      string
	partitions int
	start      time.Time
	opBudget   time.Duration // how long an append is retried with its key
	pace       time.Duration // a client starts an operation at most this often (0: back to back)

	mu  sync.Mutex
	ops []Op

	known    []atomic.Int64 // per partition: one past the highest offset acknowledged
	hint     atomic.Int32   // the node to try first: the last that answered as leader
	diskFull atomic.Int64   // 507 disk_full answers
}

func (w *workload) now() int64 { return time.Since(w.start).Nanoseconds() }

func (w *workload) record(op Op) {
	w.mu.Lock()
	op.ID = len(w.ops)
	w.ops = append(w.ops, op)
	w.mu.Unlock()
}

func (w *workload) history() []Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Op(nil), w.ops...)
}

// nodeOrder returns the nodes to try, the last known leader first.
func (w *workload) nodeOrder(rng *rand.Rand) []int {
	n := len(w.c.nodes)
	first := int(w.hint.Load())
	order := []int{first}
	for _, i := range rng.Perm(n) {
		if i != first {
			order = append(order, i)
		}
	}
	return order
}

// attempt is what one HTTP request told about an operation.
type attempt int

const (
	attemptOK      attempt = iota
	attemptRefused         // certainly not applied: a redirect, a 4xx, a connection refused
	attemptUnknown         // may have been applied
)

// producer appends keys p<id>-<seq> until ctx ends, each retried with its
// key (as a careful client does) for opBudget.
func (w *workload) producer(ctx context.Context, id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	next := time.Now()
	for seq := 0; ctx.Err() == nil; seq++ {
		next = w.wait(ctx, next)
		p := rng.IntN(w.partitions)
		key := fmt.Sprintf("p%d-%d", id, seq)
		op := Op{Process: id, Kind: OpAppend, Partition: p, Key: key, Call: w.now()}
		unknown := false
		deadline := time.Now().Add(w.opBudget)
		for time.Now().Before(deadline) && op.Outcome != OK {
			for _, i := range w.nodeOrder(rng) {
				op.Attempts++
				res, offset, note := w.produce(i, p, key)
				op.Node = w.c.nodes[i].name
				switch res {
				case attemptOK:
					op.Outcome, op.Offset = OK, offset
					op.Acked = append(op.Acked, offset)
					w.hint.Store(int32(i))
					for {
						k := w.known[p].Load()
						if offset+1 <= k || w.known[p].CompareAndSwap(k, offset+1) {
							break
						}
					}
				case attemptUnknown:
					unknown, op.Error = true, note
					// The next round starts at the next node: this one may be
					// stopped, cut off or out of disk.
					w.hint.CompareAndSwap(int32(i), int32((i+1)%len(w.c.nodes)))
				default:
					op.Error = note
				}
				if res != attemptRefused {
					break
				}
			}
			if op.Outcome != OK {
				sleepCtx(ctx, time.Duration(20+rng.IntN(80))*time.Millisecond)
				if ctx.Err() != nil {
					break
				}
			}
		}
		op.Return = w.now()
		switch {
		case op.Outcome == OK:
			op.Error = ""
		case unknown:
			op.Outcome = Unknown
		default:
			op.Outcome = Fail
		}
		w.record(op)
	}
}

// produce sends one attempt of an append to node i.
func (w *workload) produce(i, p int, key string) (attempt, int64, string) {
	u := fmt.Sprintf("%s/broker/topics/%s/produce?partition=%d&timeout_ms=2000&idempotency_key=%s", w.c.nodes[i].url(), w.topic, p, url.QueryEscape(key))
	resp, err := do("POST", u, strings.NewReader(key))
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return attemptRefused, 0, "connection refused"
		}
		return attemptUnknown, 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ans struct {
		OK      bool   `json:"ok"`
		Offset  int64  `json:"offset"`
		Durable bool   `json:"durable"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(b, &ans)
	if resp.StatusCode == 507 {
		w.diskFull.Add(1)
	}
	switch {
	case resp.StatusCode == 200 && ans.OK && ans.Durable:
		return attemptOK, ans.Offset, ""
	case resp.StatusCode == 307 || resp.StatusCode >= 400 && resp.StatusCode < 500:
		return attemptRefused, 0, fmt.Sprintf("%d %s", resp.StatusCode, ans.Error)
	default:
		return attemptUnknown, 0, fmt.Sprintf("%d %s", resp.StatusCode, ans.Error)
	}
}

// reader reads single offsets near the end of the acknowledged log (and
// just past it) from the leader, until ctx ends.
func (w *workload) reader(ctx context.Context, id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	next := time.Now()
	for ctx.Err() == nil {
		next = w.wait(ctx, next)
		p := rng.IntN(w.partitions)
		known := w.known[p].Load()
		offset := known - 2 + int64(rng.IntN(4)) // around the end
		if rng.IntN(4) == 0 && known > 0 {
			offset = rng.Int64N(known) // anywhere
		}
		offset = max(offset, 0)
		op := Op{Process: id, Kind: OpRead, Partition: p, Offset: offset, Outcome: Fail, Call: w.now()}
		for _, i := range w.nodeOrder(rng) {
			value, found, status, err := w.read(i, p, offset, false)
			op.Node = w.c.nodes[i].name
			if err == nil && status == 200 {
				op.Outcome, op.Value, op.Found = OK, value, found
				w.hint.Store(int32(i))
				break
			}
			if err != nil {
				op.Error = err.Error()
			} else {
				op.Error = fmt.Sprint(status)
			}
			if status != 307 {
				break
			}
		}
		op.Return = w.now()
		w.record(op)
	}
}

// wait sleeps until next (a client's pace) and returns the time of the one
// after; a client that fell behind does not catch up in a burst.
func (w *workload) wait(ctx context.Context, next time.Time) time.Time {
	if w.pace <= 0 {
		return next
	}
	if d := time.Until(next); d > 0 {
		sleepCtx(ctx, d)
	}
	if floor := time.Now().Add(-w.pace); next.Before(floor) {
		next = floor
	}
	return next.Add(w.pace)
}

// consumePage is the part of a consume answer the suite reads.
type consumePage struct {
	Messages []struct {
		Offset int64  `json:"offset"`
		Value  string `json:"value"`
	} `json:"messages"`
	NextOffset int64 `json:"next_offset"`
}

// read reads the message at offset of partition p on node i (stale: the
// node's own applied data, without asking the leader).
func (w *workload) read(i, p int, offset int64, stale bool) (value string, found bool, status int, err error) {
	u := fmt.Sprintf("%s/broker/consume/%s/chaos-reader/%d?offset=%d&limit=1", w.c.nodes[i].url(), w.topic, p, offset)
	if stale {
		u += "&stale=1"
	}
	page, status, err := getPage(u)
	if err != nil || status != 200 {
		return "", false, status, err
	}
	if len(page.Messages) == 0 {
		return "", false, 200, nil
	}
	if m := page.Messages[0]; m.Offset != offset {
		// Offsets are dense: a message at another offset means o is missing.
		return fmt.Sprintf("<gap: offset %d answered with %d>", offset, m.Offset), true, 200, nil
	}
	return page.Messages[0].Value, true, 200, nil
}

func getPage(u string) (consumePage, int, error) {
	var page consumePage
	resp, err := do("GET", u, nil)
	if err != nil {
		return page, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return page, resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return page, resp.StatusCode, fmt.Errorf("chaos: consume answer: %w", err)
	}
	return page, 200, nil
}

// readAll reads partition p of topic on node i from offset 0 to its end
// (its own applied data), checking offsets are dense.
func (c *cluster) readAll(i int, topic string, p int) ([]string, error) {
	var keys []string
	for from := int64(0); ; {
		u := fmt.Sprintf("%s/broker/consume/%s/chaos-final/%d?offset=%d&limit=1000&stale=1", c.nodes[i].url(), topic, p, from)
		page, status, err := getPage(u)
		if err != nil {
			return nil, err
		}
		if status != 200 {
			return nil, fmt.Errorf("chaos: reading %s partition %d at %d: status %d", c.nodes[i].name, p, from, status)
		}
		if len(page.Messages) == 0 {
			return keys, nil
		}
		for _, m := range page.Messages {
			if m.Offset != int64(len(keys)) {
				return keys, fmt.Errorf("chaos: %s partition %d: offset %d follows %d: offsets are not dense", c.nodes[i].name, p, m.Offset, len(keys)-1)
			}
			keys = append(keys, m.Value)
		}
		from = page.NextOffset
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// commitGroups are the consumer groups the committers share.
var commitGroups = []string{"g0", "g1"}

// committer commits offsets at or below the acknowledged end of a
// partition for one of commitGroups (retried, as an append is, until
// acknowledged or given up), then reads the group's committed offset from
// the leader, until ctx ends. Several committers share the groups, so
// lower commits (ignored by Keel) race higher ones.
func (w *workload) committer(ctx context.Context, id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	next := time.Now()
	for ctx.Err() == nil {
		next = w.wait(ctx, next)
		g, p := commitGroups[rng.IntN(len(commitGroups))], rng.IntN(w.partitions)
		known := w.known[p].Load()
		if known == 0 {
			continue
		}
		off := max(0, known-rng.Int64N(50)) // at most the log end: known is one past an acknowledged offset
		op := Op{Process: id, Kind: OpCommit, Group: g, Partition: p, Offset: off, Call: w.now()}
		body := fmt.Sprintf(`{"topic":%q,"group":%q,"partition":%d,"offset":%d}`, w.topic, g, p, off)
		unknown := false
		for deadline := time.Now().Add(w.opBudget); time.Now().Before(deadline) && op.Outcome != OK && ctx.Err() == nil; {
			for _, i := range w.nodeOrder(rng) {
				op.Attempts++
				op.Node = w.c.nodes[i].name
				res, note := w.commit(i, body)
				if res == attemptOK {
					op.Outcome, op.Error = OK, ""
					w.hint.Store(int32(i))
					break
				}
				op.Error = note
				if res == attemptUnknown {
					unknown = true
					w.hint.CompareAndSwap(int32(i), int32((i+1)%len(w.c.nodes)))
					break
				}
			}
			if op.Outcome != OK {
				sleepCtx(ctx, time.Duration(20+rng.IntN(80))*time.Millisecond)
			}
		}
		op.Return = w.now()
		if op.Outcome != OK {
			op.Outcome = Fail
			if unknown {
				op.Outcome = Unknown
			}
		}
		w.record(op)

		rd := Op{Process: id, Kind: OpReadCommit, Group: g, Partition: p, Outcome: Fail, Call: w.now()}
		for _, i := range w.nodeOrder(rng) {
			c, status, err := w.committed(i, g, p, false)
			rd.Node = w.c.nodes[i].name
			if err == nil && status == 200 {
				rd.Outcome, rd.Offset = OK, c
				break
			}
			if status != 307 {
				break
			}
		}
		rd.Return = w.now()
		w.record(rd)
	}
}

// commit sends one attempt of a commit to node i.
func (w *workload) commit(i int, body string) (attempt, string) {
	resp, err := do("POST", w.c.nodes[i].url()+"/broker/commit?timeout_ms=2000", strings.NewReader(body))
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return attemptRefused, "connection refused"
		}
		return attemptUnknown, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ans struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &ans)
	switch {
	case resp.StatusCode == 200 && ans.OK:
		return attemptOK, ""
	case resp.StatusCode == 307 || resp.StatusCode >= 400 && resp.StatusCode < 500:
		return attemptRefused, fmt.Sprintf("%d %s", resp.StatusCode, ans.Error)
	default:
		return attemptUnknown, fmt.Sprintf("%d %s", resp.StatusCode, ans.Error)
	}
}

// committed reads group g's committed offset of partition p on node i
// (-1 for none; stale: the node's own applied data).
func (w *workload) committed(i int, g string, p int, stale bool) (int64, int, error) {
	u := fmt.Sprintf("%s/broker/consume/%s/%s/%d?limit=1", w.c.nodes[i].url(), w.topic, url.PathEscape(g), p)
	if stale {
		u += "&stale=1"
	}
	resp, err := do("GET", u, nil)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return 0, resp.StatusCode, nil
	}
	var ans struct {
		Committed *int64 `json:"committed_offset"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return 0, 200, fmt.Errorf("chaos: consume answer: %w", err)
	}
	if ans.Committed == nil {
		return -1, 200, nil
	}
	return *ans.Committed, 200, nil
}

package main

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRetentionKill9 kills the server with SIGKILL while producers write,
// the retention sweep trims one partition by size every 100 ms and a
// client moves the start of another with delete-before, and checks after
// every restart that:
//   - the log start never moved below one a delete-before acknowledged;
//   - every acknowledged write at or above the start reads back at its
//     offset with the same bytes, and offsets from the start are dense;
//   - the policy survives, and the size-bounded partition's files stay
//     within a few segments of its bound (the sweep and the janitor ran).
func TestRetentionKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const (
		cycles      = 4
		segment     = 128 << 10
		sizeBound   = 512 << 10
		valuePad    = 200
		topicCreate = `{"name":"ret","partitions":2}`
	)
	bin := buildBinary(t)
	data := t.TempDir()
	port := freePort(t)
	opts := keelOpts{args: []string{"--segment-bytes", fmt.Sprint(segment), "--max-message-bytes", "16384", "--max-kv-value-bytes", "16384", "--retention-interval", "100ms"}}
	p := startKeelOpts(t, bin, data, port, opts)
	if _, code, err := call("POST", p.url+"/broker/topics", topicCreate); err != nil || code != 200 {
		t.Fatalf("create topic: %d %v", code, err)
	}
	if m, code, err := call("POST", p.url+"/broker/retention", fmt.Sprintf(`{"topic":"ret","partition":0,"max_bytes":%d}`, sizeBound)); err != nil || code != 200 {
		t.Fatalf("retention: %d %v %v", code, m, err)
	}
	var (
		mu       sync.Mutex
		acks     = map[[2]int]string{} // (partition, offset) → value
		ackStart uint64                // highest log start a delete-before on partition 1 acknowledged
	)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for cycle := range cycles {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					part := (g + i) % 2
					value := fmt.Sprintf("c%d-g%d-%d-%s", cycle, g, i, strings.Repeat("r", valuePad))
					m, code, err := call("POST", fmt.Sprintf("%s/broker/topics/ret/produce?partition=%d", p.url, part), value)
					if err != nil || code != 200 || m["durable"] != true {
						continue
					}
					mu.Lock()
					acks[[2]int{part, int(m["offset"].(float64))}] = value
					mu.Unlock()
				}
			}()
		}
		wg.Add(1)
		go func() { // delete-before on partition 1, up to half of what was acknowledged
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(30 * time.Millisecond):
				}
				mu.Lock()
				top := 0
				for k := range acks {
					if k[0] == 1 && k[1] > top {
						top = k[1]
					}
				}
				mu.Unlock()
				m, code, err := call("POST", p.url+"/broker/delete-before", fmt.Sprintf(`{"topic":"ret","partition":1,"before_offset":%d}`, top/2))
				if err != nil || code != 200 {
					continue
				}
				mu.Lock()
				ackStart = max(ackStart, uint64(m["log_start_offset"].(float64)))
				mu.Unlock()
			}
		}()
		time.Sleep(time.Duration(800+rng.Intn(700)) * time.Millisecond)
		p.kill9(t)
		close(stop)
		wg.Wait()
		p = startKeelOpts(t, bin, data, port, opts)

		d, code, err := call("GET", p.url+"/broker/topics/ret", "")
		if err != nil || code != 200 {
			t.Fatalf("cycle %d: describe: %d %v", cycle, code, err)
		}
		parts := d["partition_info"].([]any)
		pol := parts[0].(map[string]any)["retention"].(map[string]any)
		if pol["max_bytes"].(float64) != sizeBound {
			t.Fatalf("cycle %d: partition 0's policy after restart: %v", cycle, pol)
		}
		start1 := uint64(parts[1].(map[string]any)["log_start_offset"].(float64))
		if start1 < ackStart {
			t.Fatalf("cycle %d: partition 1 starts at %d after restart, below the acknowledged delete-before %d", cycle, start1, ackStart)
		}
		for part := range 2 {
			start := uint64(parts[part].(map[string]any)["log_start_offset"].(float64))
			got := readPartitionFrom(t, p.url, "ret", part, start)
			mu.Lock()
			checked := 0
			for k, v := range acks {
				if k[0] != part || uint64(k[1]) < start {
					continue
				}
				if got[uint64(k[1])] != v {
					mu.Unlock()
					t.Fatalf("cycle %d: acknowledged %d/%d = %.30q reads back as %.30q (start %d)", cycle, part, k[1], v, got[uint64(k[1])], start)
				}
				checked++
			}
			mu.Unlock()
			t.Logf("cycle %d: partition %d starts at %d, %d records, %d acknowledged checked", cycle, part, start, len(got), checked)
		}
		// The sweep runs again after the restart; the janitor frees the files.
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := dirSize(t, filepath.Join(data, "topics", "ret", "0"))
			if n <= sizeBound+3*segment {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: partition 0 holds %d bytes on disk, bound %d + 3 segments of %d", cycle, n, sizeBound, segment)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("clean shutdown after SIGTERM: %v\n%s", err, p.log())
	}
}

// readPartitionFrom reads a partition from start to its end, checking that
// offsets are dense.
func readPartitionFrom(t *testing.T, url, topic string, part int, start uint64) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	next := start
	for range 100_000 {
		m, code, err := call("GET", fmt.Sprintf("%s/broker/consume/%s/check/%d?offset=%d&limit=1000", url, topic, part, next), "")
		if err != nil || code != 200 {
			t.Fatalf("consume %d/%d at %d: %d %v", part, part, next, code, err)
		}
		msgs := m["messages"].([]any)
		if len(msgs) == 0 {
			return out
		}
		for _, raw := range msgs {
			msg := raw.(map[string]any)
			off := uint64(msg["offset"].(float64))
			if off != next {
				t.Fatalf("partition %d: offset %d where %d was expected (not dense)", part, off, next)
			}
			out[off] = msg["value"].(string)
			next++
		}
	}
	t.Fatal("partition read did not end")
	return nil
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

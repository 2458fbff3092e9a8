package main

import (
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCompactionKill9 kills the server with SIGKILL while writers
// overwrite keys of a compacted topic and compaction runs every 200 ms,
// and checks after every restart that each key's newest acknowledged
// record (or the write in flight when the server died) is the key's last
// record in the log, at its offset, that offsets only grow, and that
// compaction ran and the partition holds far less than was written.
func TestCompactionKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const cycles, writers, keysPerWriter, pad = 4, 4, 10, 300
	bin := buildBinary(t)
	data := t.TempDir()
	port := freePort(t)
	opts := keelOpts{args: []string{"--segment-bytes", "131072", "--max-message-bytes", "16384", "--max-kv-value-bytes", "16384", "--compaction-interval", "200ms"}}
	p := startKeelOpts(t, bin, data, port, opts)
	if m, code, err := call("POST", p.url+"/broker/topics", `{"name":"cmp","partitions":1,"cleanup":"compact"}`); err != nil || code != 200 {
		t.Fatalf("create topic: %d %v %v", code, m, err)
	}
	type state struct {
		value, pending string
		offset         int
	}
	var mu sync.Mutex
	keys := map[string]*state{}
	written := 0
	compacted := 0.0
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for cycle := range cycles {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					key := fmt.Sprintf("w%d-k%d", g, i%keysPerWriter)
					value := fmt.Sprintf("c%d-%d-%s", cycle, i, strings.Repeat("x", pad))
					mu.Lock()
					st := keys[key]
					if st == nil {
						st = &state{offset: -1}
						keys[key] = st
					}
					st.pending = value
					mu.Unlock()
					m, code, err := call("POST", fmt.Sprintf("%s/broker/topics/cmp/produce?partition=0&key=%s", p.url, key), value)
					if err != nil || code != 200 || m["durable"] != true {
						return // the server died: the write may or may not have been stored
					}
					mu.Lock()
					st.value, st.pending, st.offset = value, "", int(m["offset"].(float64))
					written += len(value)
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(1200+rng.Intn(800)) * time.Millisecond)
		compacted += metric(t, p.url, "keel_compaction_segments_total")
		p.kill9(t)
		close(stop)
		wg.Wait()
		p = startKeelOpts(t, bin, data, port, opts)

		// The whole partition, paging by next_offset over the holes.
		last := map[string]int{}
		values := map[int]string{}
		prev, next := -1, 0
		for range 100_000 {
			m, code, err := call("GET", fmt.Sprintf("%s/broker/consume/cmp/check/0?offset=%d&limit=1000", p.url, next), "")
			if err != nil || code != 200 {
				t.Fatalf("cycle %d: consume at %d: %d %v", cycle, next, code, err)
			}
			msgs := m["messages"].([]any)
			for _, raw := range msgs {
				msg := raw.(map[string]any)
				off := int(msg["offset"].(float64))
				if off <= prev {
					t.Fatalf("cycle %d: offset %d after %d", cycle, off, prev)
				}
				prev = off
				last[msg["key"].(string)] = off
				values[off] = msg["value"].(string)
			}
			n := int(m["next_offset"].(float64))
			if len(msgs) == 0 || n <= next {
				break
			}
			next = n
		}
		mu.Lock()
		for key, st := range keys {
			off, ok := last[key]
			switch {
			case ok && off == st.offset && values[off] == st.value:
			case ok && st.pending != "" && off > st.offset && values[off] == st.pending:
				st.value, st.offset = st.pending, off // the write in flight was stored
			case st.offset < 0 && !ok:
			default:
				mu.Unlock()
				t.Fatalf("cycle %d: key %s: last record at %d (%.20q), acknowledged %d (%.20q), in flight %.20q",
					cycle, key, off, values[off], st.offset, st.value, st.pending)
			}
			st.pending = ""
		}
		t.Logf("cycle %d: %d keys checked, %d records readable, end %d", cycle, len(keys), len(values), prev+1)
		mu.Unlock()
	}
	if compacted == 0 {
		t.Fatal("compaction never rewrote a segment")
	}
	stored := dirSize(t, data+"/topics/cmp/0")
	if int(stored) > written/2 {
		t.Fatalf("the compacted partition holds %d bytes of %d written", stored, written)
	}
	t.Logf("%d bytes written, %d on disk, %.0f segments compacted before the kills", written, stored, compacted)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("clean shutdown after SIGTERM: %v\n%s", err, p.log())
	}
}

// metric reads one unlabeled sample of /metrics.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

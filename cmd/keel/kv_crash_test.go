package main

import (
	"encoding/base64"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKVKill9 kills the server with SIGKILL while writers put keys and
// increment a counter by compare-and-set, and checks after every restart
// that every acknowledged put is there (or the one in flight when the
// server died, which may or may not have applied), that no cas moved
// back, and that the counter holds every acknowledged increment.
func TestKVKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const cycles, writers, keysPerWriter = 4, 6, 20
	bin := buildBinary(t)
	data := t.TempDir()
	port := freePort(t)
	p := startKeelOpts(t, bin, data, port, keelOpts{})
	type state struct {
		value, pending string
		cas            uint64
	}
	var mu sync.Mutex
	keys := map[string]*state{}
	counterAcked, counterInFlight := 0, 0
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
					key := fmt.Sprintf("w%d/k%d", g, i%keysPerWriter)
					value := fmt.Sprintf("c%d-g%d-%d", cycle, g, i)
					mu.Lock()
					st := keys[key]
					if st == nil {
						st = &state{}
						keys[key] = st
					}
					st.pending = value
					mu.Unlock()
					m, code, err := call("POST", p.url+"/kv/crash/"+key, value)
					if err != nil || code != 200 {
						return // the server died: this put may or may not have applied
					}
					mu.Lock()
					st.value, st.pending, st.cas = value, "", uint64(m["cas"].(float64))
					mu.Unlock()
				}
			}()
		}
		for range 2 { // counter incrementers: read, then put with the cas read
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					m, code, err := call("GET", p.url+"/kv/crash/counter", "")
					if err != nil {
						return
					}
					n, cas := 0, uint64(0)
					if code == 200 {
						raw, _ := base64.StdEncoding.DecodeString(m["value"].(string))
						n, _ = strconv.Atoi(string(raw))
						cas = uint64(m["cas"].(float64))
					}
					mu.Lock()
					counterInFlight++
					mu.Unlock()
					_, code, err = call("POST", fmt.Sprintf("%s/kv/crash/counter?cas=%d", p.url, cas), strconv.Itoa(n+1))
					mu.Lock()
					if err == nil {
						counterInFlight--
						if code == 200 {
							counterAcked++
						}
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(300+rng.Intn(700)) * time.Millisecond)
		p.kill9(t)
		close(stop)
		wg.Wait()
		p = startKeelOpts(t, bin, data, port, keelOpts{})
		mu.Lock()
		for key, st := range keys {
			m, code, err := call("GET", p.url+"/kv/crash/"+key, "")
			if err != nil {
				t.Fatalf("cycle %d: get %s: %v", cycle, key, err)
			}
			got := ""
			var cas uint64
			if code == 200 {
				raw, _ := base64.StdEncoding.DecodeString(m["value"].(string))
				got, cas = string(raw), uint64(m["cas"].(float64))
			}
			switch {
			case got == st.value && cas == st.cas:
			case st.pending != "" && got == st.pending && cas == st.cas+1:
				st.value, st.cas = got, cas // the put in flight applied
			default:
				t.Fatalf("cycle %d: %s = %q cas %d; acknowledged %q cas %d, in flight %q", cycle, key, got, cas, st.value, st.cas, st.pending)
			}
			st.pending = ""
		}
		m, code, err := call("GET", p.url+"/kv/crash/counter", "")
		if err != nil || code != 200 && counterAcked > 0 {
			t.Fatalf("cycle %d: counter: %d %v", cycle, code, err)
		}
		n := 0
		if code == 200 {
			raw, _ := base64.StdEncoding.DecodeString(m["value"].(string))
			n, _ = strconv.Atoi(string(raw))
		}
		if n < counterAcked || n > counterAcked+counterInFlight {
			t.Fatalf("cycle %d: counter %d; %d increments acknowledged, %d in flight", cycle, n, counterAcked, counterInFlight)
		}
		counterAcked, counterInFlight = n, 0
		t.Logf("cycle %d: %d keys checked, counter %d", cycle, len(keys), n)
		mu.Unlock()
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("clean shutdown after SIGTERM: %v\n%s", err, p.log())
	}
}

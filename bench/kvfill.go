package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// KVFill is one measurement of the KV store's memory and restart with
// many keys.
type KVFill struct {
	Keys          int64   `json:"keys"`
	ValueBytes    int     `json:"value_bytes"`
	LoadSec       float64 `json:"load_s"`
	PutsPerS      float64 `json:"puts_per_s"`
	RSSLoadedMB   float64 `json:"rss_loaded_mb"`    // resident set after the load, idle
	PeakRSSLoadMB float64 `json:"peak_rss_load_mb"` // peak during the load
	DataMB        float64 `json:"data_mb"`          // the data directory on disk
	ReadySec      float64 `json:"to_ready_s"`       // after kill -9
	RSSRestartMB  float64 `json:"rss_restart_mb"`   // resident set once ready again
}

// KVFillRun starts binary on a fresh data directory, puts Keys keys with
// values of ValueBytes (Connections at a time, every put durable), reads
// the server's resident set size, kills it with SIGKILL, starts it again
// and times how long until /ready answers and a key reads back.
type KVFillRun struct {
	Binary      string
	Port        int
	Keys        int64
	ValueBytes  int
	Connections int
	Progress    *Progress
}

const kvFillNS = "bench-kv-fill"

// Run performs the measurement. The server is always stopped on return.
func (r KVFillRun) Run() (KVFill, error) {
	data, err := os.MkdirTemp("", "keel-bench-kvfill")
	if err != nil {
		return KVFill{}, err
	}
	defer os.RemoveAll(data)
	target := fmt.Sprintf("http://127.0.0.1:%d", r.Port)
	c := NewClient(target, "dev")
	srv, err := r.start(data)
	if err != nil {
		return KVFill{}, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	if _, err := c.WaitReady(time.Minute); err != nil {
		return KVFill{}, err
	}
	res := KVFill{Keys: r.Keys, ValueBytes: r.ValueBytes}
	value := make([]byte, r.ValueBytes)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	var next atomic.Int64
	load := Load{Target: target, Token: "dev", Connections: r.Connections, Duration: DurationMax, Total: r.Keys,
		Next: func(int, int) Request {
			return Request{Method: "POST", Path: fmt.Sprintf("/kv/%s/key-%09d", kvFillNS, next.Add(1)-1), Body: value, Check: durableCheck(1)}
		}}
	if r.Progress != nil {
		expect := time.Duration(r.Keys/15_000) * time.Second
		load.Progress = func(d time.Duration) { r.Progress.Update("kv fill: load", d, max(expect, d)) }
	}
	lr, err := Run(load)
	if err != nil {
		return res, err
	}
	if lr.Errors > 0 {
		return res, fmt.Errorf("bench: kv fill: %d errors, first: %s", lr.Errors, lr.FirstError)
	}
	res.LoadSec = lr.Elapsed.Seconds()
	res.PutsPerS = float64(r.Keys) / res.LoadSec
	res.PeakRSSLoadMB = peakRSSMB(srv.Process.Pid)
	time.Sleep(2 * time.Second) // let the collector settle
	res.RSSLoadedMB = rssMB(srv.Process.Pid)
	res.DataMB = float64(dirBytes(data)) / (1 << 20)
	srv.Process.Signal(syscall.SIGKILL)
	srv.Wait()

	start := time.Now()
	if srv, err = r.start(data); err != nil {
		return res, err
	}
	if _, err := c.WaitReady(5 * time.Minute); err != nil {
		return res, err
	}
	res.ReadySec = time.Since(start).Seconds()
	last := fmt.Sprintf("/kv/%s/key-%09d", kvFillNS, r.Keys-1)
	if status, body, err := c.do("GET", last, nil); err != nil || status != 200 {
		return res, fmt.Errorf("bench: kv fill: the last key is not readable after restart: %d %v %s", status, err, truncate(body, 200))
	}
	res.RSSRestartMB = rssMB(srv.Process.Pid)
	return res, nil
}

func (r KVFillRun) start(data string) (*exec.Cmd, error) { return startServe(r.Binary, r.Port, data) }

// rssMB reads the current resident set size (VmRSS) of a process.
func rssMB(pid int) float64 { return procStatusMB(pid, "VmRSS:") }

func procStatusMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func dirBytes(dir string) int64 {
	var n int64
	var walk func(string)
	walk = func(d string) {
		entries, err := os.ReadDir(d)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.IsDir() {
				walk(d + "/" + e.Name())
			} else if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
	}
	walk(dir)
	return n
}

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Restart is one restart-after-kill-9 measurement.
type Restart struct {
	Name             string  `json:"name"`
	Messages         int64   `json:"messages"`
	LoadSec          float64 `json:"load_s"`
	ReadySec         float64 `json:"to_ready_s"`
	ReadableSec      float64 `json:"last_offset_readable_s"`
	PeakRSSLoadMB    float64 `json:"peak_rss_load_mb"`
	PeakRSSRestartMB float64 `json:"peak_rss_restart_mb"`
}

// RestartRun starts binary on a fresh data directory, stores messages
// 64-byte messages with NDJSON (1000 per request, connections at a time),
// kills the server with SIGKILL, starts it again and times how long until
// /ready answers and until the last offset is readable.
type RestartRun struct {
	Binary      string
	Port        int
	Messages    int64
	Connections int
	Progress    *Progress
}

const restartTopic = "bench-restart"

// Run performs the measurement. The server is always stopped on return.
func (r RestartRun) Run() (Restart, error) {
	data, err := os.MkdirTemp("", "keel-bench-restart")
	if err != nil {
		return Restart{}, err
	}
	defer os.RemoveAll(data)
	target := fmt.Sprintf("http://127.0.0.1:%d", r.Port)
	c := NewClient(target, "dev")
	srv, err := r.start(data)
	if err != nil {
		return Restart{}, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	if _, err := c.WaitReady(time.Minute); err != nil {
		return Restart{}, err
	}
	if err := c.CreateTopic(restartTopic, 1); err != nil {
		return Restart{}, err
	}
	res := Restart{Name: fmt.Sprintf("%dM messages", r.Messages/1_000_000), Messages: r.Messages}
	if r.Messages < 1_000_000 {
		res.Name = fmt.Sprintf("%dK messages", r.Messages/1000)
	}
	body := ndjsonBody(1000, 64)
	load := Load{Target: target, Token: "dev", Connections: r.Connections, Duration: DurationMax, Total: r.Messages / 1000,
		Next: func(int, int) Request {
			return Request{Method: "POST", Path: "/broker/topics/" + restartTopic + "/produce-ndjson?partition=0", Body: body, Check: durableCheck(1000)}
		}}
	if r.Progress != nil {
		expect := time.Duration(r.Messages/200_000) * time.Second
		load.Progress = func(d time.Duration) { r.Progress.Update("restart: load", d, max(expect, d)) }
	}
	lr, err := Run(load)
	if err != nil {
		return res, err
	}
	if lr.Errors > 0 {
		return res, fmt.Errorf("bench: loading for the restart run: %d errors, first: %s", lr.Errors, lr.FirstError)
	}
	res.LoadSec = lr.Elapsed.Seconds()
	res.PeakRSSLoadMB = peakRSSMB(srv.Process.Pid)
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
	last := strconv.FormatInt(r.Messages-1, 10)
	status, page, err := c.do("GET", "/broker/consume/"+restartTopic+"/bench/0?limit=1&offset="+last, nil)
	if err != nil || status != 200 || !strings.Contains(string(page), `"offset":`+last+`,`) {
		return res, fmt.Errorf("bench: offset %s not readable after restart: %d %v %s", last, status, err, truncate(page, 200))
	}
	res.ReadableSec = time.Since(start).Seconds()
	res.PeakRSSRestartMB = peakRSSMB(srv.Process.Pid)
	return res, nil
}

func (r RestartRun) start(data string) (*exec.Cmd, error) { return startServe(r.Binary, r.Port, data) }

// startServe starts binary as a node on port with data, logging warnings
// and errors only.
func startServe(binary string, port int, data string) (*exec.Cmd, error) {
	cmd := exec.Command(binary, "serve", "--port", strconv.Itoa(port), "--data", data, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", binary, err)
	}
	return cmd, nil
}

// peakRSSMB reads the peak resident set size (VmHWM) of a process.
func peakRSSMB(pid int) float64 { return procStatusMB(pid, "VmHWM:") }

// LoadNDJSON stores messages 64-byte messages in partition 0 of topic on
// target with NDJSON (1000 per request, connections at a time), every
// batch durable, and returns how long it took.
func LoadNDJSON(target, topic string, messages int64, connections int) (time.Duration, error) {
	body := ndjsonBody(1000, 64)
	load := Load{Target: target, Token: "dev", Connections: connections, Duration: DurationMax, Total: messages / 1000,
		Next: func(int, int) Request {
			return Request{Method: "POST", Path: "/broker/topics/" + topic + "/produce-ndjson?partition=0&timeout_ms=60000", Body: body, Check: durableCheck(1000)}
		}}
	lr, err := Run(load)
	if err != nil {
		return 0, err
	}
	if lr.Errors > 0 {
		return lr.Elapsed, fmt.Errorf("bench: loading %d messages: %d errors, first: %s", messages, lr.Errors, lr.FirstError)
	}
	return lr.Elapsed, nil
}

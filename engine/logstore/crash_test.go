package logstore

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"keel/engine/record"
	"keel/ring"
)

// The crash test runs this test binary again as a child process that appends
// through a Writer from many goroutines and prints one line per record once
// Append has returned (so the record is acknowledged durable):
//
//	ack <offset> <payload hex>
//
// The parent kills it with SIGKILL at a random moment, then checks the log.
const (
	envCrashChild   = "KEEL_ENGINE_CRASH_CHILD_DIR"
	crashWriters    = 16
	crashChildLimit = 20 * time.Second // the child stops by itself even if never killed
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envCrashChild); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}

func crashConfig() LogConfig {
	return LogConfig{SegmentBytes: 256 << 10, IndexIntervalBytes: 1024, MarkIntervalBytes: 64 << 10, BatchBytesMax: 64 << 10}
}

func crashChild(dir string) int {
	io, err := ring.Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	l, err := OpenLog(dir, io, crashConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	w := NewWriter(l)
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	deadline := time.Now().Add(crashChildLimit)
	var wg sync.WaitGroup
	for g := 0; g < crashWriters; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(os.Getpid())*100 + int64(g)))
			for i := 0; time.Now().Before(deadline); i++ {
				n := 1 + rng.Intn(3)
				recs := make([]Record, n)
				for k := range recs {
					p := make([]byte, 16+rng.Intn(100))
					rng.Read(p)
					recs[k] = Record{Type: RecordMessage, Payload: p}
				}
				res, err := w.Append(recs)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				outMu.Lock()
				for k, r := range recs {
					fmt.Fprintf(out, "ack %d %s\n", res.First+uint64(k), hex.EncodeToString(r.Payload))
				}
				out.Flush() // the parent must see an ack as soon as it is given
				outMu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	return 0
}

// TestCrashKill9 kills a writing child process five times at random
// moments. After each kill it also appends a torn partial frame to the
// active segment (what a power loss in the middle of a write leaves). Every
// acknowledged record must then read back with identical bytes at its
// offset, offsets must be dense, and at least the torn bytes must be cut.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test spawns processes")
	}
	for _, kind := range backendKinds(t) {
		t.Run(string(kind), func(t *testing.T) { crashCycles(t, kind, 5) })
	}
}

func crashCycles(t *testing.T, kind ring.Kind, cycles int) {
	dir := t.TempDir()
	acked := map[uint64][]byte{}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for c := 0; c < cycles; c++ {
		n := runAndKill(t, dir, kind, acked, time.Duration(20+rng.Intn(200))*time.Millisecond)
		torn := appendTornFrame(t, dir, rng)
		l, err := OpenLog(dir, openBackend(t, "syscall"), crashConfig())
		if err != nil {
			t.Fatalf("cycle %d: recovery failed: %v", c, err)
		}
		rep := l.Recovery()
		// SIGKILL can also stop a pwritev part-way (never acknowledged), so
		// the cut may be longer than the frame the test appended.
		if rep.CutBytes < int64(torn) {
			t.Fatalf("cycle %d: cut %d bytes, the torn frame alone was %d", c, rep.CutBytes, torn)
		}
		got := readAll(t, l, 0) // checks density
		for off, want := range acked {
			if !bytes.Equal(got[off], want) {
				t.Fatalf("cycle %d: acknowledged offset %d lost or changed", c, off)
			}
		}
		if uint64(len(got)) != l.NextOffset() {
			t.Fatalf("cycle %d: %d records readable, NextOffset %d", c, len(got), l.NextOffset())
		}
		t.Logf("cycle %d: %d acks this run, %d acked in all, %d records stored, %d torn bytes cut",
			c, n, len(acked), len(got), rep.CutBytes)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// runAndKill starts the child, lets it write for about `after` once it has
// acknowledged something, kills it with SIGKILL and records its acks.
func runAndKill(t *testing.T, dir string, kind ring.Kind, acked map[uint64][]byte, after time.Duration) int {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashChild+"="+dir, ring.EnvBackend+"="+string(kind))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<16), 1<<16)
	killed := make(chan struct{})
	count := 0
	for lines.Scan() {
		if count == 0 {
			time.AfterFunc(after, func() { _ = cmd.Process.Signal(syscall.SIGKILL); close(killed) })
		}
		off, payload := parseAck(t, lines.Text())
		if prev, ok := acked[off]; ok && !bytes.Equal(prev, payload) {
			t.Fatalf("offset %d acknowledged twice with different payloads", off)
		}
		acked[off] = payload
		count++
	}
	err = cmd.Wait()
	if count == 0 {
		t.Fatalf("child acknowledged nothing: %v\n%s", err, stderr.String())
	}
	<-killed
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed by the signal: %v\n%s", err, stderr.String())
	}
	return count
}

func parseAck(t *testing.T, line string) (uint64, []byte) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ack" {
		t.Fatalf("bad child line %q", line)
	}
	off, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	p, err := hex.DecodeString(f[2])
	if err != nil {
		t.Fatal(err)
	}
	return off, p
}

// appendTornFrame appends the first part of a plausible next frame to the
// last segment and returns how many bytes it appended.
func appendTornFrame(t *testing.T, dir string, rng *rand.Rand) int {
	segs, err := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segments: %v", err)
	}
	frame := record.AppendFrame(nil, Frame{Type: RecordMessage, Batch: 1 << 31, Offset: 1 << 40, Payload: make([]byte, 200)})
	torn := frame[:8+rng.Intn(len(frame)-16)]
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	return len(torn)
}

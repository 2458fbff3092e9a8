package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The command line against a real node (issue 15): a file produced and
// consumed back byte for byte, follow mode seeing a new message, group
// lag shown, the exit codes; then keel verify on the node's files, clean
// and damaged.
func TestCLIEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	data := t.TempDir()
	p := startKeel(t, bin, data, freePort(t))
	keel := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KEEL_URL="+p.url, "KEEL_TOKEN=dev")
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	if _, e, code := keel("", "topics", "create", "ev", "--partitions", "2"); code != 0 {
		t.Fatalf("create: %d %s", code, e)
	}
	// A file of 5,000 lines, some of them shapes NDJSON would change.
	rng := rand.New(rand.NewSource(1))
	var file bytes.Buffer
	for i := range 5000 {
		switch i % 7 {
		case 0:
			fmt.Fprintf(&file, "\"quoted %d\"\n", i)
		case 1:
			fmt.Fprintf(&file, "carriage return %d\r\n", i)
		case 2:
			b := make([]byte, 20)
			rng.Read(b)
			file.Write(bytes.ReplaceAll(b, []byte{'\n'}, []byte{'x'}))
			file.WriteByte('\n')
		default:
			fmt.Fprintf(&file, `{"n":%d,"s":"line %d"}`+"\n", i, i)
		}
	}
	path := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(path, file.Bytes(), 0o644)
	_, e, code := keel("", "produce", "ev", "--partition", "1", "--file", path, "--batch", "700", "--idempotency-key", "load-1")
	if code != 0 || !strings.Contains(e, "produced 5000 messages") || !strings.Contains(e, "partition 1: offsets 0..4999") {
		t.Fatalf("produce: %d %s", code, e)
	}
	// The same command again stores nothing twice (idempotency keys per batch).
	if _, e, code := keel("", "produce", "ev", "--partition", "1", "--file", path, "--batch", "700", "--idempotency-key", "load-1"); code != 0 {
		t.Fatalf("produce again: %d %s", code, e)
	}
	out, e, code := keel("", "consume", "ev", "--partition", "1", "--from", "start")
	if code != 0 || out != file.String() {
		t.Fatalf("consume: exit %d, %d bytes back of %d (equal %v) %s", code, len(out), file.Len(), out == file.String(), e)
	}
	out, _, _ = keel("", "topics", "describe", "ev")
	if !strings.Contains(out, "5000") || strings.Contains(out, "10000") {
		t.Fatalf("describe after the second produce (5000 messages expected once):\n%s", out)
	}
	// Follow mode sees a message produced after it started.
	follow := exec.Command(bin, "consume", "ev", "--partition", "0", "--follow", "--from", "end", "--format", "json")
	follow.Env = append(os.Environ(), "KEEL_URL="+p.url)
	stdout, _ := follow.StdoutPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Signal(syscall.SIGKILL); follow.Wait() }()
	time.Sleep(300 * time.Millisecond)
	keel("news\n", "produce", "ev", "--partition", "0")
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
	}()
	select {
	case l := <-line:
		if !strings.Contains(l, `"value":"news"`) {
			t.Fatalf("follow printed %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow mode did not print the new message")
	}
	// Group lag: a group that committed 100 of partition 1.
	if _, e, code := keel("", "consume", "ev", "--group", "g", "--partition", "1", "--from", "start", "-n", "100", "--commit"); code != 0 {
		t.Fatalf("consume --commit: %d %s", code, e)
	}
	out, _, _ = keel("", "groups", "describe", "g")
	if !strings.Contains(out, "lag 4901") || !strings.Contains(out, "99") {
		t.Fatalf("groups describe:\n%s", out)
	}
	// Exit codes: refused 1, usage 2, unreachable 3.
	if _, e, code := keel("", "topics", "describe", "nope"); code != 1 || !strings.Contains(e, "unknown_topic") {
		t.Fatalf("unknown topic: %d %s", code, e)
	}
	if _, _, code := keel("", "consume"); code != 2 {
		t.Fatalf("consume without a topic: %d", code)
	}
	if _, _, code := keel("", "topics", "list", "--url", "http://127.0.0.1:1"); code != 3 {
		t.Fatalf("unreachable: %d", code)
	}
	if out, _, code := keel("", "ready"); code != 0 || out != "ready\n" {
		t.Fatalf("ready: %d %q", code, out)
	}

	// keel verify: clean after a clean stop, damaged after a flipped byte.
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	out, e, code = run2(bin, "verify", "--data", data)
	if code != 0 || !strings.Contains(out, "verify: clean") || !strings.Contains(out, "topics/ev/1/") {
		t.Fatalf("verify of a clean stop: %d\n%s%s", code, out, e)
	}
	seg := filepath.Join(data, "topics", "ev", "1", "00000000000000000000.log")
	b, _ := os.ReadFile(seg)
	b[len(b)/2] ^= 0x40
	os.WriteFile(seg, b, 0o644)
	out, _, code = run2(bin, "verify", "--data", data)
	if code != 1 || !strings.Contains(out, "DAMAGED") || !strings.Contains(out, "topics/ev/1/00000000000000000000.log: byte") {
		t.Fatalf("verify of a damaged segment: %d\n%s", code, out)
	}
}

func run2(bin string, args ...string) (string, string, int) {
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	}
	return out.String(), errb.String(), 0
}

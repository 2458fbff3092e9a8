package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestReadmeQuickStart runs every command line of the README's quick-start
// block against a real server, in order, and checks that each answers 200
// with an ok or messages body.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real process")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	lines := quickStartCommands(t)
	if len(lines) < 6 {
		t.Fatalf("found %d commands in the README quick start", len(lines))
	}
	port := freePort(t)
	p := startKeel(t, buildBinary(t), t.TempDir(), port)
	defer func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	}()
	for _, line := range lines {
		cmdline := strings.ReplaceAll(line, "localhost:1109", fmt.Sprintf("127.0.0.1:%d", port)) + ` -w '\n%{http_code}'`
		out, err := exec.Command("sh", "-c", cmdline).CombinedOutput()
		if err != nil {
			t.Fatalf("%s\n%v\n%s", line, err, out)
		}
		body, status, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if status != "200" || !(strings.Contains(body, `"ok":true`) || strings.Contains(body, `"messages":[{`)) {
			t.Fatalf("%s\nstatus %s: %s", line, status, body)
		}
	}
}

// quickStartCommands returns the non-comment lines of the first sh block
// after "## Quick start".
func quickStartCommands(t *testing.T) []string {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	section, block := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section = line == "## Quick start"
		case section && strings.HasPrefix(line, "```sh"):
			block = true
		case block && strings.HasPrefix(line, "```"):
			return out
		case block && line != "" && !strings.HasPrefix(line, "#"):
			out = append(out, line)
		}
	}
	return out
}

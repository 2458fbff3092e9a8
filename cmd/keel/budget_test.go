package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultBudget(t *testing.T) {
	cases := []struct {
		nofile                          int
		conns, sealed, partitions, need int
	}{
		{1024, 256, 128, 576, 1024},
		{20000, 5000, 1024, 13912, 20000},
		{256, 64, 32, 96, 256},
		{1 << 20, 10000, 1024, 1_000_000, 1_011_088},
	}
	for _, c := range cases {
		b := defaultBudget(c.nofile)
		if b.conns != c.conns || b.sealedFiles != c.sealed || b.partitions != c.partitions {
			t.Errorf("nofile %d: %+v", c.nofile, b)
		}
		var o options
		if err := o.applyBudget(c.nofile); err != nil {
			t.Errorf("nofile %d: defaults refused: %v", c.nofile, err)
		}
		if got := o.maxConns + o.sealedFilesMax + o.maxTotalPartitions + descriptorsReserved; got != c.need {
			t.Errorf("nofile %d: defaults use %d descriptors, want %d", c.nofile, got, c.need)
		}
	}
	// Settings that need more descriptors than the process may open.
	o := options{maxTotalPartitions: 2000}
	if err := o.applyBudget(1024); err == nil || !strings.Contains(err.Error(), "ulimit -n") {
		t.Fatalf("2000 partitions in 1024 descriptors: %v", err)
	}
	if err := (&options{}).applyBudget(100); err == nil {
		t.Fatal("a budget with no room for partitions was accepted")
	}
}

func TestCheckPprofAddr(t *testing.T) {
	cases := []struct {
		addr  string
		allow bool
		ok    bool
	}{
		{"", false, true},
		{"127.0.0.1:6060", false, true},
		{"localhost:6060", false, true},
		{"[::1]:6060", false, true},
		{"0.0.0.0:6060", false, false},
		{":6060", false, false},
		{"10.1.2.3:6060", false, false},
		{"0.0.0.0:6060", true, true},
		{"nonsense", false, false},
	}
	for _, c := range cases {
		if err := checkPprofAddr(c.addr, c.allow); (err == nil) != c.ok {
			t.Errorf("checkPprofAddr(%q, %v) = %v", c.addr, c.allow, err)
		}
	}
}

func TestTokensFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("# ops tokens\nalpha@read\nbeta@write, gamma # admin\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec, err := tokenSpec(options{tokens: "delta", tokensFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if spec != "delta,alpha@read,beta@write, gamma" {
		t.Fatalf("spec %q", spec)
	}
	if _, err := tokenSpec(options{tokensFile: path + ".missing"}); err == nil {
		t.Fatal("a missing tokens file was accepted")
	}
}

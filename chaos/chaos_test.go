package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// profiles are the runs `make chaos-short` (CI) and `make chaos` make.
var profiles = map[string][]Config{
	"short": {{Nodes: 3, Duration: 100 * time.Second, Producers: 12, Readers: 4, Committers: 2, KVWriters: 2, Partitions: 4, Rate: 1000, DiskFull: true, Corrupt: true, Hold: 2 * time.Second, Rest: time.Second}},
	"long": {
		{Nodes: 3, Duration: 4 * time.Minute, Producers: 16, Readers: 6, Committers: 2, KVWriters: 2, Partitions: 4, Rate: 600, DiskFull: true, Corrupt: true, Hold: 2 * time.Second, Rest: time.Second},
		{Nodes: 5, Duration: 4 * time.Minute, Producers: 16, Readers: 6, Committers: 2, KVWriters: 2, Partitions: 4, Rate: 600, DiskFull: true, Corrupt: true, Hold: 2 * time.Second, Rest: time.Second},
	},
}

// TestChaos runs the profile KEEL_CHAOS names (short or long) against the
// keel binary it builds, with KEEL_CHAOS_DIR as the run directory (a
// directory under the system's temporary one by default) and
// KEEL_CHAOS_SEED as the seed (the time by default). Skipped without
// KEEL_CHAOS: `make chaos` and `make chaos-short` set it.
func TestChaos(t *testing.T) {
	profile := os.Getenv("KEEL_CHAOS")
	if profile == "" {
		t.Skip("KEEL_CHAOS=short|long runs the chaos suite (make chaos-short, make chaos)")
	}
	runs, ok := profiles[profile]
	if !ok {
		t.Fatalf("KEEL_CHAOS=%q: want short or long", profile)
	}
	root := os.Getenv("KEEL_CHAOS_DIR")
	if root == "" {
		root = filepath.Join(os.TempDir(), "keel-chaos-"+time.Now().UTC().Format("20060102-150405"))
	}
	seed, seedFrom := uint64(time.Now().UnixNano()), "the time"
	if s := os.Getenv("KEEL_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KEEL_CHAOS_SEED=%q: want a decimal number (the seed a run printed)", s)
		}
		seed, seedFrom = v, "KEEL_CHAOS_SEED"
	}
	// Ctrl-C or SIGTERM ends the run cleanly: nodes stopped, the small
	// disk unmounted (its contents copied into the run directory first).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin := filepath.Join(root, "keel")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", bin, "../cmd/keel")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build keel: %v\n%s", err, out)
	}
	total := Summary{}
	for k, cfg := range runs {
		cfg.Bin, cfg.Seed, cfg.Timeout = bin, seed+uint64(k), 2*time.Minute
		cfg.Dir = filepath.Join(root, fmt.Sprintf("run%d-%dnodes", k+1, cfg.Nodes))
		t.Logf("run %d: %d nodes, seed %d (from %s), in %s", k+1, cfg.Nodes, cfg.Seed, seedFrom, cfg.Dir)
		sum, err := Run(ctx, cfg, func(s string) { t.Logf("run %d: %s", k+1, s) })
		if err != nil {
			writeVerdict(root, fmt.Sprintf("CHAOS: NOT FINISHED (run %d: %v)", k+1, err))
			t.Fatalf("run %d: %v (run directory %s)", k+1, err, cfg.Dir)
		}
		for _, v := range sum.Violations {
			t.Errorf("run %d: VIOLATION %s", k+1, v)
		}
		t.Logf("run %d: %d appends acknowledged, %d unknown, %d refused; %d reads; %d commits acknowledged, %d reads of them; kv: %d puts applied, %d cas mismatches, %d unknown, %d reads; %d answers 507 disk_full; %s",
			k+1, sum.AppendsOK, sum.AppendsUnknown, sum.AppendsFailed, sum.Reads, sum.CommitsOK, sum.CommitReads, sum.KVPutsOK, sum.KVMismatches, sum.KVPutsUnknown, sum.KVReads, sum.DiskFull, sum.Line())
		total.Operations += sum.Operations
		total.Faults += sum.Faults
		total.Violations = append(total.Violations, sum.Violations...)
	}
	t.Logf("run directory: %s", root)
	writeVerdict(root, total.Line())
	fmt.Println(total.Line())
	if !total.Green() {
		t.Fail()
	}
}

// writeVerdict writes the run's last line to root/verdict.txt, which the
// Makefile prints after go test's own last lines.
func writeVerdict(root, line string) {
	os.WriteFile(filepath.Join(root, "verdict.txt"), []byte(line+"\n"), 0o644)
}

package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DiskRun measures the disk under the data directory on its own: small
// appends, each followed by fdatasync, one at a time, as a WAL does with
// one request per group commit. A server's latency tail can be no better
// than this, so reports print it beside the server-side percentiles.
type DiskRun struct {
	Dir         string        `json:"dir"`
	Duration    time.Duration `json:"-"`
	RecordBytes int           `json:"record_bytes"`
	Syncs       int64         `json:"syncs"`
	LatencyMs   Quantiles     `json:"latency_ms"`
}

// Limits of a disk probe.
const (
	diskProbeFileMax     = 64 << 20 // the probe file never grows past this
	diskProbeDurationMax = time.Minute
)

// Run writes a probe file in Dir for Duration (at most a minute, at most
// 64 MiB) and removes it.
func (d DiskRun) Run() (DiskRun, error) {
	if d.Duration <= 0 || d.Duration > diskProbeDurationMax {
		return d, fmt.Errorf("bench: disk probe duration %v outside (0, %v]", d.Duration, diskProbeDurationMax)
	}
	if d.RecordBytes <= 0 {
		d.RecordBytes = 256
	}
	f, err := os.CreateTemp(d.Dir, "keel-disk-probe-*")
	if err != nil {
		return d, fmt.Errorf("bench: disk probe: %w", err)
	}
	path := f.Name()
	defer os.Remove(path)
	defer f.Close()
	d.Dir = filepath.Dir(path)
	rec := make([]byte, d.RecordBytes)
	hist := newLatencyHist()
	fd := int(f.Fd())
	var off int64
	end := time.Now().Add(d.Duration)
	for time.Now().Before(end) && off+int64(len(rec)) <= diskProbeFileMax {
		t0 := time.Now()
		if _, err := unix.Pwrite(fd, rec, off); err != nil {
			return d, fmt.Errorf("bench: disk probe write: %w", err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			return d, fmt.Errorf("bench: disk probe fdatasync: %w", err)
		}
		_ = hist.RecordValue(max(time.Since(t0).Microseconds(), 1))
		off += int64(len(rec))
	}
	d.Syncs = hist.TotalCount()
	d.LatencyMs = quantilesMs(hist)
	return d, nil
}

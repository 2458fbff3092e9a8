package main

import (
	"fmt"
	"syscall"
)

// The descriptor budget. Every connection holds a descriptor, every
// partition holds one for its active segment, and sealed segments share a
// bounded cache (logstore.SetSealedFilesMax); the WAL, state files,
// directories being synced, the listener and stdio take a few more.
// Running out is never fatal to the process (accept backs off), but a
// partition that cannot open its files would be a storage fault, so the
// limits that decide how many files can be open are checked against
// RLIMIT_NOFILE at startup, and defaults are derived from it.
const descriptorsReserved = 64 // WAL segments, state and index files being written, dirs, listener, stdio

// fdBudget is how the descriptors are shared.
type fdBudget struct {
	nofile      int // RLIMIT_NOFILE (Go raises the soft limit to the hard one at start)
	conns       int
	sealedFiles int
	partitions  int
}

// nofileLimit returns the process's descriptor limit.
func nofileLimit() (int, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	return int(min(r.Cur, 1<<30)), nil
}

// defaultBudget derives the limits from nofile: a quarter for connections
// (64 to 10,000), an eighth for sealed segment files (16 to 1,024), the
// rest for partitions (at most 1,000,000).
func defaultBudget(nofile int) fdBudget {
	b := fdBudget{nofile: nofile}
	b.conns = min(max(nofile/4, 64), 10_000)
	b.sealedFiles = min(max(nofile/8, 16), 1024)
	b.partitions = min(max(nofile-b.conns-b.sealedFiles-descriptorsReserved, 0), 1_000_000)
	return b
}

// applyBudget fills the limits not set by a flag from the budget and
// refuses settings that need more descriptors than the process may open.
func (o *options) applyBudget(nofile int) error {
	def := defaultBudget(nofile)
	if o.maxConns == 0 {
		o.maxConns = def.conns
	}
	if o.maxConnsPerIP == 0 {
		o.maxConnsPerIP = max(o.maxConns/4, 16)
	}
	if o.sealedFilesMax == 0 {
		o.sealedFilesMax = def.sealedFiles
	}
	if o.maxTotalPartitions == 0 {
		o.maxTotalPartitions = max(nofile-o.maxConns-o.sealedFilesMax-descriptorsReserved, 0)
		o.maxTotalPartitions = min(o.maxTotalPartitions, 1_000_000)
	}
	need := o.maxConns + o.sealedFilesMax + o.maxTotalPartitions + descriptorsReserved
	if need > nofile || o.maxTotalPartitions < 1 {
		return fmt.Errorf("--max-conns %d + --sealed-files-max %d + --max-total-partitions %d + %d reserved = %d descriptors, "+
			"but the process may open %d (ulimit -n): raise the limit or lower these",
			o.maxConns, o.sealedFilesMax, o.maxTotalPartitions, descriptorsReserved, need, nofile)
	}
	return nil
}

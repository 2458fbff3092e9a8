package logstore

import (
	"fmt"
	"os"
	"syscall"
)

// scanFile maps f read-only and scans it (see scanSegment). Mapping keeps
// a scan of a large segment off the Go heap.
func scanFile(f *os.File, path string, base uint64, vouched int64, intervalBytes int64, tailUnordered bool) (scanResult, error) {
	st, err := f.Stat()
	if err != nil {
		return scanResult{}, fmt.Errorf("engine: stat %s: %w", path, err)
	}
	if st.Size() == 0 {
		return scanSegment(path, nil, base, vouched, intervalBytes, tailUnordered)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return scanResult{}, fmt.Errorf("engine: mmap %s: %w", path, err)
	}
	defer syscall.Munmap(data)
	return scanSegment(path, data, base, vouched, intervalBytes, tailUnordered)
}

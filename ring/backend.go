package ring

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Kind names an I/O backend.
type Kind string

const (
	KindUring   Kind = "uring"
	KindSyscall Kind = "syscall"
)

// EnvBackend is the environment variable that forces a backend.
const EnvBackend = "KEEL_IO_BACKEND"

// iovecsPerCallMax is the kernel's IOV_MAX: one writev takes at most this
// many buffers, so longer lists are written in several calls.
const iovecsPerCallMax = 1024

// Backend appends bytes to files and makes them durable. See the package doc.
type Backend interface {
	// WriteAt writes bufs back to back into fd starting at off. With sync it
	// also fdatasyncs fd after the write has completed. It returns when all
	// of it is done, or with the first storage fault.
	WriteAt(fd int, off int64, bufs [][]byte, sync bool) error
	// Sync fdatasyncs fd.
	Sync(fd int) error
	// Kind says which backend this is.
	Kind() Kind
	// Close releases the backend. Calls after Close fail with ErrClosed.
	Close() error
}

// ErrClosed is returned by calls on a closed Backend.
var ErrClosed = errors.New("ring: backend closed")

// FaultError is a storage fault: a write or sync that failed for a reason
// other than EINTR/EAGAIN. It is sticky in the Backend that returned it.
type FaultError struct {
	Op  string // "write" or "fdatasync"; "state" for a fault met elsewhere (a state file, a directory)
	Err error
}

func (e *FaultError) Error() string { return fmt.Sprintf("ring: storage fault in %s: %v", e.Op, e.Err) }
func (e *FaultError) Unwrap() error { return e.Err }

// DefaultKind is the backend Open uses when KEEL_IO_BACKEND is unset.
//
// It is the syscall backend. Keel's writes are synchronous, one operation
// at a time per log: write, fdatasync, wait. For that pattern io_uring
// only adds cost on this kernel (6.18, ext4 on a virtual disk): the
// fdatasync is handed to an io-wq kernel thread, which costs a context
// switch each way. In alternating closed-loop runs of keel bench
// produce-64 (100 connections, 2026-11-22) the syscall backend answered
// 77.3K/71.2K/69.9K durable produces/s against io_uring's 69.2K/60.6K/62.2K,
// and at 33,000/s its server p99 was 0.95/0.82 ms against 1.45/1.00 ms.
// Measured again once a cluster's WAL writes ran on their own goroutine,
// overlapping the followers' and the stepping of their acknowledgements
// (2026-11-30, alternated, 8 s each, 100 connections): 3 nodes, syscall
// 24,153/25,645 req/s against io_uring's 21,096/21,726; 1 node, syscall
// 42,456/38,573 against 34,474/38,302. Each WAL still writes one batch at
// a time (the next waits for the fdatasync of the last: the batch it then
// writes is larger), so io_uring has nothing to overlap; it is opt-in.
const DefaultKind = KindSyscall

// Open returns the backend named by KEEL_IO_BACKEND, or DefaultKind when
// the variable is unset or empty.
func Open() (Backend, error) {
	kind := Kind(os.Getenv(EnvBackend))
	if kind == "" {
		kind = DefaultKind
	}
	return OpenKind(kind)
}

// OpenKind returns the named backend. An empty kind means "io_uring if it can
// be set up, else syscall".
func OpenKind(kind Kind) (Backend, error) {
	switch kind {
	case KindSyscall:
		return newSyscallBackend(), nil
	case KindUring:
		b, err := newUringBackend()
		if err != nil {
			return nil, fmt.Errorf("ring: %s=%s but io_uring cannot be set up: %w", EnvBackend, kind, err)
		}
		return b, nil
	case "":
		if b, err := newUringBackend(); err == nil {
			return b, nil
		}
		return newSyscallBackend(), nil
	default:
		return nil, fmt.Errorf("ring: %s=%q: want %q or %q", EnvBackend, kind, KindUring, KindSyscall)
	}
}

// UringAvailable reports whether io_uring can be set up on this machine, and
// why not when it cannot.
func UringAvailable() error {
	b, err := newUringBackend()
	if err != nil {
		return err
	}
	return b.Close()
}

// stickyFault keeps the first storage fault of a backend.
type stickyFault struct {
	mu    sync.Mutex
	fault error
}

func (s *stickyFault) get() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

// set records err as the fault unless one is already kept, and returns the
// kept one.
func (s *stickyFault) set(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault == nil {
		s.fault = err
	}
	return s.fault
}

// StartWriteback asks the kernel to start writing n bytes of fd at off to
// the disk, without waiting (sync_file_range with SYNC_FILE_RANGE_WRITE).
// It is a hint that keeps dirty pages from piling up; it makes nothing
// durable (only fdatasync does). EINTR is retried. Other errors (ENOMEM
// under memory pressure, for one) are returned for the caller to count or
// ignore: without SYNC_FILE_RANGE_WAIT_* the call does not consume the
// file's writeback error state, so a failed writeback is still reported by
// the next fdatasync, which is where the engine treats it as a fault.
func StartWriteback(fd int, off, n int64) error {
	for {
		err := unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("ring: sync_file_range: %w", err)
		}
		return nil
	}
}

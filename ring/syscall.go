package ring

import (
	"errors"
	"io"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// syscallBackend writes with pwritev and syncs with fdatasync. It is the
// fallback where io_uring is not allowed; it is safe for concurrent use
// because each call is independent.
type syscallBackend struct {
	fault  stickyFault
	closed atomic.Bool
}

func newSyscallBackend() *syscallBackend { return &syscallBackend{} }

func (b *syscallBackend) Kind() Kind { return KindSyscall }

func (b *syscallBackend) Close() error {
	b.closed.Store(true)
	return nil
}

func (b *syscallBackend) WriteAt(fd int, off int64, bufs [][]byte, sync bool) error {
	if err := b.check(); err != nil {
		return err
	}
	bufs = skipEmpty(bufs)
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), iovecsPerCallMax)]
		n, err := unix.Pwritev(fd, chunk, off)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return b.fault.set(&FaultError{Op: "write", Err: err})
		}
		if n == 0 {
			// A regular file never accepts zero bytes without an error;
			// looping here would spin forever.
			return b.fault.set(&FaultError{Op: "write", Err: io.ErrShortWrite})
		}
		off += int64(n)
		bufs = advanceBufs(bufs, n)
	}
	if sync {
		return b.Sync(fd)
	}
	return nil
}

func (b *syscallBackend) Sync(fd int) error {
	if err := b.check(); err != nil {
		return err
	}
	for {
		err := unix.Fdatasync(fd)
		if errors.Is(err, unix.EINTR) {
			continue // interrupted before it ran: not a failed sync
		}
		if err != nil {
			return b.fault.set(&FaultError{Op: "fdatasync", Err: err})
		}
		return nil
	}
}

func (b *syscallBackend) check() error {
	if b.closed.Load() {
		return ErrClosed
	}
	return b.fault.get()
}

// skipEmpty drops empty buffers from the front and the back of bufs: a
// zero-length iovec is legal but would make "wrote 0 bytes" ambiguous.
func skipEmpty(bufs [][]byte) [][]byte {
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	for len(bufs) > 0 && len(bufs[len(bufs)-1]) == 0 {
		bufs = bufs[:len(bufs)-1]
	}
	return bufs
}

// advanceBufs drops the first n bytes from bufs. It reslices; the caller's
// slices are not modified.
func advanceBufs(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			first := bufs[0][n:]
			rest := make([][]byte, 0, len(bufs))
			rest = append(rest, first)
			return skipEmpty(append(rest, bufs[1:]...))
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	return skipEmpty(bufs)
}

// Package ring appends bytes to files and makes them durable, through
// io_uring when the kernel allows it and through plain system calls when it
// does not.
//
// Contract:
//   - Backend.WriteAt writes a list of buffers back to back at a file offset
//     and, when asked, fdatasyncs the file strictly after the write: the two
//     are linked on the ring (IOSQE_IO_LINK), so the sync never overtakes
//     the data it vouches for. The call returns only when both are done.
//   - Short writes are resumed from where they stopped; EINTR and EAGAIN are
//     retried. Any other failure is a storage fault: it is sticky, the first
//     one is kept and every later call fails with it. fsync is never retried
//     after a real error, because after a failed fsync the kernel may have
//     dropped the dirty pages and a second fsync would falsely succeed.
//   - Buffers are pinned (runtime.Pinner) while the kernel uses them, so the
//     garbage collector can never move or free memory in flight.
//   - One goroutine owns each io_uring instance, locked to its OS thread for
//     its whole life; callers hand it work over a channel. Every Backend is
//     safe for concurrent use.
//
// Open picks the backend: KEEL_IO_BACKEND=uring|syscall forces one; without
// it, io_uring is tried and the syscall backend (pwritev + fdatasync) is used
// when io_uring cannot be set up, as in containers whose seccomp profile
// forbids it.
//
// ring imports only golang.org/x/sys and giouring.
package ring

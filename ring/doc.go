// Package ring appends bytes to files and makes them durable, through
// plain system calls (pwritev + fdatasync, the default) or io_uring.
//
// Contract:
//   - Backend.WriteAt writes a list of buffers back to back at a file offset
//     and, when asked, fdatasyncs the file strictly after the write (on a
//     ring the two are linked, IOSQE_IO_LINK), so the sync never overtakes
//     the data it vouches for. The call returns only when both are done.
//   - Short writes are resumed from where they stopped; EINTR and EAGAIN are
//     retried. Any other failure is a storage fault: it is sticky, the first
//     one is kept and every later call fails with it. fsync is never retried
//     after a real error, because after a failed fsync the kernel may have
//     dropped the dirty pages and a second fsync would falsely succeed.
//   - Buffers are pinned (runtime.Pinner) while the kernel uses them, so the
//     garbage collector can never move or free memory in flight.
//   - The io_uring backend keeps a few rings; an operation takes a free one
//     and runs on its caller's goroutine (submit, then wait in the same
//     io_uring_enter): no hand-off to another goroutine, so no scheduling
//     delay in the middle of a group commit, and a long fsync of one file
//     does not hold up a write to another. Every Backend is safe for
//     concurrent use.
//
// Open picks the backend: KEEL_IO_BACKEND=uring|syscall forces one; without
// it, DefaultKind (the syscall backend: pwritev + fdatasync; see DefaultKind
// for the measurement behind that choice). OpenKind("") tries io_uring and
// falls back to system calls when io_uring cannot be set up, as in
// containers whose seccomp profile forbids it.
//
// ring imports only golang.org/x/sys and giouring.
package ring

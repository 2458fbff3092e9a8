package ring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func unsafeSlice(iov unix.Iovec) []byte { return unsafe.Slice(iov.Base, int(iov.Len)) }

package ring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// backends returns every backend this machine can run; io_uring is skipped
// (with the reason) where the kernel or a sandbox forbids it.
func backends(t *testing.T) []Kind {
	t.Helper()
	kinds := []Kind{KindSyscall}
	if err := UringAvailable(); err != nil {
		t.Logf("io_uring unavailable, testing syscall backend only: %v", err)
	} else {
		kinds = append(kinds, KindUring)
	}
	return kinds
}

func openBackend(t *testing.T, kind Kind) Backend {
	t.Helper()
	b, err := OpenKind(kind)
	if err != nil {
		t.Fatalf("open %s: %v", kind, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if b.Kind() != kind {
		t.Fatalf("Kind() = %s, want %s", b.Kind(), kind)
	}
	return b
}

func tempFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestWriteAtLayouts(t *testing.T) {
	manySmall := make([][]byte, 2500) // more than IOV_MAX buffers in one call
	for i := range manySmall {
		manySmall[i] = pattern(1+i%13, byte(i))
	}
	cases := []struct {
		name string
		off  int64
		bufs [][]byte
		sync bool
	}{
		{"one buffer synced", 0, [][]byte{pattern(4096, 1)}, true},
		{"one buffer unsynced", 0, [][]byte{pattern(100, 2)}, false},
		{"several buffers at offset", 8192, [][]byte{pattern(10, 3), pattern(5000, 4), pattern(1, 5)}, true},
		{"empty buffers mixed in", 3, [][]byte{{}, pattern(64, 6), {}, pattern(64, 7), {}}, true},
		{"more than IOV_MAX buffers", 0, manySmall, true},
		{"large buffer", 0, [][]byte{pattern(8<<20, 8)}, true},
	}
	for _, kind := range backends(t) {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%s", kind, tc.name), func(t *testing.T) {
				b := openBackend(t, kind)
				f := tempFile(t)
				if err := b.WriteAt(int(f.Fd()), tc.off, tc.bufs, tc.sync); err != nil {
					t.Fatalf("WriteAt: %v", err)
				}
				want := bytes.Join(tc.bufs, nil)
				got := make([]byte, len(want))
				if _, err := f.ReadAt(got, tc.off); err != nil {
					t.Fatalf("read back: %v", err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("read back %d bytes differ from what was written", len(want))
				}
			})
		}
	}
}

func TestSyncOnly(t *testing.T) {
	for _, kind := range backends(t) {
		t.Run(string(kind), func(t *testing.T) {
			b := openBackend(t, kind)
			f := tempFile(t)
			if _, err := f.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if err := b.Sync(int(f.Fd())); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if err := b.WriteAt(int(f.Fd()), 0, nil, true); err != nil {
				t.Fatalf("WriteAt with no buffers and sync: %v", err)
			}
		})
	}
}

// TestFaultIsSticky writes to /dev/full (every write fails with ENOSPC) and
// checks that the fault is reported as such and then fails every later
// call, even to a healthy file.
func TestFaultIsSticky(t *testing.T) {
	for _, kind := range backends(t) {
		t.Run(string(kind), func(t *testing.T) {
			full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
			if err != nil {
				t.Skipf("no /dev/full: %v", err)
			}
			defer full.Close()
			b := openBackend(t, kind)
			err = b.WriteAt(int(full.Fd()), 0, [][]byte{pattern(512, 1)}, true)
			var fault *FaultError
			if !errors.As(err, &fault) || !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("write to /dev/full: got %v, want a FaultError wrapping ENOSPC", err)
			}
			good := tempFile(t)
			if err2 := b.WriteAt(int(good.Fd()), 0, [][]byte{pattern(8, 2)}, true); !errors.Is(err2, unix.ENOSPC) {
				t.Fatalf("write after fault: got %v, want the sticky ENOSPC fault", err2)
			}
			if err3 := b.Sync(int(good.Fd())); !errors.Is(err3, unix.ENOSPC) {
				t.Fatalf("sync after fault: got %v, want the sticky ENOSPC fault", err3)
			}
		})
	}
}

func TestBadFdIsFault(t *testing.T) {
	for _, kind := range backends(t) {
		t.Run(string(kind), func(t *testing.T) {
			b := openBackend(t, kind)
			err := b.WriteAt(-1, 0, [][]byte{pattern(8, 1)}, false)
			if !errors.Is(err, unix.EBADF) {
				t.Fatalf("write to fd -1: got %v, want EBADF", err)
			}
		})
	}
}

func TestClosedBackend(t *testing.T) {
	for _, kind := range backends(t) {
		t.Run(string(kind), func(t *testing.T) {
			b, err := OpenKind(kind)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			f := tempFile(t)
			if err := b.WriteAt(int(f.Fd()), 0, [][]byte{{1}}, true); !errors.Is(err, ErrClosed) {
				t.Fatalf("WriteAt after Close: got %v, want ErrClosed", err)
			}
		})
	}
}

// TestConcurrentWriters has many goroutines write disjoint ranges of one
// file through one backend; every range must read back intact.
func TestConcurrentWriters(t *testing.T) {
	const writers, perWriter, size = 16, 50, 256
	for _, kind := range backends(t) {
		t.Run(string(kind), func(t *testing.T) {
			b := openBackend(t, kind)
			f := tempFile(t)
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < perWriter; i++ {
						off := int64((w*perWriter + i) * size)
						if err := b.WriteAt(int(f.Fd()), off, [][]byte{pattern(size, byte(w*perWriter+i))}, i%10 == 0); err != nil {
							errs <- err
							return
						}
					}
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			got := make([]byte, size)
			for k := 0; k < writers*perWriter; k++ {
				if _, err := f.ReadAt(got, int64(k*size)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, pattern(size, byte(k))) {
					t.Fatalf("range %d differs", k)
				}
			}
		})
	}
}

func TestOpenKindFromEnv(t *testing.T) {
	cases := []struct {
		env  string
		want Kind // "" = an error
	}{
		{"syscall", KindSyscall},
		{"bogus", ""},
		{"", DefaultKind},
	}
	if UringAvailable() == nil {
		cases = append(cases, struct {
			env  string
			want Kind
		}{"uring", KindUring})
	}
	for _, tc := range cases {
		t.Setenv(EnvBackend, tc.env)
		b, err := Open()
		if tc.want == "" {
			if err == nil {
				b.Close()
				t.Fatalf("%s=%q: want an error", EnvBackend, tc.env)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s=%q: %v", EnvBackend, tc.env, err)
		}
		kind := b.Kind()
		b.Close()
		if kind != tc.want {
			t.Fatalf("Kind() = %s with %s=%q, want %s", kind, EnvBackend, tc.env, tc.want)
		}
	}
}

func TestAdvance(t *testing.T) {
	bufs := [][]byte{[]byte("abc"), []byte("de"), []byte("fghi")}
	cases := []struct {
		n    int
		want string
	}{{0, "abcdefghi"}, {1, "bcdefghi"}, {3, "defghi"}, {4, "efghi"}, {5, "fghi"}, {8, "i"}, {9, ""}}
	for _, tc := range cases {
		got := string(bytes.Join(advanceBufs(bufs, tc.n), nil))
		if got != tc.want {
			t.Errorf("advanceBufs(%d) = %q, want %q", tc.n, got, tc.want)
		}
		iovs := make([]unix.Iovec, 0, len(bufs))
		for _, b := range bufs {
			iov := unix.Iovec{Base: &b[0]}
			iov.SetLen(len(b))
			iovs = append(iovs, iov)
		}
		var sb []byte
		for _, iov := range advanceIovecs(iovs, tc.n) {
			sb = append(sb, unsafeSlice(iov)...)
		}
		if string(sb) != tc.want {
			t.Errorf("advanceIovecs(%d) = %q, want %q", tc.n, sb, tc.want)
		}
	}
	if got := string(bytes.Join(bufs, nil)); got != "abcdefghi" {
		t.Fatalf("advanceBufs modified its input: %q", got)
	}
}

func TestStartWriteback(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "wb")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := StartWriteback(int(f.Fd()), 0, 1<<20); err != nil {
		t.Fatalf("StartWriteback: %v", err)
	}
	var fault *FaultError
	if err := StartWriteback(-1, 0, 1); errors.As(err, &fault) || !errors.Is(err, unix.EBADF) {
		t.Fatalf("StartWriteback on a bad fd: %v, want EBADF and no FaultError (it is a hint)", err)
	}
}

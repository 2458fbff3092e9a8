package vfstest

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"keel/ring"
)

func newCrashFS(t *testing.T) (*CrashFS, string) {
	t.Helper()
	io, err := ring.OpenKind(ring.KindSyscall)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { io.Close() })
	c, err := NewCrashFS(io, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c, t.TempDir()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func content(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// TestCrashFS: after a crash, exactly what an fsync made durable is there.
func TestCrashFS(t *testing.T) {
	const missing = "<missing>"
	for _, tc := range []struct {
		name string
		do   func(t *testing.T, c *CrashFS, dir string)
		want map[string]string // file → content after the crash (missing: absent)
	}{
		{"a file whose name was not synced vanishes", func(t *testing.T, c *CrashFS, dir string) {
			must(t, c.WriteFileSync(filepath.Join(dir, "a"), []byte("x")))
		}, map[string]string{"a": missing}},
		{"a file whose name was synced stays", func(t *testing.T, c *CrashFS, dir string) {
			must(t, c.WriteFileSync(filepath.Join(dir, "a"), []byte("x")))
			must(t, c.SyncDir(dir))
		}, map[string]string{"a": "x"}},
		{"unsynced writes are undone, synced ones kept", func(t *testing.T, c *CrashFS, dir string) {
			f, err := c.OpenFile(filepath.Join(dir, "seg"), os.O_RDWR|os.O_CREATE, 0o644)
			must(t, err)
			defer f.Close()
			must(t, c.SyncDir(dir))
			must(t, c.WriteAt(int(f.Fd()), 0, [][]byte{[]byte("abc")}, false))
			must(t, c.WriteAt(int(f.Fd()), 3, [][]byte{[]byte("def")}, true))
			must(t, c.WriteAt(int(f.Fd()), 6, [][]byte{[]byte("ghi")}, false))
			must(t, c.WriteAt(int(f.Fd()), 0, [][]byte{[]byte("ABC")}, false))
		}, map[string]string{"seg": "abcdef"}},
		{"Sync makes earlier writes durable", func(t *testing.T, c *CrashFS, dir string) {
			f, err := c.OpenFile(filepath.Join(dir, "seg"), os.O_RDWR|os.O_CREATE, 0o644)
			must(t, err)
			defer f.Close()
			must(t, c.SyncDir(dir))
			must(t, c.WriteAt(int(f.Fd()), 0, [][]byte{[]byte("ab"), []byte("c")}, false))
			must(t, c.Sync(int(f.Fd())))
			must(t, c.WriteAt(int(f.Fd()), 3, [][]byte{[]byte("d")}, false))
		}, map[string]string{"seg": "abc"}},
		{"an unsynced rename reverts, restoring the target it replaced", func(t *testing.T, c *CrashFS, dir string) {
			must(t, c.WriteFileSync(filepath.Join(dir, "state"), []byte("old")))
			must(t, c.WriteFileSync(filepath.Join(dir, "state.tmp"), []byte("new")))
			must(t, c.SyncDir(dir))
			must(t, c.Rename(filepath.Join(dir, "state.tmp"), filepath.Join(dir, "state")))
		}, map[string]string{"state": "old", "state.tmp": "new"}},
		{"a synced rename stays", func(t *testing.T, c *CrashFS, dir string) {
			must(t, c.WriteFileSync(filepath.Join(dir, "state"), []byte("old")))
			must(t, c.WriteFileSync(filepath.Join(dir, "state.tmp"), []byte("new")))
			must(t, c.Rename(filepath.Join(dir, "state.tmp"), filepath.Join(dir, "state")))
			must(t, c.SyncDir(dir))
		}, map[string]string{"state": "new", "state.tmp": missing}},
		{"an unsynced removal comes back", func(t *testing.T, c *CrashFS, dir string) {
			must(t, c.WriteFileSync(filepath.Join(dir, "a"), []byte("x")))
			must(t, c.SyncDir(dir))
			must(t, c.Remove(filepath.Join(dir, "a")))
		}, map[string]string{"a": "x"}},
		{"a directory whose name was not synced vanishes with its files", func(t *testing.T, c *CrashFS, dir string) {
			sub := filepath.Join(dir, "t", "0")
			must(t, c.MkdirAll(sub, 0o755))
			must(t, c.WriteFileSync(filepath.Join(sub, "a"), []byte("x")))
			must(t, c.SyncDir(sub))
			must(t, c.SyncDir(filepath.Join(dir, "t")))
		}, map[string]string{"t/0/a": missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, dir := newCrashFS(t)
			tc.do(t, c, dir)
			if _, err := c.Crash(nil); err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.want {
				got := content(filepath.Join(dir, name))
				if want == missing {
					if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
						t.Errorf("%s: %q, want it gone", name, got)
					}
					continue
				}
				if got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			if err := c.SyncDir(dir); err != ErrCrashed {
				t.Errorf("a call after the crash: %v, want ErrCrashed", err)
			}
		})
	}
}

// TestCrashFSKeepsSome: with a rand, some unsynced writes survive.
func TestCrashFSKeepsSome(t *testing.T) {
	c, dir := newCrashFS(t)
	f, err := c.OpenFile(filepath.Join(dir, "seg"), os.O_RDWR|os.O_CREATE, 0o644)
	must(t, err)
	defer f.Close()
	must(t, c.SyncDir(dir))
	for i := range 64 {
		must(t, c.WriteAt(int(f.Fd()), int64(i), [][]byte{{'x'}}, false))
	}
	rep, err := c.Crash(rand.New(rand.NewPCG(1, 2)))
	must(t, err)
	if rep.WritesKept == 0 || rep.WritesUndone == 0 || rep.WritesKept+rep.WritesUndone != 64 {
		t.Fatalf("64 unsynced writes, a random crash: %+v", rep)
	}
}

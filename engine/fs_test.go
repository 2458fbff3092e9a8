package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// faultFS fails the calls that match: an operation name ("SyncDir",
// "Rename", "WriteFileSync", ...) and a path containing a substring.
type faultFS struct {
	FS
	mu    sync.Mutex
	op    string
	part  string
	err   error
	calls int // failed so far
}

// useFaultFS installs a faultFS over the real one for the test.
func useFaultFS(t *testing.T) *faultFS {
	f := &faultFS{FS: fsys}
	fsys = f
	t.Cleanup(func() { fsys = f.FS })
	return f
}

func (f *faultFS) failOn(op, part string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.op, f.part, f.err = op, part, err
}

func (f *faultFS) check(op, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.op == op && strings.Contains(path, f.part) {
		f.calls++
		return &os.PathError{Op: op, Path: path, Err: f.err}
	}
	return nil
}

func (f *faultFS) SyncDir(dir string) error {
	if err := f.check("SyncDir", dir); err != nil {
		return err
	}
	return f.FS.SyncDir(dir)
}

func (f *faultFS) WriteFileSync(path string, data []byte) error {
	if err := f.check("WriteFileSync", path); err != nil {
		return err
	}
	return f.FS.WriteFileSync(path, data)
}

func (f *faultFS) Rename(from, to string) error {
	if err := f.check("Rename", to); err != nil {
		return err
	}
	return f.FS.Rename(from, to)
}

func (f *faultFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := f.check("MkdirAll", dir); err != nil {
		return err
	}
	return f.FS.MkdirAll(dir, perm)
}

// TestMetadataFaults: a failure of each kind of metadata I/O surfaces as
// an error that names the operation and keeps its cause (so ENOSPC can be
// told apart), leaves the last good state in place, and a log that met
// one refuses later appends (sticky).
func TestMetadataFaults(t *testing.T) {
	t.Run("state checkpoint rename", func(t *testing.T) {
		ffs := useFaultFS(t)
		dir := t.TempDir()
		h := newStoreHarness(t, dir)
		h.apply(1, produce("t", 0, "", "a"))
		if err := h.s.Checkpoint([]byte("first")); err != nil {
			t.Fatal(err)
		}
		h.apply(2, produce("t", 0, "", "b"))
		ffs.failOn("Rename", stateFileName, syscall.EIO)
		err := h.s.Checkpoint([]byte("second"))
		if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "rename") {
			t.Fatalf("checkpoint with a failing rename: %v", err)
		}
		h.s.Close()
		ffs.failOn("", "", nil)
		_, blob, err := OpenStore(StoreConfig{Dir: dir}, openBackend(t, "syscall"))
		if err != nil || string(blob) != "first" {
			t.Fatalf("after a failed checkpoint the last good one must load: %q %v", blob, err)
		}
	})
	t.Run("state checkpoint disk full", func(t *testing.T) {
		ffs := useFaultFS(t)
		h := newStoreHarness(t, t.TempDir())
		h.apply(1, produce("t", 0, "", "a"))
		ffs.failOn("WriteFileSync", stateFileName, syscall.ENOSPC)
		if err := h.s.Checkpoint(nil); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("checkpoint on a full disk: %v, want ENOSPC kept", err)
		}
	})
	t.Run("new partition directories", func(t *testing.T) {
		ffs := useFaultFS(t)
		h := newStoreHarness(t, t.TempDir())
		ffs.failOn("MkdirAll", filepath.Join("topics", "x"), syscall.EIO)
		res, err := h.s.ApplyEntry(h.index+1, 1, entry(1, Command{Kind: CmdCreateTopic, Topic: "x", Partitions: 2, ReqID: 1}), nil)
		if err == nil || !errors.Is(err, syscall.EIO) {
			t.Fatalf("create with failing mkdir: %v %+v, want the apply to fail (a storage fault)", err, res)
		}
		if _, ok := h.s.Topic("x"); ok {
			t.Fatal("a topic whose files could not be made exists")
		}
	})
	t.Run("index file at a roll", func(t *testing.T) {
		ffs := useFaultFS(t)
		l := mustOpen(t, t.TempDir(), openBackend(t, "syscall"),
			LogConfig{SegmentBytes: 4 << 10, IndexIntervalBytes: 512, BatchBytesMax: 4 << 10, MarkIntervalBytes: 8 << 10})
		defer l.Close()
		ffs.failOn("WriteFileSync", indexSuffix, syscall.EIO)
		var err error
		for off := uint64(0); off < 200 && err == nil; off++ {
			_, _, err = l.AppendBatch([]Record{messageRecord(off)}, false)
		}
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("a roll whose index file cannot be written: %v", err)
		}
		ffs.failOn("", "", nil)
		if _, _, err := l.AppendBatch([]Record{messageRecord(999)}, false); err == nil {
			t.Fatal("the log took an append after a storage fault (it must be sticky)")
		}
	})
	t.Run("directory fsync at open", func(t *testing.T) {
		ffs := useFaultFS(t)
		dir := t.TempDir()
		l := mustOpen(t, dir, openBackend(t, "syscall"), LogConfig{})
		l.Close()
		ffs.failOn("SyncDir", dir, syscall.EIO)
		if _, err := OpenLog(dir, openBackend(t, "syscall"), LogConfig{}); !errors.Is(err, syscall.EIO) {
			t.Fatalf("open with a failing directory fsync: %v", err)
		}
	})
}

package engine

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"keel/engine/vfs/vfstest"
)

// TestMetadataFaults: a failure of each kind of metadata I/O surfaces as
// an error that names the operation and keeps its cause (so ENOSPC can be
// told apart), leaves the last good state in place, and a log that met
// one refuses later appends (sticky).
func TestMetadataFaults(t *testing.T) {
	t.Run("state checkpoint rename", func(t *testing.T) {
		ffs := vfstest.NewFaultFS(nil)
		dir := t.TempDir()
		h := newStoreHarnessFS(t, dir, ffs)
		h.apply(1, produce("t", 0, "", "a"))
		if err := h.s.Checkpoint([]byte("first")); err != nil {
			t.Fatal(err)
		}
		h.apply(2, produce("t", 0, "", "b"))
		ffs.FailOn("Rename", stateFileName, syscall.EIO)
		err := h.s.Checkpoint([]byte("second"))
		if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "rename") {
			t.Fatalf("checkpoint with a failing rename: %v", err)
		}
		h.s.Close()
		ffs.FailOn("", "", nil)
		_, blob, err := OpenStore(StoreConfig{Dir: dir}, openBackend(t, "syscall"))
		if err != nil || string(blob) != "first" {
			t.Fatalf("after a failed checkpoint the last good one must load: %q %v", blob, err)
		}
	})
	t.Run("state checkpoint disk full", func(t *testing.T) {
		ffs := vfstest.NewFaultFS(nil)
		h := newStoreHarnessFS(t, t.TempDir(), ffs)
		h.apply(1, produce("t", 0, "", "a"))
		ffs.FailOn("WriteFileSync", stateFileName, syscall.ENOSPC)
		if err := h.s.Checkpoint(nil); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("checkpoint on a full disk: %v, want ENOSPC kept", err)
		}
	})
	t.Run("new partition directories", func(t *testing.T) {
		ffs := vfstest.NewFaultFS(nil)
		h := newStoreHarnessFS(t, t.TempDir(), ffs)
		ffs.FailOn("MkdirAll", filepath.Join("topics", "x"), syscall.EIO)
		res, err := h.s.ApplyEntry(h.index+1, 1, entry(1, Command{Kind: CmdCreateTopic, Topic: "x", Partitions: 2, ReqID: 1}), nil)
		if err == nil || !errors.Is(err, syscall.EIO) {
			t.Fatalf("create with failing mkdir: %v %+v, want the apply to fail (a storage fault)", err, res)
		}
		if _, ok := h.s.Topic("x"); ok {
			t.Fatal("a topic whose files could not be made exists")
		}
	})
}

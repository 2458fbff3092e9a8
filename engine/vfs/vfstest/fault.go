// Package vfstest holds vfs.FS wrappers for tests: FaultFS fails chosen
// calls.
package vfstest

import (
	"os"
	"strings"
	"sync"

	"keel/engine/vfs"
)

// FaultFS fails the calls that match: an operation name ("SyncDir",
// "Rename", "WriteFileSync", "MkdirAll") and a path containing a
// substring. Other calls go to the wrapped FS.
type FaultFS struct {
	vfs.FS
	mu    sync.Mutex
	op    string
	part  string
	err   error
	calls int // failed so far
}

// NewFaultFS wraps fs (vfs.Default when nil); it fails nothing until
// FailOn.
func NewFaultFS(fs vfs.FS) *FaultFS { return &FaultFS{FS: vfs.OrDefault(fs)} }

// FailOn makes every later call of op on a path containing part fail with
// err (wrapped in an *os.PathError). FailOn("", "", nil) stops failing.
func (f *FaultFS) FailOn(op, part string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.op, f.part, f.err = op, part, err
}

// Failed returns how many calls failed so far.
func (f *FaultFS) Failed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *FaultFS) check(op, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.op != "" && f.op == op && strings.Contains(path, f.part) {
		f.calls++
		return &os.PathError{Op: op, Path: path, Err: f.err}
	}
	return nil
}

func (f *FaultFS) SyncDir(dir string) error {
	if err := f.check("SyncDir", dir); err != nil {
		return err
	}
	return f.FS.SyncDir(dir)
}

func (f *FaultFS) WriteFileSync(path string, data []byte) error {
	if err := f.check("WriteFileSync", path); err != nil {
		return err
	}
	return f.FS.WriteFileSync(path, data)
}

func (f *FaultFS) Rename(from, to string) error {
	if err := f.check("Rename", to); err != nil {
		return err
	}
	return f.FS.Rename(from, to)
}

func (f *FaultFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := f.check("MkdirAll", dir); err != nil {
		return err
	}
	return f.FS.MkdirAll(dir, perm)
}

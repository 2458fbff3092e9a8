package engine

import (
	"fmt"
	"os"
)

// FS is the engine's seam for metadata I/O: directories and their fsyncs,
// small files written whole (index files, durable marks, the state
// checkpoint), renames, removals, and opening files. Segment data goes
// through ring.Backend. Tests put a wrapper here to fail any of these
// calls; a failure is a storage fault (replication stops the node and
// answers 503 storage_fault or 507 disk_full), never a 500.
type FS interface {
	MkdirAll(dir string, perm os.FileMode) error
	SyncDir(dir string) error // open, fsync, close: make the names in dir durable
	ReadFile(path string) ([]byte, error)
	WriteFileSync(path string, data []byte) error // create or truncate, write, fsync, close
	Rename(from, to string) error
	Remove(path string) error
	RemoveAll(path string) error
	ReadDir(dir string) ([]os.DirEntry, error)
	Stat(path string) (os.FileInfo, error)
	OpenFile(path string, flag int, perm os.FileMode) (*os.File, error)
}

// fsys is the process's FS: the operating system's, except in tests.
var fsys FS = osFS{}

// osFS is FS on the operating system's files.
type osFS struct{}

func (osFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }
func (osFS) ReadFile(path string) ([]byte, error)        { return os.ReadFile(path) }
func (osFS) Rename(from, to string) error                { return os.Rename(from, to) }
func (osFS) Remove(path string) error                    { return os.Remove(path) }
func (osFS) RemoveAll(path string) error                 { return os.RemoveAll(path) }
func (osFS) ReadDir(dir string) ([]os.DirEntry, error)   { return os.ReadDir(dir) }
func (osFS) Stat(path string) (os.FileInfo, error)       { return os.Stat(path) }
func (osFS) OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(path, flag, perm)
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (osFS) WriteFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync: %w", err)
	}
	return f.Close()
}

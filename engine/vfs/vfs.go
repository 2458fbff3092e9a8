// Package vfs is the engine's seam for metadata I/O: directories and their
// fsyncs, small files written whole (index files, durable marks, the state
// checkpoint), renames, removals, and opening files. Segment data goes
// through ring.Backend. A log store or state machine takes an FS in its
// configuration (OS when none is given); tests give a wrapper that fails
// any call, or one that forgets what was not synced (a crash). A failure
// is a storage fault (replication stops the node and answers 503
// storage_fault or 507 disk_full), never a 500.
//
// The shape follows Pebble's vfs package, reduced to the calls Keel makes.
//
// vfs imports no Keel package.
package vfs

import (
	"fmt"
	"os"
	"path/filepath"
)

// FS is the set of metadata operations the engine performs.
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

// Default is the operating system's FS, used where a configuration gives
// none.
var Default FS = OS{}

// OrDefault returns fs, or Default when fs is nil.
func OrDefault(fs FS) FS {
	if fs == nil {
		return Default
	}
	return fs
}

// OS is FS on the operating system's files.
type OS struct{}

func (OS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }
func (OS) ReadFile(path string) ([]byte, error)        { return os.ReadFile(path) }
func (OS) Rename(from, to string) error                { return os.Rename(from, to) }
func (OS) Remove(path string) error                    { return os.Remove(path) }
func (OS) RemoveAll(path string) error                 { return os.RemoveAll(path) }
func (OS) ReadDir(dir string) ([]os.DirEntry, error)   { return os.ReadDir(dir) }
func (OS) Stat(path string) (os.FileInfo, error)       { return os.Stat(path) }
func (OS) OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(path, flag, perm)
}

func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (OS) WriteFileSync(path string, data []byte) error {
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

// SyncDir fsyncs a directory, making the names created, renamed or removed
// in it durable.
func SyncDir(fs FS, dir string) error {
	if err := fs.SyncDir(dir); err != nil {
		return fmt.Errorf("engine: fsync dir %s: %w", dir, err)
	}
	return nil
}

// WriteFileAtomic replaces dir/name with data so that after a crash the
// file holds either the old or the new content, never a mix: write a temp
// file, fsync it, rename it over the target, fsync the directory.
func WriteFileAtomic(fs FS, dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	if err := fs.WriteFileSync(tmp, data); err != nil {
		return fmt.Errorf("engine: write %s: %w", tmp, err)
	}
	if err := fs.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("engine: rename %s: %w", tmp, err)
	}
	return SyncDir(fs, dir)
}

// EnsureDir creates dir and any missing parents, and fsyncs the parent of
// every directory it created, so the whole path survives a power loss.
func EnsureDir(fs FS, dir string) error {
	_, err := MakeDirs(fs, dir, true)
	return err
}

// MakeDirs creates dir and its missing parents and returns the ones it
// created (innermost first); with sync, each one's name is made durable.
func MakeDirs(fs FS, dir string, sync bool) ([]string, error) {
	dir = filepath.Clean(dir)
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := fs.Stat(d); err == nil {
			break
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(created) == 0 {
		return nil, nil
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("engine: create %s: %w", dir, err)
	}
	if sync {
		for _, d := range created {
			if err := SyncDir(fs, filepath.Dir(d)); err != nil {
				return nil, err
			}
		}
	}
	return created, nil
}

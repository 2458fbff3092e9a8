package vfstest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"keel/engine/vfs"
	"keel/ring"
)

// CrashFS is a vfs.FS and a ring.Backend over real files that remembers
// what no fsync has made durable yet, so that Crash can put the files back
// to what a power loss may leave: in the spirit of Pebble's vfs.MemFS
// (ResetToSyncedState), but on the disk, because segment data is written
// through file descriptors by ring.Backend.
//
// What counts as durable follows POSIX and Linux as strictly as they allow:
//   - data written through Backend.WriteAt is durable once an fdatasync of
//     that file (WriteAt with sync, or Sync) has returned after it;
//   - a name (a file created by OpenFile or WriteFileSync, a directory made
//     by MkdirAll, a rename, a removal) is durable once its parent
//     directory was fsynced (SyncDir) after it; a rename needs both
//     directories;
//   - WriteFileSync's data is durable when it returns (its name is not).
//
// Crash undoes, newest first, everything that is not durable: unsynced
// writes get their old bytes back (with a rand, each one is kept or undone
// at random, as page writeback may have reached the disk for some), names
// go back (created files and directories vanish, renames revert, removed
// files return). After Crash every call fails with ErrCrashed, as it would
// in a process that died; open a fresh CrashFS on the same files to go on.
//
// Not journaled: writes, truncations and syncs made directly on an
// *os.File the FS handed out (Keel makes those only while recovering,
// and syncs each at once).
type CrashFS struct {
	fs    vfs.FS
	io    ring.Backend
	stash string // removed and overwritten files wait here, on the same filesystem

	mu      sync.RWMutex // calls hold it shared; Crash holds it alone
	jmu     sync.Mutex   // journal, nstash
	journal []*change
	nstash  int
	crashed bool
}

// ErrCrashed is what every call returns after Crash.
var ErrCrashed = errors.New("vfstest: the file system crashed")

type changeKind uint8

const (
	changeData   changeKind = iota + 1 // bytes written at off (old holds what was there)
	changeCreate                       // path was created
	changeMkdir                        // directory path was created
	changeRename                       // from was renamed to path (stash holds what path was)
	changeRemove                       // path was removed (stash holds it)
)

// change is one journal record: what undoing it needs, and what makes it
// durable.
type change struct {
	kind    changeKind
	path    string
	from    string // changeRename
	stash   string // changeRename (overwritten target, "" when none), changeRemove
	ino     uint64 // changeData: the file's identity
	off     int64  // changeData
	old     []byte // changeData: the bytes the write replaced
	oldSize int64  // changeData: the file's size before the write
	dirs    []string
	durable bool
}

// NewCrashFS journals over the operating system's files and io. stash is
// a directory on the same filesystem as the files (t.TempDir() of the same
// test does), where removed files are kept (in a directory of this
// CrashFS's own) until they are durably gone.
func NewCrashFS(io ring.Backend, stash string) (*CrashFS, error) {
	own, err := os.MkdirTemp(stash, "crashfs")
	if err != nil {
		return nil, err
	}
	return &CrashFS{fs: vfs.OS{}, io: io, stash: own}, nil
}

var (
	_ vfs.FS       = (*CrashFS)(nil)
	_ ring.Backend = (*CrashFS)(nil)
)

func (c *CrashFS) enter() error {
	c.mu.RLock()
	if c.crashed {
		c.mu.RUnlock()
		return ErrCrashed
	}
	return nil
}

func (c *CrashFS) leave() { c.mu.RUnlock() }

func (c *CrashFS) record(ch *change) {
	c.jmu.Lock()
	c.journal = append(c.journal, ch)
	c.jmu.Unlock()
}

// stashPath returns a fresh name in the stash directory.
func (c *CrashFS) stashPath() string {
	c.jmu.Lock()
	defer c.jmu.Unlock()
	c.nstash++
	return filepath.Join(c.stash, strconv.Itoa(c.nstash))
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// ---- ring.Backend ----

// WriteAt journals the bytes the write replaces, then writes.
func (c *CrashFS) WriteAt(fd int, off int64, bufs [][]byte, sync bool) error {
	if err := c.enter(); err != nil {
		return &ring.FaultError{Op: "write", Err: err}
	}
	defer c.leave()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &ring.FaultError{Op: "write", Err: err}
	}
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	ch := &change{kind: changeData, ino: st.Ino, off: off, oldSize: st.Size}
	if path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil && !strings.HasSuffix(path, " (deleted)") {
		ch.path = path
		if end := min(off+int64(n), st.Size); end > off {
			ch.old = make([]byte, end-off)
			if _, err := unix.Pread(fd, ch.old, off); err != nil {
				return &ring.FaultError{Op: "write", Err: fmt.Errorf("vfstest: read before write: %w", err)}
			}
		}
		c.record(ch)
	}
	if err := c.io.WriteAt(fd, off, bufs, sync); err != nil {
		return err
	}
	if sync {
		c.dataDurable(st.Ino)
	}
	return nil
}

// Sync fdatasyncs fd, which makes every write to the file before it durable.
func (c *CrashFS) Sync(fd int) error {
	if err := c.enter(); err != nil {
		return &ring.FaultError{Op: "fdatasync", Err: err}
	}
	defer c.leave()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &ring.FaultError{Op: "fdatasync", Err: err}
	}
	if err := c.io.Sync(fd); err != nil {
		return err
	}
	c.dataDurable(st.Ino)
	return nil
}

func (c *CrashFS) dataDurable(ino uint64) {
	c.jmu.Lock()
	defer c.jmu.Unlock()
	for _, ch := range c.journal {
		if ch.kind == changeData && ch.ino == ino {
			ch.durable = true
		}
	}
}

// Kind is the wrapped backend's.
func (c *CrashFS) Kind() ring.Kind { return c.io.Kind() }

// Close does not close the wrapped backend, which the test owns.
func (c *CrashFS) Close() error { return nil }

// ---- vfs.FS ----

func (c *CrashFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	var created []string // outermost first
	for d := filepath.Clean(dir); !exists(d); d = filepath.Dir(d) {
		created = append([]string{d}, created...)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := c.fs.MkdirAll(dir, perm); err != nil {
		return err
	}
	for _, d := range created {
		c.record(&change{kind: changeMkdir, path: d, dirs: []string{filepath.Dir(d)}})
	}
	return nil
}

func (c *CrashFS) SyncDir(dir string) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	if err := c.fs.SyncDir(dir); err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	c.jmu.Lock()
	defer c.jmu.Unlock()
	for _, ch := range c.journal {
		if ch.kind == changeData || ch.durable {
			continue
		}
		left := ch.dirs[:0]
		for _, d := range ch.dirs {
			if d != dir {
				left = append(left, d)
			}
		}
		ch.dirs = left
		ch.durable = len(left) == 0
	}
	return nil
}

func (c *CrashFS) ReadFile(path string) ([]byte, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	return c.fs.ReadFile(path)
}

func (c *CrashFS) WriteFileSync(path string, data []byte) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	created := !exists(path)
	if err := c.fs.WriteFileSync(path, data); err != nil {
		return err
	}
	if created {
		c.record(&change{kind: changeCreate, path: filepath.Clean(path), dirs: []string{filepath.Dir(path)}})
	}
	return nil
}

func (c *CrashFS) Rename(from, to string) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	ch := &change{kind: changeRename, from: filepath.Clean(from), path: filepath.Clean(to)}
	if exists(to) {
		// Keep the target it replaces: a hard link keeps its inode and bytes.
		ch.stash = c.stashPath()
		if err := os.Link(to, ch.stash); err != nil {
			return fmt.Errorf("vfstest: keep %s: %w", to, err)
		}
	}
	if err := c.fs.Rename(from, to); err != nil {
		return err
	}
	ch.dirs = []string{filepath.Dir(ch.from)}
	if d := filepath.Dir(ch.path); d != ch.dirs[0] {
		ch.dirs = append(ch.dirs, d)
	}
	c.record(ch)
	return nil
}

// Remove moves path into the stash instead of deleting it, so Crash can
// bring it back.
func (c *CrashFS) Remove(path string) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	return c.stashAway(path)
}

func (c *CrashFS) RemoveAll(path string) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	if !exists(path) {
		return nil
	}
	return c.stashAway(path)
}

func (c *CrashFS) stashAway(path string) error {
	if !exists(path) {
		return &os.PathError{Op: "remove", Path: path, Err: os.ErrNotExist}
	}
	stash := c.stashPath()
	if err := os.Rename(path, stash); err != nil {
		return err
	}
	path = filepath.Clean(path)
	c.record(&change{kind: changeRemove, path: path, stash: stash, dirs: []string{filepath.Dir(path)}})
	return nil
}

func (c *CrashFS) ReadDir(dir string) ([]os.DirEntry, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	return c.fs.ReadDir(dir)
}

func (c *CrashFS) Stat(path string) (os.FileInfo, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	return c.fs.Stat(path)
}

func (c *CrashFS) OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	created := flag&os.O_CREATE != 0 && !exists(path)
	f, err := c.fs.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	if created {
		c.record(&change{kind: changeCreate, path: filepath.Clean(path), dirs: []string{filepath.Dir(path)}})
	}
	return f, nil
}

// ---- the crash ----

// CrashReport counts what Crash undid.
type CrashReport struct {
	WritesUndone, WritesKept int // unsynced data writes
	NamesUndone              int // creations, renames and removals
}

// Crash waits for the calls in progress, then undoes, newest first, every
// change no fsync made durable. With rng, each unsynced data write is kept
// or undone at random; without, all are undone. From then on every call
// fails with ErrCrashed.
func (c *CrashFS) Crash(rng *rand.Rand) (CrashReport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crashed = true
	var rep CrashReport
	for i := len(c.journal) - 1; i >= 0; i-- {
		ch := c.journal[i]
		if ch.durable {
			continue
		}
		if ch.kind == changeData && rng != nil && rng.IntN(2) == 0 {
			rep.WritesKept++
			continue
		}
		if err := ch.undo(); err != nil {
			return rep, fmt.Errorf("vfstest: crash: undo %+v: %w", *ch, err)
		}
		if ch.kind == changeData {
			rep.WritesUndone++
		} else {
			rep.NamesUndone++
		}
	}
	c.journal = nil
	return rep, nil
}

func (ch *change) undo() error {
	switch ch.kind {
	case changeData:
		f, err := os.OpenFile(ch.path, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil // its name was not durable either: gone with it
		}
		if err != nil {
			return err
		}
		defer f.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return err
		}
		if st.Ino != ch.ino {
			return nil // another file has the name now; this one is gone
		}
		if len(ch.old) > 0 {
			if _, err := f.WriteAt(ch.old, ch.off); err != nil {
				return err
			}
		}
		if st.Size > ch.oldSize {
			return f.Truncate(ch.oldSize)
		}
		return nil
	case changeCreate, changeMkdir:
		return os.RemoveAll(ch.path)
	case changeRename:
		if err := os.Rename(ch.path, ch.from); err != nil {
			return err
		}
		if ch.stash != "" {
			return os.Rename(ch.stash, ch.path)
		}
		return nil
	case changeRemove:
		return os.Rename(ch.stash, ch.path)
	}
	return fmt.Errorf("unknown change kind %d", ch.kind)
}

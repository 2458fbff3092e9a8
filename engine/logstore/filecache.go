package logstore

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Sealed segments are read rarely and never written, so they do not keep
// a file descriptor each: their files are opened on demand and kept in a
// bounded cache, least recently used closed first. Only the active segment
// of each log holds its descriptor for good. Without this, descriptors grew
// with the data stored (one per 64 MiB of every partition) until a segment
// roll or a restart failed with "too many open files", a storage fault
// that a restart could not clear.
//
// A reader takes a segment's file with acquire and gives it back with
// release; a file in use is never closed by the cache (the cache may run
// over its bound while every cached file is in use). A segment that
// becomes active again (a truncation into it) is pinned: taken out of the
// cache with its file open.

// SealedFilesMaxDefault is the default bound of open sealed-segment files.
const SealedFilesMaxDefault = 1024

// errSegmentClosed is returned when a reader reaches a segment that was
// deleted meanwhile.
var errSegmentClosed = errors.New("engine: segment closed")

// fileCache bounds the descriptors sealed segments hold.
type fileCache struct {
	mu   sync.Mutex
	max  int
	open int       // cached segments whose file is open
	lru  list.List // of *segment: cached, open, not in use; least recently used first

	opens     atomic.Uint64
	evictions atomic.Uint64
}

// sealedFiles is the process's cache: descriptors are a per-process budget.
var sealedFiles = &fileCache{max: SealedFilesMaxDefault}

// SetSealedFilesMax sets how many sealed-segment files stay open at most
// (at least 1). Call it before opening stores.
func SetSealedFilesMax(n int) {
	sealedFiles.mu.Lock()
	defer sealedFiles.mu.Unlock()
	sealedFiles.max = max(1, n)
	sealedFiles.evictLocked()
}

// SealedFilesStats reports the cache: files open now, opens and evictions
// since start.
func SealedFilesStats() (open int, opens, evictions uint64) {
	sealedFiles.mu.Lock()
	open = sealedFiles.open
	sealedFiles.mu.Unlock()
	return open, sealedFiles.opens.Load(), sealedFiles.evictions.Load()
}

// adopt hands a segment that was just sealed (or opened sealed at
// recovery) to the cache; its file, if open, may now be closed when unused.
func (c *fileCache) adopt(s *segment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.cached || s.gone {
		return
	}
	s.cached = true
	if s.file != nil {
		c.open++
		if s.refs == 0 {
			s.elem = c.lru.PushBack(s)
		}
	}
	c.evictLocked()
}

// acquire returns s's file, opening it if the cache had closed it, and
// holds it open until release. Every segment is counted, the active one
// too: it may be rolled, adopted and evicted while a reader uses it.
func (c *fileCache) acquire(s *segment) (*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.gone || !s.cached && s.file == nil {
		return nil, fmt.Errorf("%w: %s", errSegmentClosed, s.path)
	}
	if s.file == nil {
		// Opened under the lock: rare (a miss), and it keeps two readers
		// from opening the same file twice.
		nf, err := s.fs.OpenFile(s.path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("engine: reopen sealed segment %s: %w", s.path, err)
		}
		s.file = nf
		c.open++
		c.opens.Add(1)
	}
	if s.elem != nil {
		c.lru.Remove(s.elem)
		s.elem = nil
	}
	s.refs++
	c.evictLocked()
	return s.file, nil
}

// release gives back a file taken with acquire.
func (c *fileCache) release(s *segment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.refs--
	if s.refs == 0 && s.cached && s.file != nil && s.elem == nil {
		s.elem = c.lru.PushBack(s)
	}
	c.evictLocked()
}

// pin takes s out of the cache with its file open: it is becoming the
// active segment again.
func (c *fileCache) pin(s *segment) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.cached {
		return nil
	}
	if s.elem != nil {
		c.lru.Remove(s.elem)
		s.elem = nil
	}
	if s.file == nil {
		f, err := s.fs.OpenFile(s.path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("engine: reopen segment %s: %w", s.path, err)
		}
		s.file = f
	} else {
		c.open--
	}
	s.cached = false
	return nil
}

// close closes s's file for good (the segment leaves its log).
func (c *fileCache) close(s *segment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.gone = true
	if s.elem != nil {
		c.lru.Remove(s.elem)
		s.elem = nil
	}
	if s.file != nil {
		s.file.Close()
		s.file = nil
		if s.cached {
			c.open--
		}
	}
}

// evictLocked closes the least recently used unused files while more than
// max are open.
func (c *fileCache) evictLocked() {
	for c.open > c.max && c.lru.Len() > 0 {
		s := c.lru.Remove(c.lru.Front()).(*segment)
		s.elem = nil
		s.file.Close()
		s.file = nil
		c.open--
		c.evictions.Add(1)
	}
}

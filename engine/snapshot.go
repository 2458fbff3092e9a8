package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"keel/engine/record"
	"keel/engine/vfs"
)

// A snapshot is what a Raft follower too far behind the leader's log (or
// with an empty disk) installs instead of the entries it missed: the
// leader's last state checkpoint and the partition segment files, which
// hold at least every record the checkpoint vouches for (segments only
// grow; sealed ones never change). Installing cuts each partition back to
// its checkpointed end, exactly as recovery after a restart does, so the
// records past it (applied by the leader after the checkpoint) come again
// through the Raft log. Nothing is loaded whole into memory but the state
// checkpoint itself.
//
// On the follower, files arrive into a staging directory; InstallSnapshot
// then switches to them crash-safely: once the marker snapshot.install is
// durable the install is decided, and OpenStore finishes an install a
// crash interrupted.

const (
	snapshotStaging = "snapshot.staging"
	snapshotMarker  = "snapshot.install"
	// SnapshotStateFile is the manifest name of the state checkpoint.
	SnapshotStateFile = stateFileName
)

// SnapshotFile is one file of a snapshot: a path relative to the store's
// directory and its size in bytes, and which file it was when listed.
type SnapshotFile struct {
	Rel  string
	Size int64
	info os.FileInfo
}

// SnapshotManifest returns the last durable state checkpoint (its bytes)
// and the partition segment files that go with it, sizes as of now. The
// checkpoint is read before the files are listed, so the files hold every
// record it vouches for.
func (s *Store) SnapshotManifest() (state []byte, files []SnapshotFile, err error) {
	s.snapshotServed.Store(time.Now().UnixMilli())
	// The state is read again after the files are listed: a checkpoint
	// written in between (and a compaction against its bound) could have
	// changed files the first one vouches for.
	for range snapshotManifestTries {
		if state, files, err = s.snapshotManifestOnce(); err != nil {
			return nil, nil, err
		}
		again, err := s.cfg.FS.ReadFile(filepath.Join(s.cfg.Dir, stateFileName))
		if err != nil {
			return nil, nil, fmt.Errorf("engine: snapshot: read state checkpoint: %w", err)
		}
		if bytes.Equal(again, state) {
			return state, files, nil
		}
	}
	return nil, nil, errors.New("engine: snapshot: the state checkpoint kept changing while its files were listed")
}

// snapshotManifestTries bounds SnapshotManifest's attempts.
const snapshotManifestTries = 5

func (s *Store) snapshotManifestOnce() (state []byte, files []SnapshotFile, err error) {
	state, err = s.cfg.FS.ReadFile(filepath.Join(s.cfg.Dir, stateFileName))
	if err != nil {
		return nil, nil, fmt.Errorf("engine: snapshot: read state checkpoint: %w", err)
	}
	parts, err := statePartitions(state)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range parts {
		rel := p.rel
		entries, err := s.cfg.FS.ReadDir(filepath.Join(s.cfg.Dir, rel))
		if err != nil {
			return nil, nil, fmt.Errorf("engine: snapshot: list %s: %w", rel, err)
		}
		// Segments starting at or below the checkpoint's end hold what it
		// vouches for; later ones come again through the Raft log. When
		// none does (the start moved past the end after the checkpoint,
		// and the segments below were deleted), the first one goes, so
		// that the follower's log exists and is cut back to an empty log
		// at the end (TruncateTo).
		var first *SnapshotFile
		firstBase := uint64(math.MaxUint64)
		n := len(files)
		for _, e := range entries {
			name := e.Name()
			base, ok := strings.CutSuffix(name, ".log")
			if !ok {
				continue // index files, durable marks: the follower rebuilds them
			}
			b, err := strconv.ParseUint(base, 10, 64)
			if err != nil {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return nil, nil, fmt.Errorf("engine: snapshot: stat %s: %w", name, err)
			}
			f := SnapshotFile{Rel: filepath.Join(rel, name), Size: info.Size(), info: info}
			if b < firstBase {
				firstBase, first = b, &f
			}
			if b <= p.next {
				files = append(files, f)
			}
		}
		if len(files) == n && first != nil {
			files = append(files, *first)
		}
	}
	return state, files, nil
}

// ErrSnapshotFileChanged: a file of a manifest was replaced (compaction
// rewrote it) or deleted (retention) since the manifest listed it; the
// fetch must start again from a new manifest.
var ErrSnapshotFileChanged = errors.New("engine: snapshot: a file changed since the manifest; fetch again")

// ReadSnapshotFile reads part of a manifest's segment file at off into
// buf. It refuses with ErrSnapshotFileChanged when the file at that path
// is no longer the one the manifest listed: a fetch never mixes two
// versions of a segment.
func (s *Store) ReadSnapshotFile(sf SnapshotFile, off int64, buf []byte) (int, error) {
	s.snapshotServed.Store(time.Now().UnixMilli())
	if !validSnapshotRel(sf.Rel) {
		return 0, fmt.Errorf("engine: snapshot: %q is not a snapshot file", sf.Rel)
	}
	f, err := s.cfg.FS.OpenFile(filepath.Join(s.cfg.Dir, sf.Rel), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrSnapshotFileChanged
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if sf.info != nil {
		now, err := f.Stat()
		if err != nil {
			return 0, err
		}
		// The inode, and a size not below the listed one (the active
		// segment grows; a rewrite, which may get the inode number of a
		// file freed before it, is smaller than what it replaced).
		if !os.SameFile(now, sf.info) || now.Size() < sf.info.Size() {
			return 0, ErrSnapshotFileChanged
		}
	}
	n, err := f.ReadAt(buf, off)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

// validSnapshotRel accepts topics/<topic>/<partition>/<digits>.log and
// kv/<namespace>/<digits>.log only, so a peer cannot read or write
// anything else through the snapshot calls.
func validSnapshotRel(rel string) bool {
	f := strings.Split(rel, string(filepath.Separator))
	switch {
	case len(f) == 4 && f[0] == "topics" && ValidTopicName(f[1]):
		if _, err := strconv.ParseUint(f[2], 10, 32); err != nil {
			return false
		}
	case len(f) == 3 && f[0] == "kv" && ValidTopicName(f[1]):
	default:
		return false
	}
	base, ok := strings.CutSuffix(f[len(f)-1], ".log")
	if !ok {
		return false
	}
	_, err := strconv.ParseUint(base, 10, 64)
	return err == nil && filepath.Clean(rel) == rel
}

// StateIndex returns the applied index and term of a state checkpoint and
// the replication blob saved with it.
func StateIndex(state []byte) (index, term uint64, blob []byte, err error) {
	p, err := statePayload(state)
	if err != nil {
		return 0, 0, nil, err
	}
	d := decoder{b: p}
	_ = d.uvarint() // version, checked by statePayload
	index, term = d.uvarint(), d.uvarint()
	blob = d.bytes()
	if d.err != nil {
		return 0, 0, nil, errors.New("engine: snapshot: state checkpoint does not decode")
	}
	return index, term, blob, nil
}

// statePayload checks a state checkpoint's framing and returns its payload.
func statePayload(b []byte) ([]byte, error) {
	if len(b) < stateHeaderBytes || string(b[:len(stateMagic)]) != stateMagic {
		return nil, errors.New("engine: not a state checkpoint")
	}
	n := binary.LittleEndian.Uint64(b[8:16])
	if n > statePayloadLimit || n != uint64(len(b)-stateHeaderBytes) {
		return nil, errors.New("engine: state checkpoint length mismatch")
	}
	p := b[stateHeaderBytes:]
	if crc32.Checksum(p, record.Castagnoli) != binary.LittleEndian.Uint32(b[16:20]) {
		return nil, errors.New("engine: state checkpoint checksum mismatch")
	}
	d := decoder{b: p}
	if v := d.uvarint(); d.err != nil || v < stateVersionMin || v > stateVersion {
		return nil, fmt.Errorf("engine: state checkpoint version %d, this build reads %d to %d", v, stateVersionMin, stateVersion)
	}
	return p, nil
}

type statePartition struct {
	rel  string // the log's directory, relative to the store's
	next uint64
}

// statePartitions lists the partition and KV namespace logs a state
// checkpoint names, with the end offset it vouches for.
func statePartitions(state []byte) ([]statePartition, error) {
	p, err := statePayload(state)
	if err != nil {
		return nil, err
	}
	d := decoder{b: p}
	version := d.uvarint()
	d.uvarint()
	d.uvarint()
	d.bytes()
	var out []statePartition
	for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ {
		name, parts := string(d.bytes()), d.int()
		d.varint()
		d.uvarint()
		if d.err != nil || !ValidTopicName(name) || parts < 1 || parts > partitionsLimit {
			return nil, errors.New("engine: snapshot: bad topic record in the state checkpoint")
		}
		for j := range parts {
			next := d.uvarint()
			d.uvarint()
			if version >= 3 {
				d.uvarint() // retention policy
				d.uvarint()
			}
			if version >= 6 {
				d.byte() // cleanup
			}
			out = append(out, statePartition{rel: filepath.Join("topics", name, strconv.Itoa(j)), next: next})
		}
	}
	if version >= 4 {
		for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ { // offsets
			d.bytes()
			d.bytes()
			d.uvarint()
			d.uvarint()
		}
		for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ { // idempotency
			d.bytes()
			d.varint()
			d.uvarint()
			d.uvarint()
			d.varint()
		}
		d.uvarint() // retention default
		d.uvarint()
		if version >= 6 {
			d.byte()
		}
		for i, n := 0, d.uvarint(); uint64(i) < n && d.err == nil; i++ {
			name, next := string(d.bytes()), d.uvarint()
			d.uvarint()
			for j, keys := 0, d.uvarint(); uint64(j) < keys && d.err == nil; j++ {
				d.bytes()
				d.uvarint()
				d.uvarint()
				d.varint()
				if version >= 5 {
					d.byte() // deleted
				}
			}
			if !ValidTopicName(name) {
				return nil, errors.New("engine: snapshot: bad kv namespace in the state checkpoint")
			}
			out = append(out, statePartition{rel: filepath.Join("kv", name), next: next})
		}
	}
	if d.err != nil {
		return nil, errors.New("engine: snapshot: state checkpoint does not decode")
	}
	return out, nil
}

// withBlob returns state with its replication blob replaced: a snapshot
// carries the leader's blob (positions in the leader's WAL), and the
// follower installs it with its own.
func withBlob(state, blob []byte) ([]byte, error) {
	p, err := statePayload(state)
	if err != nil {
		return nil, err
	}
	d := decoder{b: p}
	version, index, term := d.uvarint(), d.uvarint(), d.uvarint()
	d.bytes()
	if d.err != nil {
		return nil, errors.New("engine: snapshot: state checkpoint does not decode")
	}
	q := binary.AppendUvarint(nil, version)
	q = binary.AppendUvarint(q, index)
	q = binary.AppendUvarint(q, term)
	q = appendBytes(q, blob)
	q = append(q, d.b...)
	return frameState(q), nil
}

// SnapshotStaging receives a snapshot's files before InstallSnapshot
// switches to them.
type SnapshotStaging struct {
	s     *Store
	dir   string
	files map[string]*os.File

	released chan struct{} // closed once installed or aborted
	once     sync.Once
}

// Released is closed once the staging was installed or aborted: a new
// BeginSnapshot (which clears the directory) must wait for it.
func (g *SnapshotStaging) Released() <-chan struct{} { return g.released }

func (g *SnapshotStaging) release() { g.once.Do(func() { close(g.released) }) }

// BeginSnapshot empties the staging directory and returns it.
func (s *Store) BeginSnapshot() (*SnapshotStaging, error) {
	dir := filepath.Join(s.cfg.Dir, snapshotStaging)
	if err := s.cfg.FS.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("engine: snapshot: clear staging: %w", err)
	}
	if err := vfs.EnsureDir(s.cfg.FS, dir); err != nil {
		return nil, err
	}
	return &SnapshotStaging{s: s, dir: dir, files: map[string]*os.File{}, released: make(chan struct{})}, nil
}

// WriteAt writes data at off into the staged file rel (a manifest path,
// or SnapshotStateFile).
func (g *SnapshotStaging) WriteAt(rel string, off int64, data []byte) error {
	if rel != SnapshotStateFile && !validSnapshotRel(rel) {
		return fmt.Errorf("engine: snapshot: %q is not a snapshot file", rel)
	}
	f := g.files[rel]
	if f == nil {
		path := filepath.Join(g.dir, rel)
		if err := g.s.cfg.FS.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		var err error
		if f, err = g.s.cfg.FS.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
			return err
		}
		g.files[rel] = f
	}
	_, err := f.WriteAt(data, off)
	return err
}

// Abort closes the staged files; the next BeginSnapshot clears them.
func (g *SnapshotStaging) Abort() {
	for _, f := range g.files {
		f.Close()
	}
	g.files = nil
	g.release()
}

// InstallSnapshot makes the staged snapshot the store's state: every file
// is fsynced, the marker makes the install durable, the current partitions
// are replaced by the staged ones and the staged state checkpoint (with
// blob, this node's replication state, in place of the leader's) becomes
// the store's. Partitions are then opened and cut back to the
// checkpointed ends. Call it from the apply goroutine; readers holding a
// partition of before get errors from its closed log.
func (s *Store) InstallSnapshot(g *SnapshotStaging, blob []byte) error {
	defer g.release()
	stateRaw, err := s.cfg.FS.ReadFile(filepath.Join(g.dir, SnapshotStateFile))
	if err != nil {
		return fmt.Errorf("engine: snapshot: read staged state: %w", err)
	}
	state, err := withBlob(stateRaw, blob)
	if err != nil {
		return err
	}
	if err := s.cfg.FS.WriteFileSync(filepath.Join(g.dir, SnapshotStateFile), state); err != nil {
		return fmt.Errorf("engine: snapshot: %w", err)
	}
	dirs := map[string]bool{g.dir: true}
	for rel, f := range g.files {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("engine: snapshot: fsync %s: %w", rel, err)
		}
		f.Close()
		for d := filepath.Dir(filepath.Join(g.dir, rel)); d != g.dir && strings.HasPrefix(d, g.dir); d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	g.files = nil
	// Both directories exist in the staging, even empty, so that the
	// install replaces the store's (a namespace the leader does not have
	// must not survive on the follower).
	for _, sub := range []string{"topics", "kv"} {
		if err := vfs.EnsureDir(s.cfg.FS, filepath.Join(g.dir, sub)); err != nil {
			return err
		}
		dirs[filepath.Join(g.dir, sub)] = true
	}
	for d := range dirs {
		if err := vfs.SyncDir(s.cfg.FS, d); err != nil {
			return err
		}
	}
	// The logs being replaced go whole: the janitor forgets their
	// detached segments (whose paths may name the new logs' files) and
	// waits until the install is done.
	defer s.janitor.dropAndPause()()
	// Decided: from here a crash finishes the install at the next open.
	if err := vfs.WriteFileAtomic(s.cfg.FS, s.cfg.Dir, snapshotMarker, nil); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.topics {
		for _, p := range t.Partitions {
			p.Log.Close()
		}
	}
	for _, n := range s.kvs {
		n.part.Log.Close()
	}
	s.kvs = map[string]*KVNamespace{}
	s.kvMu.Lock()
	s.kvCheckpointed = map[string]kvCheckpointed{}
	s.kvMu.Unlock()
	s.topics, s.partitionsTotal = map[string]*Topic{}, 0
	s.offsets = map[offsetKey]uint64{}
	s.groups, s.groupEpoch = map[string]*ConsumerGroup{}, 0
	if s.groupsChanged != nil {
		close(s.groupsChanged) // a member's stream looks at its assignment again
		s.groupsChanged = nil
	}
	s.idem = newIdempotencyTable()
	if err := completeSnapshotInstall(s.cfg.FS, s.cfg.Dir); err != nil {
		return err
	}
	if _, err := s.decodeState(state); err != nil {
		return err
	}
	return nil
}

// completeSnapshotInstall finishes a decided install (the marker exists):
// the staged partitions and state checkpoint replace the store's. Each
// step can be repeated after a crash.
func completeSnapshotInstall(fs vfs.FS, dir string) error {
	marker := filepath.Join(dir, snapshotMarker)
	if _, err := fs.Stat(marker); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	staging := filepath.Join(dir, snapshotStaging)
	for _, sub := range []string{"topics", "kv"} {
		cur, old := filepath.Join(dir, sub), filepath.Join(dir, sub+".old")
		if _, err := fs.Stat(filepath.Join(staging, sub)); err != nil {
			continue
		}
		if _, err := fs.Stat(cur); err == nil {
			if err := fs.RemoveAll(old); err != nil {
				return err
			}
			if err := fs.Rename(cur, old); err != nil {
				return fmt.Errorf("engine: snapshot: %w", err)
			}
		}
		if err := fs.Rename(filepath.Join(staging, sub), cur); err != nil {
			return fmt.Errorf("engine: snapshot: %w", err)
		}
	}
	if _, err := fs.Stat(filepath.Join(staging, SnapshotStateFile)); err == nil {
		if err := fs.Rename(filepath.Join(staging, SnapshotStateFile), filepath.Join(dir, stateFileName)); err != nil {
			return fmt.Errorf("engine: snapshot: %w", err)
		}
	}
	if err := vfs.SyncDir(fs, dir); err != nil {
		return err
	}
	for _, sub := range []string{"topics", "kv"} {
		if err := fs.RemoveAll(filepath.Join(dir, sub+".old")); err != nil {
			return err
		}
	}
	if err := fs.RemoveAll(staging); err != nil {
		return err
	}
	if err := fs.Remove(marker); err != nil {
		return err
	}
	return vfs.SyncDir(fs, dir)
}

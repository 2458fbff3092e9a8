package replication

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"keel/engine/logstore"
	"keel/engine/vfs"
)

// unorderedMarker names a file in the WAL directory that exists while the
// WAL may hold batches written without an fsync between them (rocket
// mode). Recovery then cuts a damaged tail instead of refusing to start,
// even when the node is restarted without --rocket. It is removed once a
// durable node has made the whole WAL vouched.
const unorderedMarker = "unordered"

// walSegmentBytesDefault is the WAL's segment size (and so the
// granularity of truncation after a checkpoint).
const walSegmentBytesDefault = 64 << 20

func walMarkedUnordered(fs vfs.FS, dir string) bool {
	_, err := fs.Stat(filepath.Join(dir, unorderedMarker))
	return err == nil
}

// openWAL opens the WAL, creating or clearing the rocket-mode marker first.
func openWAL(cfg Config) (*logstore.Log, error) {
	// Every directory made here is made durable in its parent: the WAL
	// holds acknowledged writes from its first batch on.
	if err := vfs.EnsureDir(cfg.FS, cfg.WALDir); err != nil {
		return nil, fmt.Errorf("replication: create WAL dir: %w", err)
	}
	marked := walMarkedUnordered(cfg.FS, cfg.WALDir)
	if cfg.Rocket && !marked {
		if err := writeMarker(cfg.FS, cfg.WALDir); err != nil {
			return nil, err
		}
	}
	// The WAL's own checkpoint is written at every segment roll, not every
	// few MiB: each one is a rename and two fsyncs inside the Raft loop, and
	// recovery scans the active segment whole anyway.
	if cfg.WALSegmentBytes < 2*int64(cfg.EntryBytesMax) {
		return nil, fmt.Errorf("replication: WAL segment of %d bytes cannot hold two entries of up to %d bytes", cfg.WALSegmentBytes, cfg.EntryBytesMax)
	}
	walCfg := logstore.LogConfig{SegmentBytes: cfg.WALSegmentBytes, BatchBytesMax: int(cfg.WALSegmentBytes), MarkIntervalBytes: cfg.WALSegmentBytes,
		TailUnordered: cfg.Rocket || marked, FS: cfg.FS}
	wal, err := logstore.OpenLog(cfg.WALDir, cfg.IO, walCfg)
	if err != nil {
		return nil, fmt.Errorf("replication: open WAL: %w", err)
	}
	if !cfg.Rocket && marked {
		// Vouch for everything now on disk, then every later batch is
		// fsynced in order: the marker is no longer needed.
		if err := wal.Checkpoint(); err != nil {
			wal.Close()
			return nil, fmt.Errorf("replication: checkpoint WAL after rocket mode: %w", err)
		}
		if err := cfg.FS.Remove(filepath.Join(cfg.WALDir, unorderedMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
			wal.Close()
			return nil, fmt.Errorf("replication: remove rocket-mode marker: %w", err)
		}
	}
	return wal, nil
}

func writeMarker(fs vfs.FS, dir string) error {
	if err := fs.WriteFileSync(filepath.Join(dir, unorderedMarker), nil); err != nil {
		return fmt.Errorf("replication: create rocket-mode marker: %w", err)
	}
	if err := vfs.SyncDir(fs, dir); err != nil {
		return fmt.Errorf("replication: rocket-mode marker: %w", err)
	}
	return nil
}

package engine

import (
	"fmt"
	"path/filepath"
)

// syncDir fsyncs a directory, making the names created, renamed or removed
// in it durable.
func syncDir(dir string) error {
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("engine: fsync dir %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic replaces dir/name with data so that after a crash the file
// holds either the old or the new content, never a mix: write a temp file,
// fsync it, rename it over the target, fsync the directory.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	if err := fsys.WriteFileSync(tmp, data); err != nil {
		return fmt.Errorf("engine: write %s: %w", tmp, err)
	}
	if err := fsys.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("engine: rename %s: %w", tmp, err)
	}
	return syncDir(dir)
}

package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// The disk-full nemesis (fault-testing.md): one node's data directory is a
// size-limited tmpfs mounted before the node first starts; the fault
// fills it with a file until writes fail with ENOSPC (the node answers
// 507 disk_full and stops taking writes: storage faults are sticky), and
// its end removes the file and restarts the node, as an operator does
// once space is back ("restart it once the disk is fixed"). The node must
// then recover and catch up with nothing lost or damaged.

// diskFullBytes is the size of the tmpfs: far above what a run stores.
const diskFullBytes = 512 << 20

// mountSmallDisk mounts a tmpfs of diskFullBytes on dir (created), or
// says why it cannot (not root, no mount).
func mountSmallDisk(dir string) error {
	if os.Geteuid() != 0 {
		return errors.New("not root: cannot mount a size-limited filesystem")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", diskFullBytes), "tmpfs", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount tmpfs on %s: %v: %s", dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// unmountSmallDisk unmounts dir (lazily if it is still busy).
func unmountSmallDisk(dir string) error {
	if err := exec.Command("umount", dir).Run(); err == nil {
		return nil
	}
	out, err := exec.Command("umount", "-l", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("umount %s: %v: %s", dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// keepSmallDisk copies the small disk's files into the run directory and
// unmounts it: they are left where they were, on the real disk.
func keepSmallDisk(dir string) error {
	os.Remove(filepath.Join(dir, fillerName))
	saved := dir + ".saved"
	out, err := exec.Command("cp", "-a", dir, saved).CombinedOutput()
	if uerr := unmountSmallDisk(dir); uerr != nil {
		return uerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %v: %s", dir, err, bytes.TrimSpace(out))
	}
	if err := os.Remove(dir); err != nil { // the empty mount point
		return err
	}
	return os.Rename(saved, dir)
}

// fillerName is the file that fills a node's disk.
const fillerName = "chaos-disk-filler"

// fillDisk writes a file into dir until the filesystem is full (bounded
// by diskFullBytes), returning how much it wrote.
func fillDisk(dir string) (int64, error) {
	f, err := os.Create(filepath.Join(dir, fillerName))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var n int64
	for n < diskFullBytes {
		k, err := f.Write(chunk)
		n += int64(k)
		if err != nil {
			return n, nil // full
		}
	}
	return n, errors.New("chaos: the disk did not fill")
}

// diskFullFault is the nemesis action on node i (whose data directory is
// the small disk).
func diskFullFault(c *cluster, i int) (string, func() error) {
	nd := c.nodes[i]
	wrote, err := fillDisk(nd.data)
	what := fmt.Sprintf("disk of %s full (%d MiB of filler)", nd.name, wrote>>20)
	if err != nil {
		what += ": " + err.Error()
	}
	return what, func() error {
		if err := os.Remove(filepath.Join(nd.data, fillerName)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		// Space is back: the operator restarts the node (its fault is
		// sticky), which recovers from its files and catches up.
		c.kill(i)
		time.Sleep(100 * time.Millisecond)
		return c.start(i)
	}
}

package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The corruption nemesis: a follower is killed and its files damaged, as a
// disk that tears a write or flips a bit would, then started again. The
// recovery table (README, "Storage format and crash safety") says what
// must follow: a torn tail is cut (and what it held is applied again from
// the WAL); damage where an fsync vouched for the data makes the node
// refuse to start with a clear message; a damaged record is never served
// (reads check every CRC). A node that refuses, or that finds the damage
// when it reads, is wiped and started again, as an operator does: it
// rejoins under a new Raft id and receives a snapshot (README, "A node
// that lost its disk"). What it serves is checked with every other node's
// log at the end.
//
// The damage is kept to what Raft's fault model allows: a member must keep
// what it acknowledged, so the WAL's newest segment (whose tail may hold
// acknowledged entries past its durable mark, which recovery would cut as
// torn) is left alone; a torn tail hits a partition log, and a bit flip a
// partition log or an older WAL segment.

// corruptFault damages a follower's files; its end starts the node and
// repairs it if it must.
func corruptFault(ctx context.Context, c *cluster, rng *rand.Rand, log func(string)) (string, func() error) {
	l := c.leader(ctx)
	var fs []int
	for i, nd := range c.nodes {
		if i != l && i != c.smallDisk && nd.running() && !nd.paused {
			fs = append(fs, i)
		}
	}
	if l < 0 || len(fs) == 0 {
		return "", nil
	}
	f := fs[rng.IntN(len(fs))]
	nd := c.nodes[f]
	c.kill(f)
	what, err := damage(nd.data, rng)
	if err != nil {
		what = "nothing damaged: " + err.Error()
	}
	return fmt.Sprintf("%s killed, %s", nd.name, what), func() error { return c.restartDamaged(ctx, f, log) }
}

// damage tears the tail of a partition log or flips one bit of a log file
// under dir.
func damage(dir string, rng *rand.Rand) (string, error) {
	var parts, all []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".log") {
			return nil
		}
		if info, err := d.Info(); err != nil || info.Size() == 0 {
			return nil
		}
		all = append(all, p)
		if strings.Contains(p, string(filepath.Separator)+"topics"+string(filepath.Separator)) {
			parts = append(parts, p)
		}
		return nil
	})
	// WalkDir goes in lexical order: segment names are zero-padded offsets,
	// so the WAL's newest segment is the last file under wal/.
	lastWAL := -1
	for k, p := range all {
		if strings.Contains(p, string(filepath.Separator)+"wal"+string(filepath.Separator)) {
			lastWAL = k
		}
	}
	if lastWAL >= 0 {
		all = append(all[:lastWAL], all[lastWAL+1:]...)
	}
	rel := func(p string) string { r, _ := filepath.Rel(dir, p); return r }
	if len(parts) > 0 && rng.IntN(2) == 0 {
		p := parts[rng.IntN(len(parts))]
		info, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		cut := min(info.Size(), int64(1+rng.IntN(512)))
		if err := os.Truncate(p, info.Size()-cut); err != nil {
			return "", err
		}
		return fmt.Sprintf("tail of %s torn (%d bytes cut)", rel(p), cut), nil
	}
	if len(all) == 0 {
		return "", errors.New("no log file")
	}
	p := all[rng.IntN(len(all))]
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	info, err := fh.Stat()
	if err != nil {
		return "", err
	}
	pos := rng.Int64N(info.Size())
	var b [1]byte
	if _, err := fh.ReadAt(b[:], pos); err != nil {
		return "", err
	}
	bit := byte(1) << rng.IntN(8)
	b[0] ^= bit
	if _, err := fh.WriteAt(b[:], pos); err != nil {
		return "", err
	}
	return fmt.Sprintf("bit %#x flipped at byte %d of %s", bit, pos, rel(p)), nil
}

// restartDamaged starts node i on its damaged files and checks what it
// does: it refuses to start (the reason is logged; it is wiped and started
// again), or it starts and every partition it holds reads back without an
// error (else it is wiped too). Bounded in time.
func (c *cluster) restartDamaged(ctx context.Context, i int, log func(string)) error {
	nd := c.nodes[i]
	if err := c.start(i); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !nd.running() {
			log(fmt.Sprintf("%s refused to start: %s; wiped, started again", nd.name, lastError(nd.logPath)))
			return c.wipeAndStart(i)
		}
		if c.serving(i) {
			for p := range c.partitions {
				if _, err := c.readAll(i, c.topic, p); err != nil {
					log(fmt.Sprintf("%s started; reading it back failed (%v): wiped, started again", nd.name, err))
					c.kill(i)
					return c.wipeAndStart(i)
				}
			}
			log(fmt.Sprintf("%s started and reads back every partition", nd.name))
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	log(fmt.Sprintf("%s neither refused nor served within 15 s: wiped, started again", nd.name))
	c.kill(i)
	return c.wipeAndStart(i)
}

// serving reports whether node i answers /ready 200.
func (c *cluster) serving(i int) bool {
	resp, err := do("GET", c.nodes[i].url()+"/ready", nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// wipeAndStart empties node i's data directory (it may be a mount point)
// and starts it: it rejoins as a node that lost its disk.
func (c *cluster) wipeAndStart(i int) error {
	dir := c.nodes[i].data
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return c.start(i)
}

// lastError returns the last line of a node's log that says why it
// stopped.
func lastError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log)"
	}
	defer f.Close()
	last := "(no error line in its log)"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "level=ERROR") || strings.Contains(line, "corrupt") {
			last = line
		}
	}
	if len(last) > 300 {
		last = last[:300] + "…"
	}
	return last
}

package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"
)

// A fault is one nemesis action: begin injects it, end undoes it.
type fault struct {
	name  string
	begin func(ctx context.Context, c *cluster, rng *rand.Rand) (what string, end func() error)
}

// corruptFaultName names the corruption nemesis (corrupt.go), which
// nemesis sets up with its log: its end says what the damaged node did.
const corruptFaultName = "corrupt-follower"

// faults is every nemesis the suite runs.
var faults = []fault{
	{"kill-leader", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		l := c.leader(ctx)
		if l < 0 {
			return "", nil
		}
		c.kill(l)
		return "kill -9 " + c.nodes[l].name + " (leader)", func() error { return c.start(l) }
	}},
	{"kill-follower", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		l := c.leader(ctx)
		var fs []int
		for i, nd := range c.nodes {
			if i != l && nd.running() && !nd.paused {
				fs = append(fs, i)
			}
		}
		if l < 0 || len(fs) == 0 {
			return "", nil
		}
		f := fs[rng.IntN(len(fs))]
		c.kill(f)
		return "kill -9 " + c.nodes[f].name + " (follower)", func() error { return c.start(f) }
	}},
	{"kill-random", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		i := rng.IntN(len(c.nodes))
		c.kill(i)
		return "kill -9 " + c.nodes[i].name + " (random)", func() error { return c.start(i) }
	}},
	{"pause-leader", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		l := c.leader(ctx)
		if l < 0 {
			return "", nil
		}
		c.pause(l, true)
		return "SIGSTOP " + c.nodes[l].name + " (leader)", func() error { c.pause(l, false); return nil }
	}},
	{"isolate-leader", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		l := c.leader(ctx)
		if l < 0 {
			return "", nil
		}
		rest := others(len(c.nodes), []int{l})
		c.cut([]int{l}, rest, true)
		return fmt.Sprintf("isolate %s (leader)", c.nodes[l].name), func() error { c.cut([]int{l}, rest, false); return nil }
	}},
	{"split", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		perm := rng.Perm(len(c.nodes))
		minority := perm[:(len(c.nodes)-1)/2]
		majority := perm[len(minority):]
		c.cut(minority, majority, true)
		return fmt.Sprintf("split %s | %s", names(c, minority), names(c, majority)), func() error { c.cut(minority, majority, false); return nil }
	}},
	{"bridge", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		// One node (the bridge) sees both halves; the halves do not see
		// each other (Jepsen's bridge).
		perm := rng.Perm(len(c.nodes))
		bridge := perm[0]
		half := (len(c.nodes) - 1) / 2
		a, b := perm[1:1+half], perm[1+half:]
		c.cut(a, b, true)
		return fmt.Sprintf("bridge %s between %s and %s", c.nodes[bridge].name, names(c, a), names(c, b)), func() error { c.cut(a, b, false); return nil }
	}},
	{"disk-full", func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
		if c.smallDisk < 0 || !c.nodes[c.smallDisk].running() {
			return "", nil
		}
		return diskFullFault(c, c.smallDisk)
	}},
}

func others(n int, except []int) []int {
	var out []int
	for i := range n {
		if !slices.Contains(except, i) {
			out = append(out, i)
		}
	}
	return out
}

func names(c *cluster, is []int) string {
	var s []string
	for _, i := range is {
		s = append(s, c.nodes[i].name)
	}
	return fmt.Sprint(s)
}

// nemesis injects a fault, waits, undoes it, rests, until ctx ends; every
// step goes to log. It returns the number of faults injected.
// With corrupt, the corruption nemesis is one of the choices.
func nemesis(ctx context.Context, c *cluster, rng *rand.Rand, hold, rest time.Duration, start time.Time, log io.Writer, corrupt bool) (int, error) {
	count := 0
	stamp := func() string { return fmt.Sprintf("%8.3fs", time.Since(start).Seconds()) }
	for ctx.Err() == nil {
		sleepCtx(ctx, rest/2+time.Duration(rng.Int64N(int64(rest))))
		if ctx.Err() != nil {
			break
		}
		f := faults[rng.IntN(len(faults))]
		if corrupt && rng.IntN(len(faults)+1) == 0 {
			f = fault{corruptFaultName, func(ctx context.Context, c *cluster, rng *rand.Rand) (string, func() error) {
				return corruptFault(ctx, c, rng, func(s string) { fmt.Fprintf(log, "%s %s\n", stamp(), s) })
			}}
		}
		what, end := f.begin(ctx, c, rng)
		if end == nil {
			fmt.Fprintf(log, "%s %s: skipped (no leader, or no small disk)\n", stamp(), f.name)
			continue
		}
		count++
		fmt.Fprintf(log, "%s begin %s: %s\n", stamp(), f.name, what)
		sleepCtx(context.Background(), hold/2+time.Duration(rng.Int64N(int64(hold)))) // undone even when ctx ends
		if err := end(); err != nil {
			fmt.Fprintf(log, "%s end %s: %v\n", stamp(), f.name, err)
			return count, err
		}
		fmt.Fprintf(log, "%s end %s\n", stamp(), f.name)
	}
	return count, nil
}

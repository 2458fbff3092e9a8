package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Progress draws a one-line progress bar on a terminal, or prints a line
// every few seconds when the output is not a terminal (CI logs).
type Progress struct {
	Out      io.Writer
	terminal bool
	last     time.Time
}

// NewProgress writes to stderr.
func NewProgress() *Progress {
	st, err := os.Stderr.Stat()
	return &Progress{Out: os.Stderr, terminal: err == nil && st.Mode()&os.ModeCharDevice != 0}
}

// Update shows label at done of total.
func (p *Progress) Update(label string, done, total time.Duration) {
	frac := min(float64(done)/float64(total), 1)
	if p.terminal {
		const width = 30
		n := int(frac * width)
		fmt.Fprintf(p.Out, "\r%-28s [%s%s] %3.0f%% %5.1fs", label, strings.Repeat("#", n), strings.Repeat(" ", width-n), frac*100, done.Seconds())
		return
	}
	if time.Since(p.last) >= 5*time.Second {
		p.last = time.Now()
		fmt.Fprintf(p.Out, "%s: %.0f%% (%.1fs)\n", label, frac*100, done.Seconds())
	}
}

// Done ends the bar's line.
func (p *Progress) Done(label, summary string) {
	if p.terminal {
		fmt.Fprintf(p.Out, "\r%-28s %-60s\n", label, summary)
		return
	}
	fmt.Fprintf(p.Out, "%s: %s\n", label, summary)
}

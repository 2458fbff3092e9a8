package httpfront

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// patientListener retries Accept after errors of resource exhaustion
// (EMFILE, ENFILE: the descriptor budget is used up; ENOBUFS, ENOMEM)
// with a backoff, instead of ending Serve: a flood of idle connections
// must not stop the node. fasthttp treats every such error as permanent
// and returns from Serve.
type patientListener struct {
	net.Listener
	log      *slog.Logger
	failures *atomic.Uint64 // accept errors retried (keel_accept_retries_total)
	lastLog  atomic.Int64   // unix nanos of the last log line (one per second at most)
}

// acceptBackoffMax bounds the pause between retried accepts.
const acceptBackoffMax = time.Second

func (l *patientListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil || !resourceExhausted(err) {
			return c, err
		}
		l.failures.Add(1)
		if now := time.Now().UnixNano(); now-l.lastLog.Load() > int64(time.Second) {
			l.lastLog.Store(now)
			l.log.Warn("accept: out of a resource; retrying (connections beyond the budget wait in the backlog)", "err", err)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, acceptBackoffMax)
	}
}

func resourceExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

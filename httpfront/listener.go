package httpfront

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// limitedListener wraps the server's listener with what fasthttp does not
// do the way a node at the edge needs:
//
//   - Accept errors of resource exhaustion (EMFILE, ENFILE: the
//     descriptor budget is used up; ENOBUFS, ENOMEM) pause and retry with
//     a backoff instead of ending Serve; fasthttp treats every such error
//     as permanent, and the node exited.
//   - Connections are capped in total (MaxConns) and per client address
//     (MaxConnsPerIP; loopback is exempt, since a TLS proxy or a sidecar in
//     front of Keel connects from there for every client). A connection
//     over a cap is answered with the JSON error (503 overloaded, 429
//     rate_limited) and closed at once.
type limitedListener struct {
	net.Listener
	log      *slog.Logger
	metrics  *metrics
	total    int
	perIP    int
	lastLog  atomic.Int64 // unix nanos of the last resource log line (one per second at most)
	mu       sync.Mutex
	open     int
	byIP     map[uint64]int
	refusals [2][]byte // answers for the total and the per-address cap
}

// acceptBackoffMax bounds the pause between retried accepts.
const acceptBackoffMax = time.Second

func newLimitedListener(ln net.Listener, total, perIP int, log *slog.Logger, m *metrics) *limitedListener {
	return &limitedListener{Listener: ln, log: log, metrics: m, total: total, perIP: perIP, byIP: map[uint64]int{},
		refusals: [2][]byte{
			rawJSONAnswer(503, "Service Unavailable", "overloaded", "the server holds its limit of connections; retry shortly"),
			rawJSONAnswer(429, "Too Many Requests", "rate_limited", "too many connections from this address"),
		}}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !resourceExhausted(err) {
				return nil, err
			}
			l.metrics.acceptRetries.Add(1)
			if now := time.Now().UnixNano(); now-l.lastLog.Load() > int64(time.Second) {
				l.lastLog.Store(now)
				l.log.Warn("accept: out of a resource; retrying (connections beyond the budget wait in the backlog)", "err", err)
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, acceptBackoffMax)
			continue
		}
		backoff = 5 * time.Millisecond
		if tc := l.admit(c); tc != nil {
			return tc, nil
		}
	}
}

// admit counts c against the caps, or answers and closes it.
func (l *limitedListener) admit(c net.Conn) net.Conn {
	ip := remoteIP(c)
	key, loopback := ipKey(ip), ip != nil && ip.IsLoopback()
	l.mu.Lock()
	refuse := -1
	switch {
	case l.total > 0 && l.open >= l.total:
		refuse = 0
	case l.perIP > 0 && !loopback && l.byIP[key] >= l.perIP:
		refuse = 1
	default:
		l.open++
		l.byIP[key]++
	}
	l.mu.Unlock()
	if refuse >= 0 {
		l.metrics.connsRefused.Add(1)
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(l.refusals[refuse])
		_ = c.Close()
		return nil
	}
	return &trackedConn{Conn: c, l: l, key: key}
}

func (l *limitedListener) release(key uint64) {
	l.mu.Lock()
	l.open--
	if l.byIP[key]--; l.byIP[key] <= 0 {
		delete(l.byIP, key)
	}
	l.mu.Unlock()
}

// trackedConn gives its place back when closed (once).
type trackedConn struct {
	net.Conn
	l      *limitedListener
	key    uint64
	closed atomic.Bool
}

func (c *trackedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.key)
	}
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection (see lingerClose).
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func resourceExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func remoteIP(c net.Conn) net.IP {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP
	}
	return nil
}

// ipKey is a client address as a map key: an IPv4 address whole, an IPv6
// address by its /64 (one host's share of a network, so an attacker with
// a /64 counts once).
func ipKey(ip net.IP) uint64 {
	if v4 := ip.To4(); v4 != nil {
		return 0xFFFF<<32 | uint64(v4[0])<<24 | uint64(v4[1])<<16 | uint64(v4[2])<<8 | uint64(v4[3])
	}
	if len(ip) == net.IPv6len {
		var k uint64
		for _, b := range ip[:8] {
			k = k<<8 | uint64(b)
		}
		return k
	}
	return 0
}

// rawJSONAnswer is a whole HTTP/1.1 answer with a fixed JSON error, for
// connections refused before fasthttp sees them.
func rawJSONAnswer(status int, reason, code, message string) []byte {
	body := `{"ok":false,"error":"` + code + `","message":"` + message + `","docs":"/docs/errors#` + code + `"}`
	return []byte("HTTP/1.1 " + itoa(uint64(status)) + " " + reason + "\r\nContent-Type: application/json\r\nContent-Length: " +
		itoa(uint64(len(body))) + "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body)
}

// Lingering close (as Apache does): after an answer to a request whose
// body was not all read, the write side is closed (the client sees the
// end of the answer), and what the client still sends is read and
// discarded for a while before the socket is closed. Closing at once with
// unread data makes the kernel send a reset, which can destroy the answer
// before the client has read it.
const (
	lingerMax      = 2 * time.Second
	lingerBytesMax = 4 << 20
)

// lingerClose is a fasthttp hijack handler: it runs after the answer is
// written and flushed; fasthttp closes the connection when it returns.
func lingerClose(c net.Conn) {
	raw := c
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		raw = u.UnsafeConn()
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(lingerMax))
	bufp := drainBufPool.Get().(*[]byte)
	defer drainBufPool.Put(bufp)
	for n := 0; n < lingerBytesMax; {
		m, err := c.Read(*bufp)
		n += m
		if err != nil {
			return // EOF: the client is done; a deadline: enough lingering
		}
	}
}

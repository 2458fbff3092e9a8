package netio

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config holds a Transport's settings. Zero fields take defaults.
type Config struct {
	// Self is this node's name, sent in every hello; with TLS, this node's
	// certificate must name it.
	Self string
	// TLS, when set, secures every connection with mutual TLS: it needs
	// Certificates (this node's), RootCAs and ClientCAs (the cluster's CA).
	// The names are checked here (VerifyPeerName); ServerName is set per
	// peer.
	TLS *tls.Config

	QueueMessages int           // per peer, messages waiting to be written (4096)
	InboundMax    int           // inbound connections served at once (64); more are closed at accept
	QueueBytes    int64         // per peer, and their bytes (64 MiB)
	FrameBytesMax int           // one frame (64 MiB); also the largest message
	DialTimeout   time.Duration // one dial and handshake (2 s)
	WriteTimeout  time.Duration // one frame written, or the connection is dropped (5 s)
	BackoffMin    time.Duration // first wait after a failed dial (20 ms)
	BackoffMax    time.Duration // longest wait between dials (1 s)
	Logger        *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.QueueMessages == 0 {
		c.QueueMessages = 4096
	}
	if c.InboundMax == 0 {
		c.InboundMax = 64
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = 64 << 20
	}
	if c.FrameBytesMax == 0 {
		c.FrameBytesMax = 64 << 20
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 20 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

const (
	helloMagic   = "KEELPEER"
	wireVersion  = 1
	frameHeader  = 12
	nameBytesMax = 255
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTooManyFiles: accept failed for want of a descriptor; waiting lets
// some close.
var errTooManyFiles = syscall.EMFILE

// Handler receives every message from a peer, in the order the peer sent
// it, on that connection's goroutine. msg is valid only during the call.
type Handler func(from string, msg []byte)

// Transport is one node's end of the peer streams.
type Transport struct {
	cfg     Config
	handler Handler

	mu      sync.Mutex
	peers   map[string]*peer
	lns     []net.Listener
	inbound map[net.Conn]struct{}
	from    map[string]int // inbound streams open per peer name (after hello)
	closed  bool
	wg      sync.WaitGroup
}

// New returns a Transport that hands what peers send to h.
func New(cfg Config, h Handler) *Transport {
	return &Transport{cfg: cfg.withDefaults(), handler: h, peers: map[string]*peer{}, inbound: map[net.Conn]struct{}{}, from: map[string]int{}}
}

// PeerStats are one outbound stream's counters.
type PeerStats struct {
	Addr       string
	Connected  bool
	Queued     int    // messages waiting now
	Sent       uint64 // messages written
	SentBytes  uint64 // bytes written, framing included
	Frames     uint64 // frames written
	Dropped    uint64 // messages refused because the queue was full, or lost with a connection
	Reconnects uint64 // connections made after the first
}

// peer is the outbound stream to one peer.
type peer struct {
	name string
	t    *Transport

	mu       sync.Mutex
	addr     string
	queue    [][]byte
	queueLen int64 // bytes in queue
	wake     chan struct{}
	stop     chan struct{}
	stopped  bool

	connected  atomic.Bool
	sent       atomic.Uint64
	sentBytes  atomic.Uint64
	frames     atomic.Uint64
	dropped    atomic.Uint64
	reconnects atomic.Uint64
}

// SetPeer adds the peer name reached at addr (host:port), or changes its
// address (the current connection is dropped and the new address dialed).
func (t *Transport) SetPeer(name, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if p, ok := t.peers[name]; ok {
		p.mu.Lock()
		changed := p.addr != addr
		p.addr = addr
		p.mu.Unlock()
		if changed {
			p.kick()
		}
		return
	}
	p := &peer{name: name, t: t, addr: addr, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	t.peers[name] = p
	t.wg.Add(1)
	go p.run()
}

// RemovePeer stops the stream to name and drops what waits for it.
func (t *Transport) RemovePeer(name string) {
	t.mu.Lock()
	p, ok := t.peers[name]
	delete(t.peers, name)
	t.mu.Unlock()
	if ok {
		p.close()
	}
}

// Send queues msg for peer to; the Transport owns msg from here on. It
// never blocks: it returns false when the peer is unknown or its queue is
// full (the message is dropped; Raft resends).
func (t *Transport) Send(to string, msg []byte) bool {
	t.mu.Lock()
	p := t.peers[to]
	t.mu.Unlock()
	if p == nil {
		return false
	}
	return p.enqueue(msg)
}

// InboundOpen reports whether a stream from peer name is open now. When a
// peer's process dies, the kernel closes its sockets and this turns false
// at once, long before anything written to it fails.
func (t *Transport) InboundOpen(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.from[name] > 0
}

// Stats returns every peer's counters.
func (t *Transport) Stats() map[string]PeerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]PeerStats, len(t.peers))
	for name, p := range t.peers {
		p.mu.Lock()
		st := PeerStats{Addr: p.addr, Queued: len(p.queue)}
		p.mu.Unlock()
		st.Connected = p.connected.Load()
		st.Sent, st.SentBytes, st.Frames = p.sent.Load(), p.sentBytes.Load(), p.frames.Load()
		st.Dropped, st.Reconnects = p.dropped.Load(), p.reconnects.Load()
		out[name] = st
	}
	return out
}

// Close stops every stream, the listeners and the inbound connections,
// and waits for their goroutines.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	peers := t.peers
	t.peers = map[string]*peer{}
	for _, ln := range t.lns {
		ln.Close()
	}
	for c := range t.inbound {
		c.Close()
	}
	t.mu.Unlock()
	for _, p := range peers {
		p.close()
	}
	t.wg.Wait()
	return nil
}

func (p *peer) enqueue(msg []byte) bool {
	p.mu.Lock()
	if p.stopped || len(p.queue) >= p.t.cfg.QueueMessages || p.queueLen+int64(len(msg)) > p.t.cfg.QueueBytes ||
		len(msg) > p.t.cfg.FrameBytesMax-frameHeader-4 {
		p.mu.Unlock()
		p.dropped.Add(1)
		return false
	}
	p.queue = append(p.queue, msg)
	p.queueLen += int64(len(msg))
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns everything queued that fits in one frame.
func (p *peer) take(buf [][]byte) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	size := frameHeader
	n := 0
	for n < len(p.queue) && (n == 0 || size+4+len(p.queue[n]) <= p.t.cfg.FrameBytesMax) {
		size += 4 + len(p.queue[n])
		n++
	}
	buf = append(buf, p.queue[:n]...)
	for i := range n {
		p.queueLen -= int64(len(p.queue[i]))
		p.queue[i] = nil
	}
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = p.queue[:0:0] // let the backing array go
	}
	return buf
}

// kick drops the current connection (an address change); run dials again.
func (p *peer) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *peer) close() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.queue, p.queueLen = nil, 0
	p.mu.Unlock()
	close(p.stop)
}

// run dials the peer, writes what is queued, and dials again after a
// failure, backing off, until the peer is removed or the Transport closed.
func (p *peer) run() {
	defer p.t.wg.Done()
	backoff := p.t.cfg.BackoffMin
	first := true
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		p.mu.Lock()
		addr := p.addr
		p.mu.Unlock()
		conn, err := p.t.dial(p.name, addr)
		if err != nil {
			p.t.cfg.Logger.Debug("peer dial failed", "peer", p.name, "addr", addr, "err", err, "retry_in", backoff)
			// Full jitter (AWS architecture blog, "Exponential Backoff
			// and Jitter"): peers that lost each other at once do not
			// redial in lockstep.
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-p.stop:
				return
			case <-time.After(wait):
			}
			backoff = min(2*backoff, p.t.cfg.BackoffMax)
			continue
		}
		if !first {
			p.reconnects.Add(1)
		}
		first = false
		backoff = p.t.cfg.BackoffMin
		p.connected.Store(true)
		err = p.write(conn, addr)
		p.connected.Store(false)
		conn.Close()
		if err != nil {
			p.t.cfg.Logger.Info("peer stream broken; dialing again", "peer", p.name, "addr", addr, "err", err)
		}
	}
}

// write sends frames on conn until it fails, the address changes or the
// peer stops.
func (p *peer) write(conn net.Conn, addr string) error {
	bw := bufio.NewWriterSize(conn, 256<<10)
	var batch [][]byte
	var hdr [frameHeader]byte
	var lenBuf [4]byte
	for {
		p.mu.Lock()
		moved := p.addr != addr
		p.mu.Unlock()
		if moved {
			return nil
		}
		for { // what is queued now (also what waited while disconnected)
			batch = p.take(batch[:0])
			if len(batch) == 0 {
				break
			}
			size, crc := 0, uint32(0)
			for _, m := range batch {
				size += 4 + len(m)
				binary.LittleEndian.PutUint32(lenBuf[:], uint32(len(m)))
				crc = crc32.Update(crc, castagnoli, lenBuf[:])
				crc = crc32.Update(crc, castagnoli, m)
			}
			binary.LittleEndian.PutUint32(hdr[0:4], uint32(size))
			binary.LittleEndian.PutUint32(hdr[4:8], uint32(len(batch)))
			binary.LittleEndian.PutUint32(hdr[8:12], crc)
			if err := conn.SetWriteDeadline(time.Now().Add(p.t.cfg.WriteTimeout)); err != nil {
				p.dropped.Add(uint64(len(batch)))
				return err
			}
			_, err := bw.Write(hdr[:])
			for _, m := range batch {
				if err != nil {
					break
				}
				binary.LittleEndian.PutUint32(lenBuf[:], uint32(len(m)))
				if _, err = bw.Write(lenBuf[:]); err == nil {
					_, err = bw.Write(m)
				}
			}
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				p.dropped.Add(uint64(len(batch)))
				return fmt.Errorf("write frame: %w", err)
			}
			p.sent.Add(uint64(len(batch)))
			p.sentBytes.Add(uint64(frameHeader + size))
			p.frames.Add(1)
			clear(batch)
		}
		select {
		case <-p.stop:
			return nil
		case <-p.wake:
		}
	}
}

// dial connects to a peer, completes TLS when configured (checking the
// peer's certificate names it) and sends hello.
func (t *Transport) dial(name, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: t.cfg.DialTimeout, KeepAlive: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		setUserTimeout(tc, t.cfg.WriteTimeout)
	}
	deadline := time.Now().Add(t.cfg.DialTimeout)
	if t.cfg.TLS != nil {
		cfg := t.cfg.TLS.Clone()
		cfg.ServerName = name
		tc := tls.Client(conn, cfg)
		_ = tc.SetDeadline(deadline)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", name, err)
		}
		if err := VerifyPeerName(tc.ConnectionState(), name); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	_ = conn.SetDeadline(deadline)
	hello := append([]byte(helloMagic), wireVersion, byte(len(t.cfg.Self)))
	hello = append(hello, t.cfg.Self...)
	if _, err := conn.Write(hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("hello to %s: %w", name, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// VerifyPeerName checks that the certificate a peer presented names node
// name, as a DNS subject alternative name or, failing any, the common
// name: a certificate from the cluster's CA for another node cannot speak
// for this one.
func VerifyPeerName(st tls.ConnectionState, name string) error {
	if len(st.PeerCertificates) == 0 {
		return fmt.Errorf("peer %s presented no certificate", name)
	}
	cert := st.PeerCertificates[0]
	if certNames(cert, name) {
		return nil
	}
	return fmt.Errorf("peer certificate names %v (CN %q), not node %s", cert.DNSNames, cert.Subject.CommonName, name)
}

func certNames(cert *x509.Certificate, name string) bool {
	for _, n := range cert.DNSNames {
		if n == name {
			return true
		}
	}
	return len(cert.DNSNames) == 0 && cert.Subject.CommonName == name
}

// Serve accepts peers' streams on ln until the Transport is closed or ln
// fails, handing every message to the Handler. It returns nil after
// Close.
func (t *Transport) Serve(ln net.Listener) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		ln.Close()
		return nil
	}
	t.lns = append(t.lns, ln)
	t.mu.Unlock()
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			t.mu.Lock()
			closed := t.closed
			t.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				time.Sleep(backoff) // out of descriptors: let some close
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			conn.Close()
			return nil
		}
		if len(t.inbound) >= t.cfg.InboundMax {
			t.mu.Unlock()
			conn.Close() // a cluster has at most 7 nodes: this is not a peer
			continue
		}
		t.inbound[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			err := t.receive(conn)
			t.mu.Lock()
			delete(t.inbound, conn)
			closed := t.closed
			t.mu.Unlock()
			conn.Close()
			if err != nil && !closed {
				t.cfg.Logger.Info("inbound peer stream ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// receive reads hello, then frames, until the connection ends.
func (t *Transport) receive(conn net.Conn) error {
	_ = conn.SetDeadline(time.Now().Add(t.cfg.DialTimeout))
	if t.cfg.TLS != nil {
		cfg := t.cfg.TLS.Clone()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		tc := tls.Server(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	br := bufio.NewReaderSize(conn, 256<<10)
	head := make([]byte, len(helloMagic)+2)
	if _, err := io.ReadFull(br, head); err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if string(head[:len(helloMagic)]) != helloMagic || head[len(helloMagic)] != wireVersion {
		return errors.New("not a Keel peer (bad hello)")
	}
	nameBuf := make([]byte, head[len(helloMagic)+1])
	if _, err := io.ReadFull(br, nameBuf); err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	from := string(nameBuf)
	if tc, ok := conn.(*tls.Conn); ok {
		if err := VerifyPeerName(tc.ConnectionState(), from); err != nil {
			return err
		}
	}
	t.mu.Lock()
	t.from[from]++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		if t.from[from]--; t.from[from] <= 0 {
			delete(t.from, from)
		}
		t.mu.Unlock()
	}()
	_ = conn.SetDeadline(time.Time{})
	var hdr [frameHeader]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		size := int(binary.LittleEndian.Uint32(hdr[0:4]))
		count := int(binary.LittleEndian.Uint32(hdr[4:8]))
		crc := binary.LittleEndian.Uint32(hdr[8:12])
		if size > t.cfg.FrameBytesMax || count == 0 || count*4 > size {
			return fmt.Errorf("frame from %s: %d bytes, %d messages: out of bounds", from, size, count)
		}
		// Read in steps of at most 1 MiB, growing the buffer as bytes
		// arrive: a header alone cannot make the node allocate the frame.
		buf = buf[:0]
		for len(buf) < size {
			step := min(size-len(buf), 1<<20)
			if cap(buf)-len(buf) < step {
				buf = append(buf, make([]byte, step)...)[:len(buf)]
			}
			if _, err := io.ReadFull(br, buf[len(buf):len(buf)+step]); err != nil {
				return fmt.Errorf("frame from %s: %w", from, err)
			}
			buf = buf[:len(buf)+step]
		}
		if crc32.Checksum(buf, castagnoli) != crc {
			return fmt.Errorf("frame from %s: checksum mismatch", from)
		}
		rest := buf
		for range count {
			if len(rest) < 4 {
				return fmt.Errorf("frame from %s: truncated message", from)
			}
			n := int(binary.LittleEndian.Uint32(rest))
			if n > len(rest)-4 {
				return fmt.Errorf("frame from %s: message of %d bytes past the frame", from, n)
			}
			t.handler(from, rest[4:4+n])
			rest = rest[4+n:]
		}
		if len(rest) != 0 {
			return fmt.Errorf("frame from %s: %d bytes after its messages", from, len(rest))
		}
		if cap(buf) > 4<<20 {
			buf = nil // an occasional huge frame does not stay resident
		}
	}
}

// tcpUserTimeout is Linux's TCP_USER_TIMEOUT socket option (tcp(7)).
const tcpUserTimeout = 0x12

// setUserTimeout makes the kernel drop the connection when sent data stays
// unacknowledged for d (a peer that vanished without a reset, or a link
// that silently drops packets), instead of retransmitting for many minutes
// while the stream looks connected. Best effort: an error leaves the
// write deadline as the bound.
func setUserTimeout(tc *net.TCPConn, d time.Duration) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d.Milliseconds()))
	})
}

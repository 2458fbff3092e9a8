package netio

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// collector records what a Transport's handler receives.
type collector struct {
	mu   sync.Mutex
	msgs map[string][]string
	cond *sync.Cond
}

func newCollector() *collector {
	c := &collector{msgs: map[string][]string{}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *collector) handle(from string, msg []byte) {
	c.mu.Lock()
	c.msgs[from] = append(c.msgs[from], string(msg))
	c.mu.Unlock()
	c.cond.Broadcast()
}

// wait returns what came from peer once there are n messages, failing
// after 10 s.
func (c *collector) wait(t *testing.T, from string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	timer := time.AfterFunc(10*time.Second, c.cond.Broadcast)
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.msgs[from]) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages from %s after 10 s, want %d", len(c.msgs[from]), from, n)
		}
		c.cond.Wait()
	}
	return append([]string(nil), c.msgs[from]...)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// node starts a Transport named name serving on ln.
func node(t *testing.T, name string, ln net.Listener, cfg Config) (*Transport, *collector) {
	t.Helper()
	col := newCollector()
	cfg.Self = name
	tr := New(cfg, col.handle)
	go tr.Serve(ln)
	t.Cleanup(func() { tr.Close() })
	return tr, col
}

// TestTransportDelivers: messages arrive whole, in order, named by their
// sender, many per frame, in both directions.
func TestTransportDelivers(t *testing.T) {
	lnA, lnB := listen(t), listen(t)
	a, colA := node(t, "a", lnA, Config{})
	b, colB := node(t, "b", lnB, Config{})
	a.SetPeer("b", lnB.Addr().String())
	b.SetPeer("a", lnA.Addr().String())
	const n = 5000
	var want []string
	for i := range n {
		m := fmt.Sprintf("m%d-%s", i, bytes.Repeat([]byte{'x'}, i%300))
		want = append(want, m)
		for !a.Send("b", []byte(m)) {
			time.Sleep(time.Millisecond) // queue full: the test's own backpressure
		}
	}
	got := colB.wait(t, "a", n)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: %.20q, want %.20q", i, got[i], want[i])
		}
	}
	if !b.Send("a", []byte("back")) {
		t.Fatal("send back refused")
	}
	if got := colA.wait(t, "b", 1); got[0] != "back" {
		t.Fatalf("reply %q", got[0])
	}
	// The counters move just after a frame is written: b may have read
	// the last one first.
	st := a.Stats()["b"]
	for deadline := time.Now().Add(5 * time.Second); st.Sent != n && time.Now().Before(deadline); st = a.Stats()["b"] {
		time.Sleep(time.Millisecond)
	}
	if st.Sent != n || st.Frames == 0 || st.Frames >= n || !st.Connected {
		t.Fatalf("stats %+v: want %d sent in fewer frames", st, n)
	}
	t.Logf("%d messages in %d frames", st.Sent, st.Frames)
}

// TestTransportBoundedQueue: a peer that cannot be reached holds at most
// QueueMessages; the rest are refused and counted.
func TestTransportBoundedQueue(t *testing.T) {
	dead := listen(t)
	addr := dead.Addr().String()
	dead.Close() // nothing listens there now
	a, _ := node(t, "a", listen(t), Config{QueueMessages: 10})
	a.SetPeer("b", addr)
	accepted := 0
	for range 100 {
		if a.Send("b", []byte("x")) {
			accepted++
		}
	}
	if accepted != 10 {
		t.Fatalf("%d messages queued for an unreachable peer, want the bound 10", accepted)
	}
	if st := a.Stats()["b"]; st.Dropped != 90 || st.Connected {
		t.Fatalf("stats %+v", st)
	}
	if a.Send("nobody", []byte("x")) {
		t.Fatal("a message for an unknown peer was accepted")
	}
}

// TestTransportReconnects: when the peer goes away and comes back on the
// same address, the stream is dialed again and messages flow; what was
// queued meanwhile is delivered.
func TestTransportReconnects(t *testing.T) {
	lnB := listen(t)
	addr := lnB.Addr().String()
	a, _ := node(t, "a", listen(t), Config{BackoffMax: 50 * time.Millisecond})
	col := newCollector()
	b := New(Config{Self: "b"}, col.handle)
	go b.Serve(lnB)
	a.SetPeer("b", addr)
	a.Send("b", []byte("one"))
	col.wait(t, "a", 1)
	b.Close() // the peer dies: its listener and connections close
	// Sends until a write fails show the break; the queue then holds the
	// rest for the next connection.
	deadline := time.Now().Add(5 * time.Second)
	for a.Stats()["b"].Connected && time.Now().Before(deadline) {
		a.Send("b", []byte("lost?"))
		time.Sleep(5 * time.Millisecond)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	col2 := newCollector()
	b2 := New(Config{Self: "b"}, col2.handle)
	go b2.Serve(ln2)
	defer b2.Close()
	a.Send("b", []byte("two"))
	for {
		got := col2.wait(t, "a", 1)
		if got[len(got)-1] == "two" {
			break
		}
		col2.wait(t, "a", len(got)+1)
	}
	if st := a.Stats()["b"]; st.Reconnects == 0 {
		t.Fatalf("stats %+v: want a reconnect", st)
	}
}

// TestTransportRejectsBadStreams: a connection that is not a peer's (bad
// hello), or sends an oversized or corrupt frame, is cut; the Transport
// keeps serving real peers.
func TestTransportRejectsBadStreams(t *testing.T) {
	lnB := listen(t)
	_, col := node(t, "b", lnB, Config{FrameBytesMax: 1 << 10})
	hello := append([]byte(helloMagic), wireVersion, 1, 'z')
	frame := func(size, count, crc uint32, body []byte) []byte {
		var h [frameHeader]byte
		binary.LittleEndian.PutUint32(h[0:], size)
		binary.LittleEndian.PutUint32(h[4:], count)
		binary.LittleEndian.PutUint32(h[8:], crc)
		return append(h[:], body...)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"oversized frame", append(append([]byte{}, hello...), frame(1<<20, 1, 0, nil)...)},
		{"zero messages", append(append([]byte{}, hello...), frame(4, 0, 0, []byte{0, 0, 0, 0})...)},
		{"bad checksum", append(append([]byte{}, hello...), frame(5, 1, 12345, []byte{1, 0, 0, 0, 'x'})...)},
		{"message past the frame", append(append([]byte{}, hello...), frame(5, 1, 0, []byte{9, 0, 0, 0, 'x'})...)},
	} {
		conn, err := net.Dial("tcp", lnB.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(tc.raw)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: the connection stayed open and answered", tc.name)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the connection was not cut", tc.name)
		}
		conn.Close()
	}
	a, _ := node(t, "a", listen(t), Config{})
	a.SetPeer("b", lnB.Addr().String())
	a.Send("b", []byte("still serving"))
	if got := col.wait(t, "a", 1); got[0] != "still serving" {
		t.Fatalf("got %q", got[0])
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.msgs["z"]) != 0 {
		t.Fatalf("a message from a bad stream was handed over: %q", col.msgs["z"])
	}
}

// testCA issues certificates for node names.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keel test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// config returns a TLS configuration for a node whose certificate names
// dnsName.
func (ca *testCA) config(t *testing.T, dnsName string) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsName},
		DNSNames: []string{dnsName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs: ca.pool, ClientCAs: ca.pool, MinVersion: tls.VersionTLS13}
}

// TestTransportMutualTLS: peers with certificates from the cluster's CA
// that name them talk; a node whose certificate names another node cannot
// speak as the one it claims, and one without the CA's certificate is
// refused.
func TestTransportMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	lnA, lnB := listen(t), listen(t)
	a, colA := node(t, "a", lnA, Config{TLS: ca.config(t, "a")})
	b, colB := node(t, "b", lnB, Config{TLS: ca.config(t, "b")})
	a.SetPeer("b", lnB.Addr().String())
	b.SetPeer("a", lnA.Addr().String())
	a.Send("b", []byte("over tls"))
	b.Send("a", []byte("and back"))
	if got := colB.wait(t, "a", 1); got[0] != "over tls" {
		t.Fatalf("got %q", got[0])
	}
	colA.wait(t, "b", 1)

	// An impostor: a valid certificate of the CA, for node "c", claiming
	// to be "a".
	imp, _ := node(t, "a", listen(t), Config{TLS: ca.config(t, "c"), BackoffMin: 5 * time.Millisecond, BackoffMax: 10 * time.Millisecond})
	imp.SetPeer("b", lnB.Addr().String())
	imp.Send("b", []byte("forged"))
	// A stranger: a certificate of another CA.
	other := newTestCA(t)
	str, _ := node(t, "a", listen(t), Config{TLS: other.config(t, "a"), BackoffMin: 5 * time.Millisecond, BackoffMax: 10 * time.Millisecond})
	str.SetPeer("b", lnB.Addr().String())
	str.Send("b", []byte("stranger"))
	// Plain TCP to a TLS peer.
	plain, _ := node(t, "a", listen(t), Config{BackoffMin: 5 * time.Millisecond, BackoffMax: 10 * time.Millisecond})
	plain.SetPeer("b", lnB.Addr().String())
	plain.Send("b", []byte("plain"))

	time.Sleep(300 * time.Millisecond) // several dial attempts each
	a.Send("b", []byte("real"))
	got := colB.wait(t, "a", 2)
	for _, m := range got {
		if m != "over tls" && m != "real" {
			t.Fatalf("b accepted %q from a node that is not a", m)
		}
	}
	// The stranger cannot even finish its handshake (b's certificate is
	// not from its CA); the impostor and the plain dialer may write before
	// b cuts them, but b hands nothing of theirs over (checked above).
	if st := str.Stats()["b"]; st.Sent != 0 {
		t.Errorf("stranger: %+v, want nothing sent", st)
	}
}

// FuzzReceive: whatever follows a valid hello, receive returns (an error
// or the end of the stream) without panicking, and hands over only
// messages of frames whose checksum matched, each within its frame.
func FuzzReceive(f *testing.F) {
	msg := func(parts ...string) []byte {
		var body []byte
		for _, p := range parts {
			body = binary.LittleEndian.AppendUint32(body, uint32(len(p)))
			body = append(body, p...)
		}
		var h [frameHeader]byte
		binary.LittleEndian.PutUint32(h[0:], uint32(len(body)))
		binary.LittleEndian.PutUint32(h[4:], uint32(len(parts)))
		binary.LittleEndian.PutUint32(h[8:], crc32Checksum(body))
		return append(h[:], body...)
	}
	f.Add(msg("a", "bc"))
	f.Add(append(msg("x"), msg("", "yz")...))
	f.Add([]byte{255, 255, 255, 255, 1, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var got int
		tr := New(Config{Self: "b", FrameBytesMax: 1 << 16}, func(from string, m []byte) {
			if from != "a" {
				t.Fatalf("message from %q", from)
			}
			got += len(m)
		})
		server, client := net.Pipe()
		go func() {
			client.Write(append(append([]byte(helloMagic), wireVersion, 1, 'a'), data...))
			client.Close()
		}()
		_ = tr.receive(server)
		server.Close()
		if got > len(data) {
			t.Fatalf("%d message bytes handed over from %d bytes of input", got, len(data))
		}
	})
}

func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

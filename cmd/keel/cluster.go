package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"keel/engine/vfs"
	"keel/netio"
	"keel/replication"
)

// clusterConfig is a node's cluster settings, from the RF_HA_* environment
// (or the matching flags) as Ayder's scripts set them.
type clusterConfig struct {
	self            replication.Member
	members         []replication.Member
	bootstrapLeader bool
	writeConcern    int // 0 = majority
	tls             *tls.Config
	tick            time.Duration // raft tick = heartbeat interval
	electionTicks   int
}

// haKnobs are the RF_HA_* variables Keel reads; any other RF_HA_ variable
// is accepted and logged as ignored (scripts written for Ayder set knobs
// that mean nothing here).
var haKnobs = map[string]bool{
	"RF_HA_ENABLED": true, "RF_HA_NODE_ID": true, "RF_HA_NODES": true, "RF_HA_BOOTSTRAP_LEADER": true,
	"RF_HA_WRITE_CONCERN": true, "RF_HA_TLS": true, "RF_HA_TLS_CA": true, "RF_HA_TLS_CERT": true, "RF_HA_TLS_KEY": true,
	"RF_HA_HEARTBEAT_MS": true, "RF_HA_ELECTION_TIMEOUT_MS": true, "RF_HA_INSECURE_PLAINTEXT": true, "RF_HA_JOIN": true,
}

// Defaults of the Raft timing: a heartbeat every tick; an election after
// 10 to 19 ticks without one (raft randomizes it). With 100 ms ticks, the
// real-process failover test saw writes acknowledged again 1.08 to 1.97 s
// after kill -9 of the leader, too close to the 2 s the cluster issue
// allows; 50 ms ticks halve that, and an election timeout of 0.5 s is
// still far above this machine's fsync p99.999 (tens of milliseconds),
// so a slow disk does not start elections.
const (
	haTickDefault          = 50 * time.Millisecond
	haElectionTicksDefault = 10
)

// parseNodes reads RF_HA_NODES: id:host:raft_port:priority, comma-separated
// (priority optional, 0 by default). A node's HTTP address is its raft
// port + 1, except this node's own when --port is given.
func parseNodes(spec string) ([]replication.Member, error) {
	var out []replication.Member
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		f := strings.Split(item, ":")
		if len(f) < 3 || len(f) > 4 {
			return nil, fmt.Errorf("%q: want id:host:raft_port[:priority]", item)
		}
		port, err := strconv.Atoi(f[2])
		if err != nil || port < 1 || port > 65534 {
			return nil, fmt.Errorf("%q: raft port %q: want 1..65534 (the HTTP port is the next one)", item, f[2])
		}
		prio := 0
		if len(f) == 4 {
			if prio, err = strconv.Atoi(f[3]); err != nil {
				return nil, fmt.Errorf("%q: priority %q is not an integer", item, f[3])
			}
		}
		if f[0] == "" || f[1] == "" {
			return nil, fmt.Errorf("%q: empty node id or host", item)
		}
		out = append(out, replication.Member{
			ID: replication.RaftID(f[0]), Name: f[0], Priority: prio,
			RaftAddr: net.JoinHostPort(f[1], strconv.Itoa(port)),
			HTTPURL:  "http://" + net.JoinHostPort(f[1], strconv.Itoa(port+1)),
		})
	}
	return out, nil
}

// clusterFrom builds the cluster configuration from the options, or nil
// for a single node.
func clusterFrom(o *options, log *slog.Logger) (*clusterConfig, error) {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "RF_HA_") && !haKnobs[name] {
			log.Info("accepted and ignored (no meaning in Keel)", "env", name)
		}
	}
	if !o.haEnabled {
		if o.haNodes != "" || o.haNodeID != "" {
			log.Warn("RF_HA_NODES / RF_HA_NODE_ID are set but cluster mode is off: this node runs alone (set RF_HA_ENABLED=1 or --ha)")
		}
		return nil, nil
	}
	members, err := parseNodes(o.haNodes)
	if err != nil {
		return nil, fmt.Errorf("--ha-nodes (RF_HA_NODES): %w", err)
	}
	if err := replication.ValidateMembers(o.haNodeID, members); err != nil {
		return nil, fmt.Errorf("--ha-nodes (RF_HA_NODES) / --ha-node-id (RF_HA_NODE_ID): %w", err)
	}
	c := &clusterConfig{members: members, bootstrapLeader: o.haBootstrapLeader, tick: haTickDefault, electionTicks: haElectionTicksDefault}
	for i := range c.members {
		if c.members[i].Name == o.haNodeID {
			if o.portSet {
				_, host, _ := strings.Cut(c.members[i].HTTPURL, "://")
				h, _, _ := net.SplitHostPort(host)
				c.members[i].HTTPURL = "http://" + net.JoinHostPort(h, strconv.Itoa(o.port))
			} else {
				_, p, _ := net.SplitHostPort(c.members[i].RaftAddr)
				raftPort, _ := strconv.Atoi(p)
				o.port = raftPort + 1
			}
			c.self = c.members[i]
		}
	}
	sort.Slice(c.members, func(i, j int) bool { return c.members[i].Name < c.members[j].Name })
	switch wc := o.haWriteConcern; {
	case wc == "" || wc == "majority" || wc == "0":
	default:
		n, err := strconv.Atoi(wc)
		if err != nil || n < 1 || n > len(members) {
			return nil, fmt.Errorf("--ha-write-concern (RF_HA_WRITE_CONCERN) %q: want a number of nodes, 1..%d, or majority", wc, len(members))
		}
		c.writeConcern = n
		if majority := len(members)/2 + 1; n < majority {
			log.Warn("write concern below the majority is served as the majority (stronger): writes are answered once a majority has them on disk", "asked", n, "majority", majority)
		}
	}
	if o.haHeartbeatMs > 0 {
		c.tick = time.Duration(o.haHeartbeatMs) * time.Millisecond
	}
	if o.haElectionTimeoutMs > 0 {
		c.electionTicks = max(3, int(time.Duration(o.haElectionTimeoutMs)*time.Millisecond/c.tick))
	}
	if o.haTLS {
		cfg, err := loadClusterTLS(o.haTLSCA, o.haTLSCert, o.haTLSKey)
		if err != nil {
			return nil, err
		}
		// The others would refuse a certificate for another node: say so
		// here, at start, not in their logs.
		leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("node certificate: %w", err)
		}
		if err := netio.VerifyPeerName(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}, o.haNodeID); err != nil {
			return nil, fmt.Errorf("--ha-tls-cert (RF_HA_TLS_CERT) %s is not this node's: %w", o.haTLSCert, err)
		}
		c.tls = cfg
	}
	if o.rocket {
		return nil, fmt.Errorf("--rocket acknowledges writes before they are on disk: it is for a single node only")
	}
	if c.tls == nil && !o.haInsecurePlaintext {
		host, _, _ := net.SplitHostPort(c.self.RaftAddr)
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("raft address %s is not loopback and node traffic is not encrypted: anyone who reaches it could act as a node; set RF_HA_TLS=1 (see README, Running a cluster) or --ha-insecure-plaintext (RF_HA_INSECURE_PLAINTEXT=1)", c.self.RaftAddr)
		}
	}
	return c, nil
}

// loadClusterTLS reads the CA, this node's certificate and key (paths
// relative to the working directory) for mutual TLS between nodes.
func loadClusterTLS(caPath, certPath, keyPath string) (*tls.Config, error) {
	if caPath == "" || certPath == "" || keyPath == "" {
		return nil, fmt.Errorf("--ha-tls (RF_HA_TLS) needs --ha-tls-ca, --ha-tls-cert and --ha-tls-key (RF_HA_TLS_CA/CERT/KEY)")
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster CA %s: no PEM certificate in it", caPath)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// peerStreams are a member's Raft traffic: the netio streams to and from
// its peers, on its own raft port (only that port carries node traffic).
type peerStreams struct {
	tr   *netio.Transport
	raft *replication.PeerTransport
}

func startPeerStreams(c *clusterConfig, log *slog.Logger) (*peerStreams, error) {
	ln, err := net.Listen("tcp", c.self.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("raft port: %w", err)
	}
	p := &peerStreams{}
	p.tr = netio.New(netio.Config{Self: c.self.Name, TLS: c.tls, Logger: log.With("component", "peers")},
		func(from string, msg []byte) { p.raft.Handle(from, msg) })
	p.raft = replication.NewPeerTransport(p.tr, c.self.Name, c.members, log)
	go func() {
		if err := p.tr.Serve(ln); err != nil {
			log.Error("raft port stopped accepting", "err", err)
		}
	}()
	return p, nil
}

func (p *peerStreams) close() { p.tr.Close() }

// raftIDFile, in the data directory, holds this node's Raft id: the hash
// of its name for a node that bootstrapped or joined, a new one for a node
// that lost its data and rejoined (design.md: a Raft id is not the node's
// name).
const raftIDFile = "raft.id"

// raftIdentity returns the Raft id this node runs under and whether it must
// rejoin the cluster as a new member. A node with data keeps its id (the
// file, or the hash of its name for data from before the file). A node
// with an empty data directory asks the leader first (up to 1.5 s): if the
// leader knows it once acknowledged entries, it lost its data, and
// rejoining under its old id could make it vote twice in one term (Raft's
// safety); it takes a new id, joins as a learner and replaces its old self
// once caught up (RequestRejoin). Otherwise it is a new node: the hash of
// its name.
func raftIdentity(o options, c *clusterConfig, peers *peerStreams, log *slog.Logger) (uint64, bool, error) {
	path := filepath.Join(o.data, raftIDFile)
	if b, err := os.ReadFile(path); err == nil {
		id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64)
		if err != nil || id == 0 {
			return 0, false, fmt.Errorf("%s: not a raft id: %q", path, b)
		}
		// A new identity stopped while it was rejoining goes on: its empty
		// log joins (replication.Open) and it asks again (main).
		return id, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, false, err
	}
	fresh := !exists(filepath.Join(o.data, "wal")) && !exists(filepath.Join(o.data, "state.ckpt"))
	if !fresh {
		return c.self.ID, false, nil // data from before the file: the name's hash
	}
	id, rejoin := c.self.ID, false
	// A node started to join (--ha-join) keeps its name's id and waits to
	// be added, unless the leader knows it once acknowledged entries (it
	// was added and has lost its data since); every other empty node that a
	// leader answers rejoins under a new id.
	if leader, match, member, answered := peers.raft.LostData(1500 * time.Millisecond); answered && (!o.haJoin || member && match > 0) {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id, rejoin = replication.RaftID(c.self.Name+"#"+hex.EncodeToString(b[:])), true
		log.Warn("this node's data directory is empty, but its cluster has a leader: it rejoins under a new Raft id as a learner, and replaces its old self once caught up (it may have lost its data: it must not vote under its old id)",
			"leader", leader, "old_log_end_known_to_leader", match, "new_raft_id", fmt.Sprintf("%x", id))
	}
	if err := vfs.WriteFileAtomic(vfs.Default, o.data, raftIDFile, []byte(strconv.FormatUint(id, 16)+"\n")); err != nil {
		return 0, false, err
	}
	return id, rejoin, nil
}

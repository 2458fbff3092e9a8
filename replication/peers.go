package replication

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"keel/netio"
)

// Member is one node of a cluster as its configuration names it.
type Member struct {
	ID       uint64 `json:"id"`             // the Raft id (RaftID of Name)
	Name     string `json:"node_id"`        // RF_HA_NODE_ID: node1, ...
	RaftAddr string `json:"advertise_addr"` // host:port of its raft port
	HTTPURL  string `json:"http_addr"`      // http://host:port of its API, for redirects
	Priority int    `json:"priority"`       // higher is preferred as leader
}

// RaftID is the Raft id of the node named name: the FNV-1a hash of the
// name (never 0, raft's "none"). Raft ids must stay the same for a node
// for as long as the group exists; deriving them from the name makes
// them independent of the order of RF_HA_NODES.
func RaftID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}

// PeerTransport carries a node's Raft messages over a netio.Transport:
// Send marshals each message and queues it for its peer; what peers send
// is unmarshalled and stepped into the node. Messages a full queue
// refuses are dropped and counted: Raft resends.
type PeerTransport struct {
	tr     *netio.Transport
	self   string
	names  atomic.Pointer[map[uint64]string] // Raft id → node name, replaced whole on a membership change
	static map[string]string                 // node name → raft address in this node's own RF_HA_NODES
	node   atomic.Pointer[Node]
	log    *slog.Logger

	undecodable atomic.Uint64
	unknownTo   atomic.Uint64

	probeMu sync.Mutex
	probes  map[string]probeReply // LostData: what each leader answered

	snaps    snapServer // the leader's side of snapshot fetches
	fetchMu  sync.Mutex
	fetching *snapFetch // the follower's fetch in progress, if any
}

// NewPeerTransport builds the Raft side of tr's streams for members
// (this node included; its own entry is not dialed). Bind the node with
// SetNode once it is open; messages that arrive before are dropped.
func NewPeerTransport(tr *netio.Transport, self string, members []Member, log *slog.Logger) *PeerTransport {
	p := &PeerTransport{tr: tr, self: self, static: map[string]string{}, log: log,
		snaps: snapServer{sessions: map[string]*snapSession{}, serving: make(chan struct{}, snapServeMax)}}
	for _, m := range members {
		p.static[m.Name] = m.RaftAddr
	}
	p.SetMembers(members)
	return p
}

// SetMembers is Config.OnMembers: the streams follow the membership table.
// A peer is dialed at the address this node's own RF_HA_NODES gives for it
// (api.md: so a proxy can sit on any link); a member absent from it, at its
// advertised address.
func (p *PeerTransport) SetMembers(members []Member) {
	names := map[uint64]string{}
	old := p.nameMap()
	for _, m := range members {
		names[m.ID] = m.Name
		if m.Name == p.self {
			continue
		}
		addr, ok := p.static[m.Name]
		if !ok {
			addr = m.RaftAddr
		}
		p.tr.SetPeer(m.Name, addr)
	}
	for _, name := range old {
		if !slices.Contains(slices.Collect(maps.Values(names)), name) && name != p.self {
			p.tr.RemovePeer(name)
		}
	}
	p.names.Store(&names)
}

func (p *PeerTransport) nameMap() map[uint64]string {
	if m := p.names.Load(); m != nil {
		return *m
	}
	return nil
}

// SetNode binds the node that receives the peers' messages, and tells it
// how to see whether a peer is reachable (Node.Reachable).
func (p *PeerTransport) SetNode(n *Node) {
	n.reachable.Store(&reachableFunc{f: func(id uint64) bool { return p.tr.InboundOpen(p.nameMap()[id]) }, stats: p.tr.Stats})
	p.node.Store(n)
}

// Send is Config.Send: it runs on the node's loop, so it only marshals and
// queues.
func (p *PeerTransport) Send(msgs []raftpb.Message) {
	names := p.nameMap()
	for i := range msgs {
		m := &msgs[i]
		name, ok := names[m.To]
		if !ok {
			p.unknownTo.Add(1)
			continue
		}
		b := make([]byte, 1+m.Size())
		b[0] = peerRaft
		if _, err := m.MarshalToSizedBuffer(b[1:]); err != nil {
			p.log.Error("marshal raft message", "type", m.Type.String(), "to", name, "err", err)
			continue
		}
		p.tr.Send(name, b)
	}
}

// Handle is the netio.Handler: one message from peer from (a raft message,
// or part of a snapshot fetch).
func (p *PeerTransport) Handle(from string, msg []byte) {
	if len(msg) == 0 {
		p.undecodable.Add(1)
		return
	}
	switch msg[0] {
	case peerSnapRequest:
		// Served on its own goroutine, one request at a time per fetch
		// (the follower waits for each answer).
		req := append([]byte(nil), msg...)
		go p.serveSnapshot(from, req)
		return
	case peerSnapResponse:
		p.snapshotResponse(from, msg)
		return
	case peerProbe:
		// Answered by a leader only: how far the asker's log is known to
		// reach (0 if it never acknowledged an entry to this leader).
		if n := p.node.Load(); n != nil {
			st := n.Status()
			if st.Role == "leader" {
				var match uint64
				for _, f := range st.Followers {
					if p.nameMap()[f.ID] == from {
						match = f.Match
					}
				}
				member := byte(0)
				for _, m := range n.Members() {
					if m.Name == from && (st.IsVoter(m.ID) || st.IsLearner(m.ID)) {
						member = 1
					}
				}
				p.tr.Send(from, append(binary.LittleEndian.AppendUint64([]byte{peerProbeReply}, match), member))
			}
		}
		return
	case peerRejoin:
		// A node that lost its data asks to rejoin under a new id. Only
		// for its own name (its stream proves it, with TLS), on the leader.
		var m Member
		if n := p.node.Load(); n != nil && json.Unmarshal(msg[1:], &m) == nil && m.Name == from && m.ID != 0 &&
			n.Status().Role == "leader" {
			// Only a node the table names, under another id that votes:
			// a node that lost its data, not a stranger or a removed one.
			st := n.Status()
			known := false
			for _, old := range n.Members() {
				if old.Name == m.Name && old.ID != m.ID && (st.IsVoter(old.ID) || st.IsLearner(old.ID)) {
					// The table's entry (addresses, priority as added),
					// under the new id.
					id := m.ID
					m, known = old, true
					m.ID = id
				}
			}
			if _, ok := n.Member(m.ID); !ok && known {
				n.rejoin(m)
			}
		}
		return
	case peerProbeReply:
		if len(msg) == 10 {
			p.probeMu.Lock()
			if p.probes != nil {
				p.probes[from] = probeReply{match: binary.LittleEndian.Uint64(msg[1:]), member: msg[9] == 1}
			}
			p.probeMu.Unlock()
		}
		return
	case peerRaft:
	default:
		p.undecodable.Add(1)
		return
	}
	var m raftpb.Message
	if err := m.Unmarshal(msg[1:]); err != nil {
		p.undecodable.Add(1)
		return
	}
	ptr := p.names.Load()
	var names map[uint64]string
	if ptr != nil {
		names = *ptr
	}
	if name, ok := names[m.From]; ok && name != from || !ok && !slices.Contains(slices.Collect(maps.Values(names)), from) {
		// A message must come on its sender's own stream: a node cannot
		// speak for another (with mutual TLS, the stream's name is proven).
		p.undecodable.Add(1)
		return
	} else if !ok {
		// A known node under an id this node's table does not have yet
		// (it rejoined under a new id while this one was away): learn it,
		// so the answers reach it too, until the log's own table arrives.
		learned := maps.Clone(names)
		learned[m.From] = from
		p.names.CompareAndSwap(ptr, &learned)
	}
	n := p.node.Load()
	if n == nil || m.To != n.ID() {
		return // not bound yet, or for another identity of this name (Node.Step)
	}
	if m.Type == raftpb.MsgSnap {
		p.snapshotArrived(from, m) // stepped once its data is here
		return
	}
	n.Step(m)
}

// LostData asks the peers, for up to wait, whether a leader leads a group
// this node belongs to. A node that finds its data directory empty calls
// it before bootstrapping: if a leader answers, the group exists, and this
// node either lost its data or never started while the others formed the
// group. Either way it must not bootstrap, nor come back under its name's
// Raft id with an empty log (it could vote twice in a term; raft needs a
// voter to keep what it acknowledged): it rejoins under a new id. match is
// the highest index the leader knows this node acknowledged (0 if none, or
// if the leader was elected since); member whether its name is in the
// leader's table (a node started to join, --ha-join, that is not a member
// yet waits to be added under its name's id). Only when no leader answers
// (a new group, or most of it down) does the node bootstrap.
func (p *PeerTransport) LostData(wait time.Duration) (leader string, match uint64, member, answered bool) {
	p.probeMu.Lock()
	p.probes = map[string]probeReply{}
	p.probeMu.Unlock()
	defer func() {
		p.probeMu.Lock()
		p.probes = nil
		p.probeMu.Unlock()
	}()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		for _, name := range p.nameMap() {
			p.tr.Send(name, []byte{peerProbe})
		}
		time.Sleep(100 * time.Millisecond)
		p.probeMu.Lock()
		for name, r := range p.probes {
			leader, match, member, answered = name, r.match, r.member, true
		}
		p.probeMu.Unlock()
		if answered {
			return leader, match, member, true
		}
	}
	return "", 0, false, false
}

// probeReply is a leader's answer to LostData: the highest index it knows
// the asker acknowledged, and whether the asker's name is a member.
type probeReply struct {
	match  uint64
	member bool
}

// isMember reports whether name is one of the group's nodes.
func (p *PeerTransport) isMember(name string) bool {
	for _, n := range p.nameMap() {
		if n == name {
			return true
		}
	}
	return false
}

// Stats returns the streams' counters by peer name.
func (p *PeerTransport) Stats() map[string]netio.PeerStats { return p.tr.Stats() }

// ValidateMembers checks a cluster's configuration: names unique and
// non-empty, Raft ids distinct, self among them, at most 7 members.
func ValidateMembers(self string, members []Member) error {
	if len(members) == 0 || len(members) > 7 {
		return fmt.Errorf("a cluster has 1 to 7 members, not %d", len(members))
	}
	if self == "" {
		return fmt.Errorf("this node's id (RF_HA_NODE_ID) is not set")
	}
	names := map[string]bool{}
	addrs := map[string]string{}
	ids := map[uint64]string{}
	found := false
	for _, m := range members {
		if m.Name == "" {
			return fmt.Errorf("a member has no name")
		}
		if names[m.Name] {
			return fmt.Errorf("member %s is listed twice", m.Name)
		}
		names[m.Name] = true
		if other, ok := addrs[m.RaftAddr]; ok {
			return fmt.Errorf("members %s and %s have the same raft address %s", other, m.Name, m.RaftAddr)
		}
		addrs[m.RaftAddr] = m.Name
		if other, ok := ids[m.ID]; ok {
			return fmt.Errorf("members %s and %s have the same Raft id; rename one", other, m.Name)
		}
		ids[m.ID] = m.Name
		found = found || m.Name == self
	}
	if !found {
		return fmt.Errorf("this node (%s) is not among the members", self)
	}
	return nil
}

// RequestRejoin asks the leader, every half second until this node is in
// the configuration (or ten minutes passed), to add self (a new Raft id
// for this node's name) as a learner.
func (p *PeerTransport) RequestRejoin(self Member, n *Node) {
	b, err := json.Marshal(self)
	if err != nil {
		return
	}
	msg := append([]byte{peerRejoin}, b...)
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline) && !n.IsMember(); {
		for _, name := range p.nameMap() {
			if name != p.self {
				p.tr.Send(name, msg)
			}
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-n.done:
			return
		}
	}
	if n.IsMember() {
		p.log.Info("rejoined the cluster as a learner; the leader promotes this node once it has caught up", "raft_id", fmt.Sprintf("%x", self.ID))
	}
}

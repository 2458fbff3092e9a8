package replication

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"keel/engine"
)

// Snapshots between nodes (design.md, "Snapshots"): when a follower needs
// entries the leader no longer keeps, raft sends it MsgSnap. That message
// carries no data; the follower, before stepping it, pulls the leader's
// snapshot over the same peer streams: a manifest (the leader's last state
// checkpoint and the segment files holding what it vouches for), then each
// file in chunks of snapChunkBytes, each chunk asked for by file and
// offset, so a broken connection resumes where it stopped. The data goes
// into the store's staging directory. Then the follower steps the MsgSnap,
// with its metadata rewritten to the index, term and configuration of the
// checkpoint it received (at or after the one the leader named: a newer
// checkpoint is as good a snapshot), and the loop installs it when raft
// hands it over in a Ready. Nothing is loaded whole into memory but the
// state checkpoint.

// Message kinds on the peer streams: the first byte of every message.
const (
	peerRaft         = 0 // a raft message (raftpb.Message)
	peerSnapRequest  = 1 // follower → leader: fetch id u64 | op u8 | file u32 | offset u64
	peerSnapResponse = 2 // leader → follower: fetch id u64 | op u8 | op's body
	peerProbe        = 3 // a starting node with no data asks the leader about itself (no body)
	peerProbeReply   = 4 // the leader: the highest index it knows the asker acknowledged, u64
	peerRejoin       = 5 // a node that lost its data: its Member (new id), JSON
)

// Snapshot operations.
const (
	snapOpManifest = 1 // request: the manifest; response: count u32, (name len u16, name, size u64)*, file 0 the state checkpoint
	snapOpChunk    = 2 // request: file, offset; response: file u32 | offset u64 | bytes
	snapOpError    = 3 // response: the leader could not serve it (message)
	snapOpDone     = 4 // request: the fetch is over, forget it (no response)
)

const (
	snapChunkBytes    = 1 << 20
	snapRequestWait   = 2 * time.Second  // a request unanswered this long is sent again
	snapFetchMax      = 30 * time.Minute // a whole fetch
	snapSessionMax    = 2 * time.Minute  // the leader forgets a fetch idle this long
	snapRequestsRetry = 15               // consecutive unanswered requests (30 s) before a fetch gives up
	snapServeMax      = 4                // snapshot requests the leader serves at once (all peers)
)

// snapSession is a fetch the leader serves: the manifest's state bytes
// and files, fixed at the manifest request. A peer has at most one.
type snapSession struct {
	id    uint64
	ready chan struct{} // closed once state and files are set (or err)
	state []byte
	files []engine.SnapshotFile
	err   error
	used  time.Time
}

// snapServer is the leader's side: one session per peer, and a bound on
// the requests served at once.
type snapServer struct {
	mu       sync.Mutex
	sessions map[string]*snapSession // by peer name
	serving  chan struct{}           // semaphore of snapServeMax
}

// snapFetch is the follower's side of one fetch.
type snapFetch struct {
	id        uint64
	from      string
	responses chan []byte
}

func snapRequest(id uint64, op byte, file uint32, off uint64) []byte {
	b := []byte{peerSnapRequest}
	b = binary.LittleEndian.AppendUint64(b, id)
	b = append(b, op)
	b = binary.LittleEndian.AppendUint32(b, file)
	return binary.LittleEndian.AppendUint64(b, off)
}

// serveSnapshot answers one request of a follower (on its own goroutine:
// reading files must not hold up the stream's receiver). Only members are
// served, at most snapServeMax requests at once.
func (p *PeerTransport) serveSnapshot(from string, req []byte) {
	if len(req) != 1+8+1+4+8 || !p.isMember(from) {
		return
	}
	select {
	case p.snaps.serving <- struct{}{}:
		defer func() { <-p.snaps.serving }()
	default:
		return // busy: the follower asks again
	}
	id, op := binary.LittleEndian.Uint64(req[1:9]), req[9]
	file, off := binary.LittleEndian.Uint32(req[10:14]), binary.LittleEndian.Uint64(req[14:22])
	n := p.node.Load()
	if n == nil {
		return
	}
	head := binary.LittleEndian.AppendUint64([]byte{peerSnapResponse}, id)
	fail := func(err error) {
		p.log.Warn("snapshot request failed", "peer", from, "err", err)
		p.sendWait(from, append(append(head, snapOpError), err.Error()...))
	}
	now := time.Now()
	p.snaps.mu.Lock()
	for peer, s := range p.snaps.sessions {
		if now.Sub(s.used) > snapSessionMax {
			delete(p.snaps.sessions, peer)
		}
	}
	sess := p.snaps.sessions[from]
	if op == snapOpDone {
		if sess != nil && sess.id == id {
			delete(p.snaps.sessions, from)
		}
		p.snaps.mu.Unlock()
		return
	}
	if sess != nil && sess.id != id {
		if op != snapOpManifest {
			p.snaps.mu.Unlock()
			fail(fmt.Errorf("no such snapshot fetch %d", id))
			return
		}
		sess = nil // a new fetch from this peer replaces its old one
	}
	created := false
	if sess == nil && op == snapOpManifest {
		sess = &snapSession{id: id, ready: make(chan struct{})}
		p.snaps.sessions[from] = sess
		created = true
	}
	if sess != nil {
		sess.used = now
	}
	p.snaps.mu.Unlock()
	if sess == nil {
		fail(fmt.Errorf("no such snapshot fetch %d", id))
		return
	}
	if created {
		sess.state, sess.files, sess.err = n.store.SnapshotManifest()
		close(sess.ready)
		if sess.err == nil {
			p.log.Info("serving a snapshot", "peer", from, "files", len(sess.files), "state_bytes", len(sess.state))
		}
	}
	<-sess.ready
	if sess.err != nil {
		fail(sess.err)
		return
	}
	switch op {
	case snapOpManifest:
		b := append(head, snapOpManifest)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(sess.files)+1))
		b = appendSnapName(b, engine.SnapshotStateFile, int64(len(sess.state)))
		for _, f := range sess.files {
			b = appendSnapName(b, f.Rel, f.Size)
		}
		p.sendWait(from, b)
	case snapOpChunk:
		if int(file) > len(sess.files) {
			fail(fmt.Errorf("no file %d in snapshot fetch %d", file, id))
			return
		}
		b := append(head, snapOpChunk)
		b = binary.LittleEndian.AppendUint32(b, file)
		b = binary.LittleEndian.AppendUint64(b, off)
		if file == 0 {
			if off < uint64(len(sess.state)) {
				b = append(b, sess.state[off:min(uint64(len(sess.state)), off+snapChunkBytes)]...)
			}
		} else {
			f := sess.files[file-1]
			size := min(int64(snapChunkBytes), f.Size-int64(off))
			if size > 0 {
				start := len(b)
				b = append(b, make([]byte, size)...)
				k, err := n.store.ReadSnapshotFile(f, int64(off), b[start:])
				if err != nil {
					fail(err)
					return
				}
				b = b[:start+k]
			}
		}
		p.sendWait(from, b)
	}
}

func appendSnapName(b []byte, name string, size int64) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	return binary.LittleEndian.AppendUint64(b, uint64(size))
}

// sendWait queues msg for peer, waiting (bounded) while its queue is full:
// snapshot data is backpressured, not dropped.
func (p *PeerTransport) sendWait(to string, msg []byte) {
	for i := 0; i < 500 && !p.tr.Send(to, msg); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// snapshotArrived handles a MsgSnap from the leader: it starts a fetch
// unless one runs; the message is stepped once the data is staged.
func (p *PeerTransport) snapshotArrived(from string, m raftpb.Message) {
	n := p.node.Load()
	if n == nil {
		return
	}
	if m.Snapshot != nil && m.Snapshot.Metadata.Index <= n.Status().Commit {
		// An offer this node has moved past (raft ignores it and answers
		// with its commit index, which moves the leader on): no fetch.
		n.Step(m)
		return
	}
	p.fetchMu.Lock()
	if p.fetching != nil {
		p.fetchMu.Unlock()
		return // raft sends MsgSnap again while the fetch runs: one is enough
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	f := &snapFetch{id: binary.LittleEndian.Uint64(idb[:]), from: from, responses: make(chan []byte, 16)}
	p.fetching = f
	p.fetchMu.Unlock()
	go func() {
		err := p.fetch(f, m)
		p.fetchMu.Lock()
		p.fetching = nil
		p.fetchMu.Unlock()
		if err != nil {
			p.log.Error("snapshot fetch failed; the leader will offer one again", "leader", from, "err", err)
		}
	}()
}

// snapshotResponse routes a response to the fetch it answers.
func (p *PeerTransport) snapshotResponse(from string, msg []byte) {
	if len(msg) < 10 {
		return
	}
	id := binary.LittleEndian.Uint64(msg[1:9])
	p.fetchMu.Lock()
	f := p.fetching
	p.fetchMu.Unlock()
	if f == nil || f.id != id || f.from != from {
		return
	}
	cp := append([]byte(nil), msg[9:]...) // msg is the stream's buffer
	select {
	case f.responses <- cp:
	default: // a stale duplicate while the fetcher is busy: dropped, it asks again
	}
}

// fetch pulls the snapshot into the store's staging directory, then steps
// the MsgSnap for the loop to install.
func (p *PeerTransport) fetch(f *snapFetch, m raftpb.Message) error {
	n := p.node.Load()
	if n == nil {
		return errors.New("no node")
	}
	start := time.Now()
	deadline := start.Add(snapFetchMax)
	g, err := n.store.BeginSnapshot()
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			g.Abort()
		}
	}()
	defer p.tr.Send(f.from, snapRequest(f.id, snapOpDone, 0, 0)) // the leader may forget it
	// ask sends a request until a response of op (or an error) comes back.
	ask := func(op byte, file uint32, off uint64, ok func(resp []byte) bool) ([]byte, error) {
		req := snapRequest(f.id, op, file, off)
		for tries := 0; tries < snapRequestsRetry; tries++ {
			if time.Now().After(deadline) {
				return nil, errors.New("snapshot fetch took too long")
			}
			if st := n.Status(); st.Lead != raft.None && st.Lead != m.From {
				// Another node leads now: it will offer its own snapshot.
				return nil, fmt.Errorf("%s no longer leads", f.from)
			}
			p.tr.Send(f.from, req)
			timer := time.NewTimer(snapRequestWait)
			for {
				select {
				case resp := <-f.responses:
					if resp[0] == snapOpError {
						timer.Stop()
						return nil, fmt.Errorf("the leader: %s", resp[1:])
					}
					if resp[0] == op && ok(resp[1:]) {
						timer.Stop()
						return resp[1:], nil
					}
					continue // an answer to an earlier request
				case <-timer.C:
				}
				break
			}
		}
		return nil, fmt.Errorf("no answer from %s after %d requests", f.from, snapRequestsRetry)
	}
	man, err := ask(snapOpManifest, 0, 0, func([]byte) bool { return true })
	if err != nil {
		return err
	}
	files, err := decodeSnapManifest(man)
	if err != nil {
		return err
	}
	var state []byte
	var total int64
	for i, file := range files {
		for off := int64(0); off < file.Size; {
			want := uint64(off)
			resp, err := ask(snapOpChunk, uint32(i), want, func(r []byte) bool {
				return len(r) >= 12 && binary.LittleEndian.Uint32(r) == uint32(i) && binary.LittleEndian.Uint64(r[4:]) == want
			})
			if err != nil {
				return err
			}
			data := resp[12:]
			if len(data) == 0 {
				return fmt.Errorf("%s shrank on the leader at %d of %d bytes", file.Rel, off, file.Size)
			}
			if i == 0 {
				state = append(state, data...)
			}
			if err := g.WriteAt(file.Rel, off, data); err != nil {
				return err
			}
			off += int64(len(data))
			total += int64(len(data))
		}
	}
	index, term, blob, err := engine.StateIndex(state)
	if err != nil {
		return err
	}
	rs, err := decodeReplicationState(blob)
	if err != nil {
		return err
	}
	p.log.Info("snapshot fetched", "leader", f.from, "index", index, "files", len(files), "bytes", total, "took", time.Since(start).Round(time.Millisecond).String())
	m.Snapshot = &raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: index, Term: term, ConfState: rs.confState}}
	keep = true
	n.stepSnapshot(m, g, rs.members, rs.confIndex)
	// No other fetch may clear the staging directory before the loop has
	// installed this one, or dropped it (raft had moved past it).
	select {
	case <-g.Released():
	case <-time.After(snapFetchMax):
		return errors.New("the staged snapshot was neither installed nor dropped")
	}
	return nil
}

func decodeSnapManifest(b []byte) ([]engine.SnapshotFile, error) {
	if len(b) < 4 {
		return nil, errors.New("short snapshot manifest")
	}
	count := binary.LittleEndian.Uint32(b)
	b = b[4:]
	var files []engine.SnapshotFile
	for range count {
		if len(b) < 2 {
			return nil, errors.New("short snapshot manifest")
		}
		l := int(binary.LittleEndian.Uint16(b))
		if len(b) < 2+l+8 {
			return nil, errors.New("short snapshot manifest")
		}
		files = append(files, engine.SnapshotFile{Rel: string(b[2 : 2+l]), Size: int64(binary.LittleEndian.Uint64(b[2+l:]))})
		b = b[2+l+8:]
	}
	if len(files) == 0 || files[0].Rel != engine.SnapshotStateFile {
		return nil, errors.New("snapshot manifest without the state checkpoint")
	}
	return files, nil
}

// stepSnapshot hands a MsgSnap whose data is staged in g to the loop.
func (n *Node) stepSnapshot(m raftpb.Message, g *engine.SnapshotStaging, members []Member, confIndex uint64) {
	select {
	case n.snapshots <- stagedSnapshot{msg: m, staging: g, members: members, confIndex: confIndex}:
	case <-n.done:
		g.Abort()
	}
}

// stagedSnapshot is a MsgSnap with its data in the staging directory.
type stagedSnapshot struct {
	msg       raftpb.Message
	staging   *engine.SnapshotStaging
	members   []Member // the leader's membership table as of the snapshot
	confIndex uint64
}

// takeStagedSnapshot steps a fetched snapshot into raft (on the loop);
// the Ready that follows installs it, or, when raft ignores it (its log
// moved past the snapshot meanwhile), dropStagedSnapshot drops it after the
// turn.
func (n *Node) takeStagedSnapshot(s stagedSnapshot) {
	n.dropStagedSnapshot()
	n.settleCheckpoint()
	n.staged, n.stagedMembers, n.stagedConfIndex = s.staging, s.members, s.confIndex
	if err := n.rn.Step(s.msg); err != nil {
		n.log.Warn("snapshot refused by raft", "err", err)
	}
}

// settleCheckpoint waits for a state checkpoint being written in the
// background: it captured the state before the snapshot, and written after
// the install it would put that old state back over the installed one.
func (n *Node) settleCheckpoint() {
	if n.ckptRunning {
		n.finishStateCheckpoint(<-n.ckptDone)
	}
}

// dropStagedSnapshot aborts a staged snapshot raft did not hand back.
func (n *Node) dropStagedSnapshot() {
	if n.staged != nil {
		n.staged.Abort()
		n.staged = nil
	}
}

// installSnapshot makes the snapshot raft handed over the node's state:
// the staged files replace the store's, raft's log restarts after it, and
// the state checkpoint saved with it names this node's WAL position, so a
// restart replays only what follows.
func (n *Node) installSnapshot(snap raftpb.Snapshot, hs raftpb.HardState) error {
	if n.staged == nil {
		return errors.New("replication: raft handed over a snapshot whose data was not fetched")
	}
	n.settleCheckpoint()
	if raft.IsEmptyHardState(hs) {
		hs = n.prevHS
	}
	hs.Commit = max(hs.Commit, snap.Metadata.Index)
	if n.stagedMembers != nil {
		clear(n.members)
		for _, m := range n.stagedMembers {
			n.members[m.ID] = m
		}
		n.confIndex = n.stagedConfIndex
		n.publishMembers()
	}
	st := replicationState{replayFrom: n.wal.NextOffset(), hardState: hs, confState: snap.Metadata.ConfState,
		members: n.membersList(), confIndex: n.confIndex}
	if err := n.store.InstallSnapshot(n.staged, st.encode()); err != nil {
		return fmt.Errorf("replication: install snapshot at %d: %w", snap.Metadata.Index, err)
	}
	n.staged = nil
	if err := n.storage.ApplySnapshot(snap); err != nil {
		return fmt.Errorf("replication: snapshot at %d: %w", snap.Metadata.Index, err)
	}
	n.confState = snap.Metadata.ConfState
	n.marks, n.logSizes, n.walSinceCkpt = n.marks[:0], n.logSizes[:0], 0
	n.lastCkpt = n.now()
	n.log.Info("snapshot installed", "index", snap.Metadata.Index, "term", snap.Metadata.Term)
	return nil
}

package replication

import (
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"keel/engine/logstore"
	"keel/engine/record"
)

// Log appends run off the loop, on the appender goroutine: etcd raft's
// asynchronous storage writes (raft's doc.go, "Usage with Asynchronous
// Storage Writes"). Each Ready hands its entries and HardState over in a
// MsgStorageAppend; the appender writes every job waiting for it as one WAL
// batch (one write, one fdatasync) and hands them back; the loop then
// updates raft's storage and delivers each job's responses (the member's
// own acknowledgement, and a follower's MsgAppResp or vote) in order.
//
// Meanwhile the loop keeps stepping messages: a follower's acknowledgement
// that arrives while the leader's own fdatasync runs commits at once, where
// a synchronous write made it wait for the end of that fsync and of the
// next (a closed-loop client saw two to three fsyncs per write instead of
// one). A follower receives the next appends while it syncs the last, and
// writes all of them with its next fsync.
//
// Nothing is answered earlier than before: raft commits an entry once a
// majority has written it, and applies on this node only entries written
// here (with asynchronous writes, CommittedEntries holds only stable
// entries).

// appendJob is one MsgStorageAppend on its way through the appender.
type appendJob struct {
	msg     raftpb.Message // Entries, the HardState fields, Responses; never a Snapshot (installed on the loop)
	writeHS bool           // the HardState is written (term or vote changed, or entries come with it)
	waiters []*waiter      // proposals whose entries it carries (stage timings)

	// Set by the write.
	marks   []walMark // where its entries went
	batch   uint64    // last WAL batch that holds its records (0: it wrote none)
	bytes   int64     // record bytes written
	walNext uint64    // the WAL's next offset after the write of its group
	err     error
}

// appendInflightMax bounds the jobs handed to the appender and not yet
// taken back by the loop; at the bound the loop waits for the appender.
// A follower makes a job per append message, which the leader bounds by
// MaxInflightMsgs (256) per follower.
const appendInflightMax = 1024

// hardStateOf returns the HardState a MsgStorageAppend carries (empty when
// it carries none: raft then leaves the three fields zero).
func hardStateOf(m *raftpb.Message) raftpb.HardState {
	return raftpb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
}

// startAppender runs the appender goroutine (Start).
func (n *Node) startAppender() {
	n.appendQ = make(chan *appendJob, appendInflightMax)
	n.appendDone = make(chan []*appendJob, appendInflightMax)
	n.appenderExited = make(chan struct{})
	go n.appender()
}

// appender writes jobs until appendQ is closed: everything waiting when it
// comes round goes into one group (one fdatasync).
func (n *Node) appender() {
	defer close(n.appenderExited)
	var buf []byte
	var failed error // once a group failed, no later one is written: the WAL would have a hole
	for j := range n.appendQ {
		jobs := []*appendJob{j}
	more:
		for {
			select {
			case j, ok := <-n.appendQ:
				if !ok {
					break more
				}
				jobs = append(jobs, j)
			default:
				break more
			}
		}
		if failed == nil {
			n.writeJobs(jobs, &buf)
			failed = jobs[0].err
		} else {
			for _, j := range jobs {
				j.err = failed
			}
		}
		n.appendDone <- jobs // never blocks: its capacity is the bound on jobs in flight
	}
}

// newAppendJob makes a job of a MsgStorageAppend (on the loop).
func (n *Node) newAppendJob(m raftpb.Message) *appendJob {
	hs := hardStateOf(&m)
	j := &appendJob{
		msg:     m,
		writeHS: !raft.IsEmptyHardState(hs) && (len(m.Entries) > 0 || hs.Term != n.submittedHS.Term || hs.Vote != n.submittedHS.Vote),
	}
	if !raft.IsEmptyHardState(hs) {
		n.submittedHS = hs
	}
	if len(m.Entries) > 0 {
		n.lastLogIndex = m.Entries[len(m.Entries)-1].Index // a rewritten suffix ends the log where it ends
	}
	if len(m.Entries) > 0 && len(n.unpersisted) > 0 {
		j.waiters = n.unpersisted
		n.unpersisted = nil
	}
	return j
}

// submitAppend hands a MsgStorageAppend to the appender, or, without one
// (the deterministic harness drives the loop by hand), writes it and
// delivers its responses at once.
func (n *Node) submitAppend(m raftpb.Message) {
	j := n.newAppendJob(m)
	if n.appendQ == nil || n.appendInflight == 0 && (len(m.Entries) == 0 && !j.writeHS || n.alone()) {
		// Written here, now: without an appender (the deterministic
		// harness drives the loop by hand); when there is nothing to write
		// (a commit index moved) and nothing before it in flight, so its
		// responses are due now; and on a member with nobody to hear from
		// while it syncs, where the two hand-overs between goroutines cost
		// a single node 15% of its produces (36.4K/35.6K against 43.0K/41.8K
		// req/s, keel bench produce-64, alternated).
		n.appendNow(j)
		return
	}
	for n.appendInflight >= appendInflightMax {
		n.takeAppended(<-n.appendDone)
	}
	n.appendInflight++
	n.appendQ <- j
}

// alone reports whether this member is the group's only member: no
// acknowledgement can arrive while its own write runs.
func (n *Node) alone() bool {
	cs := &n.confState
	return !n.appendAloneAsync && len(cs.Voters) == 1 && cs.Voters[0] == n.cfg.ID && len(cs.Learners) == 0 &&
		len(cs.VotersOutgoing) == 0 && len(cs.LearnersNext) == 0
}

// appendNow writes j on the loop and delivers its responses.
func (n *Node) appendNow(j *appendJob) {
	jobs := []*appendJob{j}
	n.writeJobs(jobs, &n.marshalBuf)
	n.finishAppends(jobs)
}

// takeAppended takes back jobs the appender wrote.
func (n *Node) takeAppended(jobs []*appendJob) {
	n.appendInflight -= len(jobs)
	n.finishAppends(jobs)
}

// drainAppends waits until every job handed to the appender is back and
// delivered (before a snapshot is installed, and at stop).
func (n *Node) drainAppends() {
	for n.appendInflight > 0 {
		n.takeAppended(<-n.appendDone)
	}
}

// writeJobs writes the records of jobs as WAL batches, each made durable
// (unless in rocket mode) before the next is written. buf is the caller's
// reusable marshalling buffer. The first error is set on every job.
func (n *Node) writeJobs(jobs []*appendJob, buf *[]byte) {
	t0 := time.Now()
	size0 := n.wal.NextOffset()
	var recs []logstore.Record
	type pendingMark struct {
		job  *appendJob
		mark walMark
	}
	var pending []pendingMark
	var inBatch []*appendJob // jobs with records in recs
	size := 0
	var err error
	flush := func() {
		if len(recs) == 0 || err != nil {
			return
		}
		first, batch, werr := n.wal.AppendBatch(recs, !n.cfg.Rocket)
		if werr != nil {
			err = fmt.Errorf("replication: persist: %w", werr)
			return
		}
		for _, p := range pending {
			p.mark.batch = batch
			p.mark.walOffset += first
			p.job.marks = append(p.job.marks, p.mark)
		}
		for _, j := range inBatch {
			j.batch = batch
		}
		recs, pending, inBatch, size = recs[:0], pending[:0], inBatch[:0], 0
	}
	*buf = (*buf)[:0]
	for _, j := range jobs {
		ents := j.msg.Entries
		wrote := false
		for i := range ents {
			// Marshalled into one reused buffer: recs point into it until
			// the batch is written, and appends never move what is already
			// there (a full buffer is replaced, not grown).
			sz := ents[i].Size()
			if cap(*buf)-len(*buf) < sz {
				*buf = make([]byte, 0, max(sz, min(2*cap(*buf), marshalBufKeepBytes)))
			}
			start := len(*buf)
			*buf = (*buf)[:start+sz]
			b := (*buf)[start : start+sz : start+sz]
			if _, merr := ents[i].MarshalToSizedBuffer(b); merr != nil && err == nil {
				err = merr
			}
			// Counted as on disk, headers and padding included: the log
			// refuses a batch past its limit by that count (a group of many
			// small entries is far larger than its payloads).
			if size+record.FrameBytes(len(b)) > n.walBatchBytes() && len(recs) > 0 {
				flush()
			}
			pending = append(pending, pendingMark{job: j, mark: walMark{index: ents[i].Index, walOffset: uint64(len(recs))}})
			recs = append(recs, logstore.Record{Type: logstore.RecordRaftEntry, Payload: b})
			size += record.FrameBytes(len(b))
			j.bytes += int64(len(b))
			wrote = true
		}
		// The HardState goes after the job's entries, in the same batch as
		// the last of them: if a crash cuts a long append short, the commit
		// index never points past the entries that reached the disk.
		if j.writeHS {
			hs := hardStateOf(&j.msg)
			b, merr := hs.Marshal()
			if merr != nil && err == nil {
				err = merr
			}
			recs = append(recs, logstore.Record{Type: logstore.RecordRaftState, Payload: b})
			size += record.FrameBytes(len(b))
			j.bytes += int64(len(b))
			wrote = true
		}
		if wrote {
			inBatch = append(inBatch, j)
		}
	}
	flush()
	if cap(*buf) > marshalBufKeepBytes {
		*buf = nil // an occasional huge append does not stay resident
	}
	next := n.wal.NextOffset()
	waiting := 0
	for _, j := range jobs {
		j.err, j.walNext = err, next
		waiting += len(j.waiters)
	}
	if err == nil && size0 != next {
		n.timings.recordFsync(time.Since(t0).Microseconds(), waiting)
	}
}

// finishAppends takes back written jobs, in order, on the loop: raft's
// storage gets their entries and HardState, and their responses are
// delivered (stepped here, or sent to peers). The first failed job is a
// storage fault: nothing after it is delivered.
func (n *Node) finishAppends(jobs []*appendJob) {
	if n.Fault() != nil {
		return
	}
	for _, j := range jobs {
		if j.err != nil {
			n.setFault(j.err)
			return
		}
		if err := n.finishAppend(j); err != nil {
			n.setFault(err)
			return
		}
	}
}

func (n *Node) finishAppend(j *appendJob) error {
	n.addMarks(j.marks)
	if j.batch != 0 && !n.cfg.Rocket {
		n.setLastSynced(j.batch)
	}
	n.walSinceCkpt += j.bytes
	n.walConfirmed = j.walNext
	if hs := hardStateOf(&j.msg); !raft.IsEmptyHardState(hs) {
		n.prevHS = hs
		if err := n.storage.SetHardState(hs); err != nil {
			return err
		}
	}
	if err := n.storage.Append(j.msg.Entries); err != nil {
		return err
	}
	if len(j.msg.Entries) > 0 {
		n.lastStableIndex = j.msg.Entries[len(j.msg.Entries)-1].Index
	}
	n.trackLogSizes(j.msg.Entries)
	if len(j.waiters) > 0 {
		now := time.Now()
		for _, w := range j.waiters {
			w.persisted = now
		}
	}
	n.deliverResponses(j.msg.Responses)
	return nil
}

// deliverResponses steps the responses addressed to this member and sends
// the others to their peers: they vouch for state now durable.
func (n *Node) deliverResponses(rs []raftpb.Message) {
	var out []raftpb.Message
	for _, r := range rs {
		if r.To == n.cfg.ID {
			_ = n.rn.Step(r)
			continue
		}
		out = append(out, r)
	}
	if len(out) > 0 && n.cfg.Send != nil {
		n.cfg.Send(out)
	}
}

package replication

import (
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
)

// proposeBatch packs first and every other waiting proposal into entries
// of at most EntryBytesMax command bytes, up to ReadyBytesMax per turn.
func (n *Node) proposeBatch(first *waiter) {
	now := time.Now()            // for the stage timings (timing=1)
	nowMs := n.now().UnixMilli() // the leader's time, written into the entry
	var entry []byte
	var members []*waiter
	total := 0
	flush := func() {
		if len(members) == 0 {
			return
		}
		if err := n.rn.Propose(entry); err != nil {
			// Dropped: leadership moved (or is being transferred) since
			// the queue was taken, or the uncommitted log is full.
			fail := fmt.Errorf("%w: %v", ErrOverloaded, err)
			if n.rn.BasicStatus().RaftState != raft.StateLeader {
				fail = ErrNotLeader
			}
			for _, w := range members {
				n.fail(w, fail)
			}
		} else {
			n.unpersisted = append(n.unpersisted, members...)
		}
		entry, members = nil, nil
	}
	add := func(w *waiter) {
		n.queuedBytes.Add(-int64(len(w.data)))
		if len(entry) > 0 && len(entry)+len(w.data) > n.cfg.EntryBytesMax {
			flush()
		}
		if entry == nil {
			// Sized for everything queued now, so appends rarely regrow it.
			size := min(int64(n.cfg.EntryBytesMax), n.queuedBytes.Load()+int64(len(w.data))+64)
			entry = n.store.AppendEntryHeader(make([]byte, 0, size), nowMs)
		}
		entry = append(entry, w.data...) // w.data is not used after this
		w.proposed = now
		members = append(members, w)
		total += len(w.data)
	}
	add(first)
	for total < n.cfg.ReadyBytesMax {
		select {
		case p := <-n.queue:
			add(p)
			continue
		default:
		}
		break
	}
	flush()
}

func (n *Node) fail(w *waiter, err error) {
	if w2, ok := n.waiters.take(w.id); ok {
		w2.err = err
		w2.done <- struct{}{}
	}
}

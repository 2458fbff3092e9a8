package replication

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"go.etcd.io/raft/v3"
)

// TestScripts runs the data-driven scenarios in testdata/scripts, in the
// spirit of etcd raft's rafttest: each file is a script of steps on a
// testCluster (the deterministic harness) and the state expected after
// each. Run with -rewrite to regenerate the expectations, then read the
// diff: it is the test.
//
// Commands (ids are member ids; "leader" names the member that leads in
// the highest term):
//
//	cluster n=3 [priorities=(1,5,3)] [concern=3]
//	                               a fresh group of n members, none leading
//	campaign 1                     member 1 starts an election; messages settle
//	propose <id|leader> <value>    enqueue a produce to topic t; prints its name (w1, w2, ...)
//	stabilize [ticks=N]            deliver and run until idle; with ticks, let up to N ticks
//	                               pass while proposals wait or messages are in flight
//	tick [n=N]                     every running member ticks n times (1), settling after each
//	is-leader 1                    whether member 1 leads now
//	join 4                         start member 4 with no data, to be added (Config.Join)
//	add 4 / promote 4 / remove 2   a membership change proposed on the leader; answer c<k>
//	members 1                      the membership table and roles as member 1 sees them
//	roles                          how many running members have each role
//	await-leader among=(2,3) ticks=N  tick until one of those leads, or fail
//	answer w1                      the proposal's answer: ok offset=N, pending, or the error
//	read <id|leader>               a linearizable read on that member; answer r2 says
//	                               ok (confirmed and applied), pending, or the error
//	partition a=(1) b=(2,3)        cut every link between the two sides
//	heal                           restore every link
//	net drop=0.3 delay=2 reorder=true duplicate=0.1
//	                               faults on every link (no arguments: none)
//	crash 3 / restart 3            kill -9 a member / start it again on its files
//	status                         role and applied index of each member (not the term:
//	                               elections driven by ticks are randomized)
//	agree                          every running member holds the same values in topic t,
//	                               printed once; a member that differs fails the test
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/scripts", func(t *testing.T, path string) {
		env := &scriptEnv{}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return env.run(t, d)
		})
	})
}

type scriptEnv struct {
	c         *testCluster
	proposals map[string]*scriptProposal
	reads     map[string]*scriptRead
	confs     map[string]*confReq
	named     int
}

// scriptRead is a linearizable read issued on a member.
type scriptRead struct {
	member uint64
	r      *readReq
	answer string
}

func (p *scriptRead) poll() bool {
	if p.answer != "" {
		return true
	}
	select {
	case err := <-p.r.done:
		p.answer = "ok"
		if err != nil {
			p.answer = "error: " + err.Error()
		}
		return true
	default:
		return false
	}
}

type scriptProposal struct {
	member uint64
	w      *waiter
	answer string // once answered
}

// poll records p's answer once the member gave it.
func (p *scriptProposal) poll() bool {
	if p.answer != "" {
		return true
	}
	select {
	case <-p.w.done:
	default:
		return false
	}
	switch {
	case p.w.err != nil:
		p.answer = fmt.Sprintf("error: %v", p.w.err)
	case p.w.out.Err != nil:
		p.answer = fmt.Sprintf("refused: %v", p.w.out.Err)
	default:
		p.answer = fmt.Sprintf("ok offset=%d", p.w.out.Offset)
	}
	return true
}

func (e *scriptEnv) run(t *testing.T, d *datadriven.TestData) string {
	if d.Cmd != "cluster" && e.c == nil {
		d.Fatalf(t, "%s before cluster", d.Cmd)
	}
	if e.c != nil {
		e.c.t = t // each directive is a subtest of its own
		for _, h := range e.c.members {
			h.t = t
		}
	}
	switch d.Cmd {
	case "cluster":
		var n int
		d.ScanArgs(t, "n", &n)
		var prio []int
		if d.HasArg("priorities") {
			for _, v := range argVals(t, d, "priorities") {
				p, err := strconv.Atoi(v)
				if err != nil {
					d.Fatalf(t, "priority %q: %v", v, err)
				}
				prio = append(prio, p)
			}
			if len(prio) != n {
				d.Fatalf(t, "%d priorities for %d members", len(prio), n)
			}
		}
		concern := 0
		if d.HasArg("concern") {
			d.ScanArgs(t, "concern", &concern)
		}
		e.c = newTestClusterPrioConcern(t, n, prio, concern)
		e.proposals = map[string]*scriptProposal{}
		e.reads = map[string]*scriptRead{}
		e.confs = map[string]*confReq{}
		return fmt.Sprintf("%d members", n)
	case "campaign":
		e.c.campaign(e.member(t, d, 0))
		return e.status()
	case "propose":
		if len(d.CmdArgs) != 2 {
			d.Fatalf(t, "propose <id|leader> <value>")
		}
		id := e.member(t, d, 0)
		e.named++
		name := fmt.Sprintf("w%d", e.named)
		w, err := e.c.members[id].n.enqueue(produceCmd("t", "", d.CmdArgs[1].Key), time.Now().Add(harnessDeadline))
		if err != nil {
			return fmt.Sprintf("%s refused: %v", name, err)
		}
		e.proposals[name] = &scriptProposal{member: id, w: w}
		return name
	case "stabilize":
		ticks := 0
		if d.HasArg("ticks") {
			d.ScanArgs(t, "ticks", &ticks)
		}
		e.c.stabilize()
		used := 0
		for ; used < ticks && e.busy(); used++ {
			e.c.tickAll()
			e.c.stabilize()
		}
		if e.busy() {
			return fmt.Sprintf("not settled after %d ticks", ticks)
		}
		return "settled"
	case "tick":
		n := 1
		if d.HasArg("n") {
			d.ScanArgs(t, "n", &n)
		}
		for range n {
			e.c.tickAll()
			e.c.stabilize()
		}
		return fmt.Sprintf("ticked %d", n)
	case "await-leader":
		var ticks int
		among := argVals(t, d, "among")
		d.ScanArgs(t, "ticks", &ticks)
		for range ticks {
			for _, s := range among {
				id, _ := strconv.ParseUint(s, 10, 64)
				if e.c.members[id].n.rn.BasicStatus().RaftState == raft.StateLeader {
					return "a leader among " + strings.Join(among, ",")
				}
			}
			e.c.tickAll()
			e.c.stabilize()
		}
		d.Fatalf(t, "no leader among %v after %d ticks", among, ticks)
	case "read":
		// As LinearizableRead does, without blocking: queue it for the
		// member's loop (run by the next settle).
		id := e.member(t, d, 0)
		if e.c.members[id].n.Status().Role != "leader" {
			return "refused: not the leader"
		}
		e.named++
		name := fmt.Sprintf("r%d", e.named)
		r := &readReq{done: make(chan error, 1)}
		e.c.members[id].n.reads <- r
		e.reads[name] = &scriptRead{member: id, r: r}
		return name
	case "answer":
		name := d.CmdArgs[0].Key
		if req, ok := e.confs[name]; ok {
			select {
			case r := <-req.done:
				req.done <- r // keep it for a later answer
				if r.err != nil {
					return name + ": error: " + r.err.Error()
				}
				return fmt.Sprintf("%s: ok index=%d", name, r.index)
			default:
				return name + ": pending"
			}
		}
		if rd, ok := e.reads[name]; ok {
			if !rd.poll() {
				return name + ": pending"
			}
			return name + ": " + rd.answer
		}
		p, ok := e.proposals[name]
		if !ok {
			d.Fatalf(t, "no proposal %s", name)
		}
		if !p.poll() {
			return name + ": pending"
		}
		return name + ": " + p.answer
	case "partition":
		a, b := argVals(t, d, "a"), argVals(t, d, "b")
		e.c.partition(ids(t, a), ids(t, b))
		return "cut " + strings.Join(a, ",") + " | " + strings.Join(b, ",")
	case "heal":
		e.c.heal()
		return "healed"
	case "net":
		f := netFaults{}
		for _, arg := range d.CmdArgs {
			var err error
			switch arg.Key {
			case "drop":
				f.drop, err = strconv.ParseFloat(arg.Vals[0], 64)
			case "duplicate":
				f.duplicate, err = strconv.ParseFloat(arg.Vals[0], 64)
			case "delay":
				f.delayMax, err = strconv.Atoi(arg.Vals[0])
			case "reorder":
				f.reorder, err = strconv.ParseBool(arg.Vals[0])
			default:
				d.Fatalf(t, "net: unknown fault %s", arg.Key)
			}
			if err != nil {
				d.Fatalf(t, "net %s: %v", arg.Key, err)
			}
		}
		e.c.faults = f
		return fmt.Sprintf("%+v", f)
	case "crash":
		id := e.member(t, d, 0)
		e.c.crash(id)
		return fmt.Sprintf("%d crashed", id)
	case "restart":
		id := e.member(t, d, 0)
		e.c.start(id)
		return fmt.Sprintf("%d restarted", id)
	case "join":
		id := uint64(0)
		if _, err := fmt.Sscan(d.CmdArgs[0].Key, &id); err != nil || e.c.members[id] != nil {
			d.Fatalf(t, "join: %q is not a new member id", d.CmdArgs[0].Key)
		}
		e.c.join(id)
		return fmt.Sprintf("%d started, waiting to be added", id)
	case "add", "promote", "remove":
		// A membership change of member <id> (named n<id>), proposed on the
		// leader as AddLearner, Promote and RemoveMember do; answer c<k>
		// says how it went.
		if len(d.CmdArgs) != 1 {
			d.Fatalf(t, "%s <id>", d.Cmd)
		}
		var id uint64
		fmt.Sscan(d.CmdArgs[0].Key, &id)
		kind := map[string]confKind{"add": confAdd, "promote": confPromote, "remove": confRemove}[d.Cmd]
		req := &confReq{kind: kind, member: Member{ID: id, Name: fmt.Sprintf("n%d", id)}, id: uint64(1000 + e.named), done: make(chan confResult, 1)}
		e.named++
		name := fmt.Sprintf("c%d", e.named)
		e.c.members[e.c.leader()].n.confs <- req
		e.confs[name] = req
		return name
	case "members":
		// The membership table and roles as member id sees them.
		id := e.member(t, d, 0)
		st := e.c.members[id].n.Status()
		var b strings.Builder
		for _, m := range e.c.members[id].n.Members() {
			role := "none"
			switch {
			case st.IsVoter(m.ID):
				role = "voter"
			case st.IsLearner(m.ID):
				role = "learner"
			}
			fmt.Fprintf(&b, "%s %s\n", m.Name, role)
		}
		return b.String()
	case "status":
		return e.status()
	case "is-leader":
		id := e.member(t, d, 0)
		return fmt.Sprintf("%d leads: %v", id, e.c.members[id].n.rn.BasicStatus().RaftState == raft.StateLeader)
	case "roles":
		roles := map[string]int{}
		for _, id := range e.c.ids {
			if !e.c.down[id] {
				roles[e.c.members[id].n.Status().Role]++
			}
		}
		return fmt.Sprint(roles)
	case "agree":
		return e.agree(t, d)
	default:
		d.Fatalf(t, "unknown command %s", d.Cmd)
	}
	return ""
}

// member resolves argument i: a member id, or "leader".
func (e *scriptEnv) member(t *testing.T, d *datadriven.TestData, i int) uint64 {
	if i >= len(d.CmdArgs) {
		d.Fatalf(t, "%s: a member id is missing", d.Cmd)
	}
	if d.CmdArgs[i].Key == "leader" {
		return e.c.leader()
	}
	id, err := strconv.ParseUint(d.CmdArgs[i].Key, 10, 64)
	if err != nil || e.c.members[id] == nil {
		d.Fatalf(t, "%s: no member %q", d.Cmd, d.CmdArgs[i].Key)
	}
	return id
}

// argVals returns the values of argument key=(v1,v2,...).
func argVals(t *testing.T, d *datadriven.TestData, key string) []string {
	for _, arg := range d.CmdArgs {
		if arg.Key == key {
			return arg.Vals
		}
	}
	d.Fatalf(t, "%s: argument %s is missing", d.Cmd, key)
	return nil
}

func ids(t *testing.T, ss []string) []uint64 {
	out := make([]uint64, len(ss))
	for i, s := range ss {
		id, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("member id %q: %v", s, err)
		}
		out[i] = id
	}
	return out
}

// busy reports whether messages are in flight or a proposal waits for its
// answer.
func (e *scriptEnv) busy() bool {
	if len(e.c.inbox) > 0 {
		return true
	}
	for _, p := range e.proposals {
		if !p.poll() && !e.c.down[p.member] {
			return true
		}
	}
	for _, r := range e.reads {
		if !r.poll() && !e.c.down[r.member] {
			return true
		}
	}
	return false
}

func (e *scriptEnv) status() string {
	var b strings.Builder
	for _, id := range e.c.ids {
		if e.c.down[id] {
			fmt.Fprintf(&b, "%d: down\n", id)
			continue
		}
		st := e.c.members[id].n.Status()
		fmt.Fprintf(&b, "%d: %s applied=%d\n", id, st.Role, st.Applied)
	}
	return b.String()
}

func (e *scriptEnv) agree(t *testing.T, d *datadriven.TestData) string {
	var want []string
	first := uint64(0)
	for _, id := range e.c.ids {
		if e.c.down[id] {
			continue
		}
		var got []string
		if _, ok := e.c.members[id].store.Topic("t"); ok {
			got = e.c.values(id)
		}
		if first == 0 {
			want, first = got, id
			continue
		}
		if !slices.Equal(got, want) {
			d.Fatalf(t, "member %d holds %v, member %d holds %v", id, got, first, want)
		}
	}
	if len(want) == 0 {
		return "(empty)"
	}
	return strings.Join(want, " ")
}

// Package replication runs the etcd/raft node of a Keel server: the Ready
// loop and group commit (every command waiting while the previous fsync
// ran goes into one Raft entry; HardState and entries are written to the
// WAL as one batch with one fdatasync before anything depends on them),
// applying committed entries to the engine's state machine and answering
// the proposers, state checkpoints and WAL truncation, and the deadline
// reaper for waiting proposals. The WAL is an logstore.Log of its own
// (record types RecordRaftEntry and RecordRaftState), written by the loop
// directly, not through a group-commit writer.
//
// Replication does not know the command schema: Propose takes a Command
// that encodes itself given the request id replication assigns, the state
// machine (StateMachine) writes each entry's header and applies entries,
// and its Results carry the request ids back so proposers are answered.
//
// In production a node is a one-voter Raft group: the path a cluster will
// use, with no peers. Config.ID, Peers, Send and Node.Step make a group of
// several members, which only the deterministic tests run until snapshots
// exist (a member behind a compacted log needs one). The peer transport,
// snapshots, membership and write concern come with the cluster issue.
//
// Contract: it imports engine and netio (and ring), never httpfront or cmd.
package replication

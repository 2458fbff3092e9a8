// Package replication runs the etcd/raft node of a Keel server: the Ready
// loop and group commit (every command waiting while the previous fsync
// ran goes into one Raft entry; HardState and entries are written to the
// WAL as one batch with one fdatasync before anything depends on them),
// applying committed entries to the engine's state machine and answering
// the proposers, state checkpoints and WAL truncation, and the deadline
// reaper for waiting proposals. The WAL is a logstore.Log of its own
// (record types RecordRaftEntry and RecordRaftState), written by the
// appender goroutine: raft's asynchronous storage writes (appender.go), so
// the loop steps acknowledgements and applies while an fsync runs.
//
// Replication does not know the command schema: Propose takes a Command
// that encodes itself given the request id replication assigns, the state
// machine (StateMachine) writes each entry's header and applies entries,
// and its Results carry the request ids back so proposers are answered.
//
// A single node is a one-voter group. A cluster member (Config.Members,
// Send; PeerTransport carries the messages over netio) also has:
//   - the leader sending appends before its own WAL write (ready.go), and
//     committing as soon as a follower's acknowledgement arrives, while
//     its own next write runs (appender.go);
//   - queued proposals answered ErrNotLeader once another node leads;
//   - linearizable reads by ReadIndex (read.go);
//   - snapshots: a follower behind the leader's retained log fetches the
//     leader's last checkpoint and segment files and installs them
//     (snapshot.go);
//   - applied entries kept in raft's log up to RaftLogRetainBytes;
//   - leadership handed to the caught-up voter of highest priority;
//   - membership changes (membership.go): learners added, promoted,
//     members removed, the table in the log; a node that lost its data
//     rejoins under a new id and replaces its old one (LostData,
//     RequestRejoin, replaceRejoined);
//   - write concerns above the majority (writeconcern.go).
//
// Contract: it imports engine and netio (and ring), never httpfront or cmd.
package replication

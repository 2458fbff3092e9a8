// Package replication will run the etcd/raft node: the Ready loop, the Raft
// log stored through engine's group-commit writer (HardState and entries in
// one batch, one fdatasync, before any message that depends on them is
// sent), the peer transport, snapshots, membership and write concern.
//
// Contract: a single node is a one-voter Raft group on the same code path
// as a cluster. It imports engine and netio, never httpfront or cmd.
package replication

// Package netio carries framed byte streams between the nodes of a
// cluster: the peer transport's wire, with no knowledge of what flows
// through it (replication puts Raft messages in it).
//
// A Transport keeps one outbound TCP connection to each peer, dialed at
// the address the caller gives for that peer (so a test can put a
// fault-injecting proxy on any single directed link), and accepts the
// peers' connections on its own listener. Per peer, messages wait in a
// bounded queue; one writer goroutine drains everything queued into one
// frame (many messages per frame, one write), so a busy link costs one
// syscall per batch, not per message. A full queue refuses the message
// (Send reports it: backpressure; Raft resends what was lost), it never
// grows. A broken connection is dialed again with exponential backoff and
// jitter. With a TLS configuration, both sides present certificates from
// the cluster's CA (mutual TLS) and each checks that the other's names the
// node it claims to be.
//
// Wire format, after the TLS handshake when there is one:
//
//	hello = magic "KEELPEER" | version u8 (1) | name length u8 | name
//	frame = payload length u32 LE | message count u32 LE | crc32c u32 LE | message*
//	message = length u32 LE | bytes
//
// The CRC (Castagnoli, over the message bytes of the frame) catches
// corruption TCP's checksum lets through when TLS is off. The dialer
// sends hello first; the acceptor only reads. Every length is bounded
// (Config.FrameBytesMax): a peer that sends more is cut off.
//
// Contract: it imports only the standard library. Every queue is bounded.
//
// It held a sharded multi-producer queue for the request path once; a
// plain channel measured the same end to end (BENCHMARKS.md, 2026-11-22),
// so that queue was removed.
package netio

// Package netio is empty today. It is the place for the framed TCP/TLS
// streams that carry peer traffic between cluster nodes (the cluster
// issue): one connection per peer pair, many messages per frame, bounded
// queues with backpressure, reconnect with backoff, mutual TLS.
//
// It held a sharded multi-producer queue for the request path once; a
// plain channel measured the same end to end (BENCHMARKS.md, 2026-11-22),
// so the queue was removed rather than kept off every path.
//
// Contract: it knows nothing of what flows through it and imports only the
// standard library. Every queue is bounded; a full queue is reported to the
// caller (backpressure), never grown.
package netio

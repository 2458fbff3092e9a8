// Package netio will hold the per-core bounded MPSC queues from the HTTP
// handlers to the batcher that turns everything waiting into one proposal,
// and the framed TCP/TLS streams that carry peer traffic.
//
// Contract: it knows nothing of what flows through it and imports only the
// standard library. Every queue is bounded; a full queue is reported to the
// caller (backpressure), never grown.
package netio

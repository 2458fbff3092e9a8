// Package netio holds what the request path needs between HTTP handlers
// and the Raft loop: a bounded multi-producer, single-consumer queue
// (Queue) with an eventcount-style doorbell to wake the consumer. Later it
// will also carry the framed TCP/TLS streams for peer traffic.
//
// Status: the request path still hands commands over a buffered channel.
// On this 2-core machine Queue hands an item over in about 50 ns against
// about 140 ns for the channel (BenchmarkHandoff*, 16 producers per core),
// but that is under 1% of the ~13 µs of server CPU a durable produce costs
// end to end, so the simpler channel stays until the per-request cost is
// low enough for the difference to show.
//
// Contract: it knows nothing of what flows through it and imports only the
// standard library. Every queue is bounded; a full queue is reported to the
// caller (backpressure), never grown.
package netio

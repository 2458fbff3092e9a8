// Package bench is Keel's load generator: closed-loop (as fast as the
// server answers) and constant-rate load with coordinated-omission
// correction (latency measured from each request's intended send time),
// HDR percentiles to p99.999, a no-op HTTP server to measure against in the
// same run, restart-after-kill-9 timing, and report tables.
//
// Contract: it talks to a server only over its public HTTP API, like a
// user, and imports no other keel package. Every run is bounded in time
// and request count and stops by itself.
package bench

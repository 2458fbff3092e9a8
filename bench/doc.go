// Package bench will be the load generator: closed-loop and constant-rate
// (with coordinated-omission correction) HTTP load, HDR percentiles,
// recovery timing and report tables.
//
// Contract: it talks to a server only over its public HTTP API, like a
// user, and imports no other keel package.
package bench

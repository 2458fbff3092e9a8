// Package httpfront will serve the HTTP API of ../shared/api.md on fasthttp:
// routing, auth, request parsing and validation, JSON responses, the error
// format and /metrics.
//
// Contract: it never keeps a fasthttp RequestCtx or a slice of it after a
// handler returns, maps errors to status codes in one function, and imports
// replication, engine (read side) and netio, never cmd.
package httpfront

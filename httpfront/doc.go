// Package httpfront serves the HTTP API of ../shared/api.md on fasthttp:
// routing, authentication and scopes, request intake (streamed bodies
// checked against each route's limit before they are read, intake.go),
// parsing and validation, JSON answers, the error format (errors.go, one
// place that maps errors to status codes), /metrics, and the listener's
// connection caps (listener.go).
//
// Contract: it never keeps a fasthttp RequestCtx or a slice of it after a
// handler returns; a request that changes state becomes one command
// proposed to replication, answered once it is applied; reads go to the
// engine's read side. It imports replication, engine and ring, never cmd.
package httpfront

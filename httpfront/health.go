package httpfront

import (
	_ "embed"
	"github.com/valyala/fasthttp"
)

func (s *Server) health(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, []byte(`{"ok":1}`))
}

func (s *Server) livez(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, []byte(`{"ok":1}`))
}

// ready is /ready and /readyz: 200 once recovery has finished and the node
// leads with everything it had committed applied; 503 before.
func (s *Server) ready(ctx *fasthttp.RequestCtx) {
	st := s.node.Status()
	fault := s.node.Fault()
	// The fault is read as well as the status: the node records a fault
	// (and answers writes with it) before its status says not ready, and
	// a node that stopped taking writes must not be ready in between.
	ready := st.Ready && fault == nil
	b := append(make([]byte, 0, 256), '{')
	b = appendBoolField(b, "ready", ready)
	if ctx.QueryArgs().Has("verbose") {
		b = append(appendKey(b, "checks"), '[')
		b = appendCheck(b, "leader", st.Role == "leader", st.Role)
		b = append(b, ',')
		b = appendCheck(b, "recovery", st.Ready || st.Role != "leader", "applied "+itoa(st.Applied)+" of commit "+itoa(st.Commit))
		b = append(b, ',')
		detail := "ok"
		if fault != nil {
			detail = fault.Error()
		}
		b = appendCheck(b, "storage", fault == nil, detail)
		b = append(b, ']')
	}
	status := fasthttp.StatusOK
	if !ready {
		status = fasthttp.StatusServiceUnavailable
		ctx.Response.Header.Set("Retry-After", "1")
		b = appendStringField(b, "error", "not_ready")
	}
	writeJSON(ctx, status, append(b, '}'))
}

func appendCheck(b []byte, name string, ok bool, detail string) []byte {
	b = append(b, '{')
	b = appendStringField(b, "name", name)
	b = appendBoolField(b, "ok", ok)
	b = appendStringField(b, "detail", detail)
	return append(b, '}')
}

func (s *Server) sealedStatus(ctx *fasthttp.RequestCtx) {
	b := append(make([]byte, 0, 64), '{')
	b = appendBoolField(b, "ok", true)
	b = appendUintField(b, "last_synced_batch_id", s.node.Status().LastSyncedBatch)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// openAPI is the OpenAPI 3.1 description of every route (openapi.json,
// checked against every answer the package's tests receive: see
// openapi_test.go).
//
//go:embed openapi.json
var openAPI []byte

// openAPIDoc serves GET /openapi.json.
func (s *Server) openAPIDoc(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBody(openAPI)
}

func (s *Server) docs(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/markdown; charset=utf-8")
	ctx.SetBody(errorsDoc)
}

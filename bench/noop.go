package bench

import (
	"net"

	"github.com/valyala/fasthttp"
)

// ServeNoop answers every request with {"ok":true} and nothing else: the
// ceiling of any HTTP server on the machine, measured beside Keel in the
// same run. It returns when ln is closed.
func ServeNoop(ln net.Listener) error {
	body := []byte(`{"ok":true}`)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		},
		NoDefaultServerHeader: true,
		MaxRequestBodySize:    16 << 20,
	}
	return srv.Serve(ln)
}

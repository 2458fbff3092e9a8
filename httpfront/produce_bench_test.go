package httpfront

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkProduceHandler drives the produce handler in process (no
// network) from parallel goroutines, so requests share group commits like
// real ones; allocs/op is the allocation count per durable produce,
// including the Raft loop's share.
func BenchmarkProduceHandler(b *testing.B) {
	ts := startServer(b, nil)
	body := make([]byte, 64)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var req fasthttp.Request
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			req.Reset()
			req.Header.SetMethod("POST")
			req.SetRequestURI("/broker/topics/bench/produce?partition=0")
			req.Header.Set("Authorization", "Bearer admintok")
			req.SetBody(body)
			ctx.Init(&req, addr, nil)
			ts.srv.handle(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	})
}

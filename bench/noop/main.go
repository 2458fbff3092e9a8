// Command noop is a fasthttp server whose handler does nothing but answer
// {"ok":true}: the ceiling any HTTP server on this machine can reach, to
// measure Keel against in the same run.
//
//	go run ./bench/noop -addr 127.0.0.1:18200
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18200", "listen address")
	flag.Parse()
	body := []byte(`{"ok":true}`)
	h := func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
	}
	log.Fatal((&fasthttp.Server{Handler: h, NoDefaultServerHeader: true}).ListenAndServe(*addr))
}

package httpfront

import (
	_ "embed"
	"html"
	"net/url"

	"github.com/valyala/fasthttp"
)

// The status page, GET /ui: one HTML file embedded in the binary (no
// build step, no external assets) that reads this node's API and
// /metrics from the browser every 2 s: readiness and storage faults,
// cluster members and roles, topics and partitions, groups and lag,
// produce/consume rates and server latency percentiles as charts.
//
// It is token-protected like the API. A browser cannot send a bearer
// header when it navigates, so the page also accepts the token in the
// keel_token cookie (Path=/ui, SameSite=Strict), which its login form
// sets. The cookie unlocks the page only: the page's own API calls send
// the token as a bearer header, so no API route accepts a cookie (no
// cross-site request can act with it).

//go:embed ui.html
var uiPage []byte

// uiCookie names the cookie that holds the page's token.
const uiCookie = "keel_token"

// uiSecurityHeaders keep the page to itself: no framing, no other origin
// for scripts, styles or requests.
func uiSecurityHeaders(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	ctx.Response.Header.Set("X-Frame-Options", "DENY")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("Referrer-Policy", "no-referrer")
}

func (s *Server) ui(ctx *fasthttp.RequestCtx) {
	uiSecurityHeaders(ctx)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetBody(uiPage)
}

// uiToken is the Authorization header a /ui request carries, or one made
// from its keel_token cookie.
func uiToken(ctx *fasthttp.RequestCtx) []byte {
	if h := ctx.Request.Header.Peek("Authorization"); len(h) > 0 {
		return h
	}
	c := ctx.Request.Header.Cookie(uiCookie)
	if len(c) == 0 {
		return nil
	}
	tok, err := url.QueryUnescape(string(c))
	if err != nil {
		return nil
	}
	return []byte("Bearer " + tok)
}

// uiLogin answers a /ui request without a valid token: 401 with a form
// that stores the token in the cookie and loads the page again.
func uiLogin(ctx *fasthttp.RequestCtx, e *apiError) {
	uiSecurityHeaders(ctx)
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="keel"`)
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetUserValue(errorCodeKey, e.code)
	ctx.SetBodyString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Keel: sign in</title>
<style>body{font:14px system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0;background:#f6f7f9}
form{background:#fff;border:1px solid #e3e6ec;border-radius:8px;padding:20px;min-width:320px}input{width:100%;padding:6px;margin:8px 0}</style></head>
<body><form id="f"><h1 style="font-size:18px;margin:0 0 8px">Keel status page</h1>
<p id="why">` + html.EscapeString(e.message) + `</p><label>Token (a read token is enough)<input id="t" type="password" autofocus></label>
<button>Sign in</button></form>
<script>document.getElementById("f").onsubmit=function(ev){ev.preventDefault();
document.cookie="keel_token="+encodeURIComponent(document.getElementById("t").value)+"; Path=/ui; SameSite=Strict";location.reload();};</script>
</body></html>`)
}

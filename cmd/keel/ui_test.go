package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The status page in a real headless browser (Chromium from the
// distribution's packages; make test installs it): the sign-in form, then
// the page with this node's topics, groups and lag, readiness, and charts
// that fill as the page refreshes. It saves a screenshot
// ($TMPDIR/keel-ui.png).
func TestStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Fatal("no Chromium installed (make test installs the distribution's chromium package)")
	}
	p := startKeel(t, buildBinary(t), t.TempDir(), freePort(t))
	defer p.kill9(t)
	call("POST", p.url+"/broker/topics", `{"name":"orders","partitions":2}`)
	for i := range 30 {
		call("POST", fmt.Sprintf("%s/broker/topics/orders/produce?partition=%d", p.url, i%2), fmt.Sprintf("order-%d", i))
	}
	call("POST", p.url+"/broker/commit", `{"topic":"orders","group":"billing","partition":0,"offset":4}`)
	call("POST", p.url+"/broker/groups/shipping/join", `{"topic":"orders","member_id":"worker-1","session_timeout_ms":60000}`)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1000), chromedp.Flag("headless", "new"))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	// Without a token: the sign-in form. A wrong token: the form again.
	if err := chromedp.Do(ctx, chromedp.Navigate(p.url+"/ui"), chromedp.WaitVisible("#t")); err != nil {
		t.Fatalf("sign-in form: %v\n%s", err, p.log())
	}
	formText, err := chromedp.Run(ctx, chromedp.Text("body"))
	if err != nil || !strings.Contains(formText, "Sign in") {
		t.Fatalf("without a token: %q %v", formText, err)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys("#t", "wrong"), chromedp.Click("#f button"), chromedp.Sleep(500*time.Millisecond),
		chromedp.Navigate(p.url+"/ui"), chromedp.WaitVisible("#t")); err != nil {
		t.Fatalf("a wrong token: %v", err)
	}
	if why, _ := chromedp.Run(ctx, chromedp.Text("#why")); !strings.Contains(why, "token") {
		t.Errorf("with a wrong token the form says %q", why)
	}
	// The dev token (a single node on loopback accepts it).
	if err := chromedp.Do(ctx, chromedp.SendKeys("#t", "dev"), chromedp.Click("#f button"), chromedp.WaitVisible("#topics table")); err != nil {
		t.Fatalf("signing in: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.keelUI && window.keelUI.refreshes >= 3`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page did not refresh 3 times: %v", err)
	}
	refreshes, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`window.keelUI.refreshes`))
	produced, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`window.keelUI.series.produced.length`))
	body, err := chromedp.Run(ctx, chromedp.Text("body"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ready", "single node", "orders", "billing", "shipping", "orders/0: 10"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
	if produced < 2 {
		t.Errorf("the rate chart has %d points after %d refreshes", produced, refreshes)
	}
	if errs, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.keelUI.errors`)); len(errs) > 0 {
		t.Errorf("the page met errors: %v", errs)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(os.TempDir(), "keel-ui.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes), %d refreshes", shot, len(png), refreshes)
}

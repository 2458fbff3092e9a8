package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestNDJSONChanges(t *testing.T) {
	cases := []struct {
		line string
		want bool
	}{
		{"plain", false},
		{`{"a":1}`, false},
		{`"quoted"`, true},
		{`"`, false},
		{`"a" b`, false},
		{"cr\r", true},
		{"\r", true},
	}
	for _, c := range cases {
		if got := ndjsonChanges([]byte(c.line)); got != c.want {
			t.Errorf("%q: %v, want %v", c.line, got, c.want)
		}
	}
}

func TestStartQuery(t *testing.T) {
	ends := map[int]int64{0: 10, 1: 20}
	cases := []struct {
		from, want string // the query of partition 1
		err        bool
	}{
		{"committed", "", false},
		{"start", "offset=-1", false},
		{"end", "offset=20", false},
		{"42", "offset=42", false},
		{"2026-11-30T12:00:00Z", "from_ts_ms=1796040000000", false},
		{"-1x", "", true},
		{"10m", "", true}, // a duration must be negative: "ago"
		{"soon", "", true},
	}
	for _, c := range cases {
		q, err := startQuery(c.from, ends)
		if (err != nil) != c.err {
			t.Errorf("%q: error %v", c.from, err)
			continue
		}
		if err == nil && q(1).Encode() != c.want {
			t.Errorf("%q: %q, want %q", c.from, q(1).Encode(), c.want)
		}
	}
	q, _ := startQuery("-15m", ends)
	if !strings.HasPrefix(q(0).Encode(), "from_ts_ms=") {
		t.Errorf("-15m: %q", q(0).Encode())
	}
}

// Flags may follow the positional arguments, and "--" ends the flags.
func TestParseInterspersed(t *testing.T) {
	var stderr bytes.Buffer
	c := &command{env: Env{Stderr: &stderr, Getenv: func(string) string { return "" }}}
	fs := c.flags("x", "", "")
	n := fs.Int("n", 0, "")
	if _, ok := c.parse(fs, []string{"a", "--n", "3", "b", "--", "--c"}); !ok {
		t.Fatal(stderr.String())
	}
	if *n != 3 || strings.Join(c.pos, " ") != "a b --c" || c.url != DefaultURL {
		t.Fatalf("n %d pos %q url %s", *n, c.pos, c.url)
	}
	c2 := &command{env: c.env}
	if code, ok := c2.parse(c2.flags("x", "", ""), []string{"--url", "ftp://x"}); ok || code != ExitUsage {
		t.Fatalf("a bad --url: %d %v", code, ok)
	}
}

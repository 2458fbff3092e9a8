package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// The precedence flag > env > file > default, and --print-config's report
// of where each value came from.
func TestConfigFilePrecedence(t *testing.T) {
	t.Setenv("KEEL_MAX_STREAMS", "50")
	t.Setenv("KEEL_PORT", "") // unset for lookupEnv (empty counts as unset)
	file := `
port = 1200
max-streams = 100
write-timeout = "10s"
tokens = ["a@read", "b@admin"]
rocket = true
topic-create-rate = 2.5
`
	var o options
	fs, src, validate := flagSetSources(&o)
	if err := applyConfigFile(fs, strings.NewReader(file), "test.toml", src); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--port", "1300", "--data", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := validate(); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name       string
		got, want  any
		wantSource string
	}{
		{"port", o.port, 1300, sourceFlag},
		{"max-streams", o.maxStreams, 50, "env KEEL_MAX_STREAMS"},
		{"write-timeout", o.defaultTimeout, 10 * time.Second, sourceFile},
		{"tokens", o.tokens, "a@read,b@admin", sourceFile},
		{"rocket", o.rocket, true, sourceFile},
		{"topic-create-rate", o.topicCreateRate, 2.5, sourceFile},
		{"max-partitions", o.maxPartitions, 1024, ""},
	}
	for _, c := range checks {
		if c.got != c.want || src[c.name] != c.wantSource {
			t.Errorf("%s = %v from %q; want %v from %q", c.name, c.got, src[c.name], c.want, c.wantSource)
		}
	}
	var out bytes.Buffer
	printConfig(&out, fs, src)
	for _, want := range []string{"port = 1300 # flag\n", "max-streams = 50 # env KEEL_MAX_STREAMS\n", `write-timeout = "10s" # file`,
		`tokens = "<redacted>" # file`, "max-partitions = 1024 # default\n", "rocket = true # file\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--print-config lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "a@read") {
		t.Error("--print-config shows a token")
	}
}

func TestConfigFileRefusals(t *testing.T) {
	cases := []struct{ file, want string }{
		{`bogus = 1`, `unknown setting "bogus"`},
		{`port = "x"`, `port = "x"`},
		{`port = [1, 2]`, "a list holds strings only"},
		{`port = `, "test.toml"},
		{"[section]\nport = 1", `unknown setting "section"`},
		{`config = "other.toml"`, `unknown setting "config"`},
	}
	for _, c := range cases {
		var o options
		fs, src, _ := flagSetSources(&o)
		err := applyConfigFile(fs, strings.NewReader(c.file), "test.toml", src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.file, err, c.want)
		}
	}
}

func TestConfigPath(t *testing.T) {
	t.Setenv("KEEL_CONFIG", "/env.toml")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", "a.toml"}, "a.toml"},
		{[]string{"--port", "1", "-config=b.toml"}, "b.toml"},
		{[]string{"--port", "1"}, "/env.toml"},
		{[]string{"--", "--config", "c.toml"}, "/env.toml"},
	} {
		if got := configPath(c.args); got != c.want {
			t.Errorf("%v: %q, want %q", c.args, got, c.want)
		}
	}
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The packaging files (README "Packaging"): what can be checked without a
// container runtime. The Dockerfile is multi-stage, runs the static binary
// as a non-root user with /data as a volume and a health check through
// keel ready; the compose file runs three nodes that name each other; the
// systemd unit passes systemd-analyze verify with its hardening in place.
func TestPackaging(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	docker := read("Dockerfile")
	for _, want := range []string{"AS build", "make build", "USER 65532:65532", `VOLUME ["/data"]`, `CMD ["/keel", "ready"`, "KEEL_HOST=0.0.0.0", "distroless/static"} {
		if !strings.Contains(docker, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Count(docker, "\nFROM ") != 2 {
		t.Error("the Dockerfile is not two stages")
	}
	compose := read("docker-compose.yml")
	for _, node := range []string{"node1", "node2", "node3"} {
		if !strings.Contains(compose, "  "+node+":\n") || !strings.Contains(compose, "RF_HA_NODE_ID: "+node) || !strings.Contains(compose, node+":"+node+":7000") {
			t.Errorf("docker-compose.yml: %s is not a service named in RF_HA_NODES", node)
		}
	}
	unit := read("packaging/keel.service")
	for _, want := range []string{"Type=simple", "NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=keel", "DynamicUser=yes", "--config /etc/keel/keel.toml"} {
		if !strings.Contains(unit, want) {
			t.Errorf("keel.service lacks %q", want)
		}
	}
	// The example config file parses and names real settings.
	bin := buildBinary(t)
	out, err := exec.Command(bin, "serve", "--config", filepath.Join("..", "..", "packaging", "keel.toml"), "--print-config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `host = "0.0.0.0" # file`) {
		t.Errorf("packaging/keel.toml with --print-config: %v\n%s", err, out)
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit's verify is skipped")
		return
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "keel.service"), []byte(strings.ReplaceAll(unit, "/usr/local/bin/keel", bin)), 0o644)
	if out, err := exec.Command(sa, "verify", filepath.Join(dir, "keel.service")).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

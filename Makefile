# Keel build. GOFLAGS carries the linker flag giouring needs (it links to
# runtime symbols through go:linkname), so every target works on a fresh
# machine with only Go installed.
export GOFLAGS := -ldflags=-checklinkname=0 -buildvcs=false

GO       ?= go
BIN      := bin/keel
# The version printed by `keel version` and logged at start.
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PORT     ?= 1109
DATA     ?= ./data
# An execution count, not a duration: with a duration, go1.26's fuzz
# coordinator can fail a clean run with "context deadline exceeded" at the
# end of -fuzztime (golang/go#75804, fixed in go1.27).
FUZZTIME ?= 300000x
# Packages with goroutines of their own: tested again under the race detector.
RACE_PKGS := ./ring/... ./engine/... ./replication/... ./httpfront/... ./netio/... ./bench/... ./chaos/...

.PHONY: all build run test test-deps vet fmt-check race fuzz bench bench-engine bench-cluster chaos chaos-short cross clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-checklinkname=0 -s -w -X main.version=$(VERSION)' -o $(BIN) ./cmd/keel

run: build
	./$(BIN) --port $(PORT) --data $(DATA)

test: fmt-check vet test-deps
	$(GO) test -count=1 ./...
	# Again with the expensive invariant checks on (package invariant).
	$(GO) test -count=1 -tags invariants ./...
	$(GO) test -count=1 -race $(RACE_PKGS)
	# Every benchmark once, so a benchmark that stopped working fails here.
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./...

vet:
	$(GO) vet ./...

# What the tests run beside Go: curl (the Server-Sent Events test reads a
# stream with curl -N) and Chromium (the status page is tested in a
# headless browser). Installed from the distribution's packages when
# missing (root, apt); otherwise the tests that need them fail and say so.
test-deps:
	@missing=""; command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "test-deps: installing$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
	    echo "test-deps: could not install$$missing"; \
	  else echo "test-deps: missing$$missing (install them; the tests that need them fail)"; fi; \
	fi


fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Each fuzz target for FUZZTIME executions (go test -fuzz takes one target
# at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# The engine's group-commit scaling: appends/s and p99 at concurrency 1, 16
# and 128, 64 B records, on each I/O backend this machine allows.
bench-engine:
	$(GO) test -run '^$$' -bench 'WriterAppend' -benchtime 2s -count 1 ./engine/logstore/

# The HTTP suite: every scenario against a Keel server and a no-op server
# started by keel bench, closed loop and at half the closed-loop rate, and
# restart after kill -9 with 1M and 8M stored messages. Several minutes.
BENCH_OUT ?= bench/results/latest
bench: bench-engine build
	mkdir -p $(dir $(BENCH_OUT))
	./$(BIN) bench --duration 10s --connections 100 --rate-fraction 0.5 --restart-messages 1000000,8000000 --out $(BENCH_OUT)

# The cluster against NATS JetStream R3 with fsync on every write, in one
# run: keel bench --cluster 3 (a single node, then 3 local nodes; closed
# loop and at half rate; a follower catching up 8M messages, killed and
# then wiped), then the same load shape against a 3-node JetStream cluster
# (bench/competitors/nats, a module of its own). nats-server is built from
# the Go module proxy into bin/. Several minutes.
NATS_VERSION ?= v2.14.9
bench-cluster: build
	GOBIN=$(CURDIR)/bin GOFLAGS= $(GO) install github.com/nats-io/nats-server/v2@$(NATS_VERSION)
	mkdir -p $(dir $(BENCH_OUT))
	./$(BIN) bench --duration 10s --connections 100 --rate-fraction 0.5 --noop=false --cluster 3 --catchup-messages 8000000 --out $(BENCH_OUT) produce-64
	cd bench/competitors/nats && GOFLAGS= $(GO) run . --nats-server $(CURDIR)/bin/nats-server --nodes 3 --connections 100 --duration 10s

# The chaos suite (package chaos, RELIABILITY.md): a cluster of local nodes
# under kill -9, SIGSTOP and network partitions while clients write and
# read; the history is checked for linearizability (porcupine) and every
# acknowledged write is looked for on every node. The run directory
# (history, timelines, nemesis log, summary, node data and logs) goes to
# CHAOS_DIR; the last line says CHAOS: ALL GREEN or lists the violations.
# chaos: 3 nodes then 5, 4 minutes each; chaos-short: 3 nodes, 100 s (CI).
CHAOS_DIR ?= $(CURDIR)/chaos-runs/$(shell date -u +%Y%m%d-%H%M%S)
chaos:
	@KEEL_CHAOS=long KEEL_CHAOS_DIR=$(CHAOS_DIR) $(GO) test -count=1 -run '^TestChaos$$' -v -timeout 30m ./chaos; \
	rc=$$?; echo "run directory: $(CHAOS_DIR)"; cat $(CHAOS_DIR)/verdict.txt 2>/dev/null || echo "CHAOS: NOT FINISHED"; exit $$rc

chaos-short:
	@KEEL_CHAOS=short KEEL_CHAOS_DIR=$(CHAOS_DIR) $(GO) test -count=1 -run '^TestChaos$$' -v -timeout 10m ./chaos; \
	rc=$$?; echo "run directory: $(CHAOS_DIR)"; cat $(CHAOS_DIR)/verdict.txt 2>/dev/null || echo "CHAOS: NOT FINISHED"; exit $$rc

cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags='-checklinkname=0 -s -w' -o bin/keel-linux-arm64 ./cmd/keel

clean:
	rm -rf bin

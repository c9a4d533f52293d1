# agent — build, test, lint, benchmarks and the single-host demo.
# `make run` and `make test` are the two commands of the README.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
DATA_DIR  ?= $(CURDIR)/data
# Packages the tests run for real (see docs/testing.md).
APT_PKGS  := etcd-server etcd-client prometheus prometheus-node-exporter docker.io busybox-static systemd git influxdb prometheus-process-exporter
TEST_BINS := etcd prometheus promtool prometheus-node-exporter dockerd busybox systemd-analyze git influxd prometheus-process-exporter


.PHONY: all
all: build

## build: bin/agent, the host build (no Kubernetes mode), statically linked
.PHONY: build
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/agent ./cmd/agent

## build-kubernetes: bin/agent-kubernetes, the build of the agent's container image: Kubernetes mode (helm driver, releases, pod monitor) included
.PHONY: build-kubernetes
build-kubernetes:
	CGO_ENABLED=0 $(GO) build -trimpath -tags kubernetes -ldflags '$(LDFLAGS)' -o bin/agent-kubernetes ./cmd/agent

IMAGE     ?= ghcr.io/agentproj/agent
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

## image: the agent's container image (deploy/Dockerfile, the chart's image.repository): the Kubernetes build on an empty base, tagged $(IMAGE):$(VERSION)
.PHONY: image
image: build-kubernetes
	cp $(CA_BUNDLE) bin/ca-certificates.crt
	docker build -f deploy/Dockerfile -t $(IMAGE):$(VERSION) bin

## deps: install the real components the tests and the demo run (Debian, as root)
.PHONY: deps
deps:
	@missing=""; for b in $(TEST_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing (missing:$$missing): $(APT_PKGS)"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root, or: sudo apt-get install $(APT_PKGS)"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi

## testbins: build the components without a Debian package once into a cache (testdata/testbins)
.PHONY: testbins
testbins:
	bash testdata/testbins/build.sh

## test: every test, with the race detector, real etcd/Prometheus/Docker and the testbins included
.PHONY: test
test: deps testbins
	$(GO) vet ./...
	$(GO) vet -tags kubernetes ./cmd/agent
	$(GO) test -race -timeout 30m -count=1 ./...

## test-short: unit tests only (no end-to-end processes)
.PHONY: test-short
test-short:
	$(GO) test -race -short -count=1 ./...

GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(shell $(GO) env GOPATH)/bin/golangci-lint

## lint: vet, formatting and golangci-lint (.golangci.yml), installed on first use
.PHONY: lint
lint: $(GOLANGCI_LINT)
	$(GO) vet ./...
	$(GO) vet -tags kubernetes ./cmd/agent
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GOLANGCI_LINT) run ./...
	$(GOLANGCI_LINT) run --build-tags kubernetes ./cmd/agent

$(GOLANGCI_LINT):
	GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: fmt
fmt:
	gofmt -w $$(git ls-files '*.go')

## bench: every benchmark below
.PHONY: bench
bench: bench-failover bench-targets bench-relay bench-api bench-push bench-monitor bench-traces

## bench-failover: p50/p99 over 10 runs: failover after kill -9 and SIGTERM (TTL 5s), and a kill -9'd agent's restart to ready
.PHONY: bench-failover
bench-failover: deps
	$(GO) test -run '^$$' -bench Failover -benchtime 10x -timeout 20m ./cmd/agent

## bench-targets: etcd write -> file_sd rename latency p50/p99 at 1,000 and 10,000 targets, 50 changes/s
.PHONY: bench-targets
bench-targets: deps
	$(GO) test -run '^$$' -bench WatchToFile -benchtime 500x -timeout 20m ./master/targetsync

## bench-relay: relay throughput, CPU per sample and peak RSS, pinned to one core: 1.0 in, 2.0 in, 2.0 in -> 1.0 out, and vmagent (built once) on the same load, interleaved over 3 rounds (ROUNDS), with medians and the goals' ratios
.PHONY: bench-relay
bench-relay: deps
	bash testdata/testbins/build.sh vmagent
	bash master/relay/bench.sh

## bench-api: 1,000 concurrent GETs of /sd/http, /api/v1/status, /api/v1/targets with 10,000 targets: p50/p99 and the agent's peak RSS
.PHONY: bench-api
bench-api: deps
	$(GO) test -run '^$$' -bench APILoad -benchtime 3x -timeout 20m -v ./slave

## bench-push: pushed samples per CPU second (text and JSON) and the agent's CPU per plugin run
.PHONY: bench-push
bench-push:
	$(GO) test -run '^$$' -bench 'Push(Text|JSON)$$' -benchtime 5s ./slave/push
	$(GO) test -run '^$$' -bench PluginRun -benchtime 500x ./slave/plugins

## bench-monitor: node monitor CPU and allocations per refresh at 100 and 1,000 processes and 50 containers, beside prometheus-process-exporter's CPU per scrape of the same processes; agent RSS with the monitor on
.PHONY: bench-monitor
bench-monitor: deps
	$(GO) test -run '^$$' -bench NodeMonitor -benchtime 20x -timeout 30m ./cmd/agent

## bench-traces: spans a node's trace agent (otelcol) forwards per CPU-second, its RSS idle and at peak, and the disk its full default queue takes
.PHONY: bench-traces
bench-traces:
	bash testdata/testbins/build.sh otelcol
	$(GO) test -run '^$$' -bench TraceAgentForward -benchtime 5000x -timeout 20m ./slave/nodestack
	$(GO) test -run '^$$' -bench TraceAgentQueueOnDisk -benchtime 1000x -timeout 20m ./slave/nodestack

## verify-unit: check deploy/agent.service with systemd-analyze verify
.PHONY: verify-unit
verify-unit:
	$(GO) test -count=1 -run TestSystemdUnitVerifies ./cmd/agent

## run: the main job: a one-node cluster on the embedded etcd running the stack, relaying to a local manager
.PHONY: run
run: deps build
	DATA_DIR=$(DATA_DIR) bash deploy/demo.sh

.PHONY: clean
clean:
	rm -rf bin

# v6cni — build, test and demo. GNU make; run as root for deps, test and demo.
#
#   make build   bin/bridge-v6, bin/ipam-v6, bin/pd-ipam, bin/ipamd
#   make test    deps, gofmt, go vet, go test -race (integration tests need root)
#   make demo    deps, build, then a live demo in network namespaces
#   make bench   benchmarks
#   make fmt     gofmt -w
#   make clean   remove bin/

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO      ?= go
BIN     := bin
# VERSION can be given (make VERSION=1.2.3 build); computed once otherwise.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
endif
LDFLAGS := -s -w -X main.version=$(VERSION)
# Static binaries without cgo: the plugins are exec'd once per container and
# must start fast; ipamd is copied to nodes as one file.
GOBUILD := $(GO) build -trimpath -ldflags "$(LDFLAGS)"

# One go test run; the integration tests start ipamd and many netns.
TEST_TIMEOUT ?= 20m

.PHONY: all build deps test vet fmt fmt-check demo bench clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GOBUILD) -o $(BIN)/bridge-v6 ./plugins/bridge-v6
	CGO_ENABLED=0 $(GOBUILD) -o $(BIN)/ipam-v6 ./plugins/ipam-v6
	CGO_ENABLED=0 $(GOBUILD) -o $(BIN)/pd-ipam ./plugins/pd-ipam
	CGO_ENABLED=0 $(GOBUILD) -o $(BIN)/ipamd ./ipamd

deps:
	@./scripts/install-deps.sh

fmt-check:
	@out=$$(gofmt -l .); \
	if [[ -n $$out ]]; then \
		echo "gofmt: these files need 'make fmt':" >&2; echo "$$out" >&2; exit 1; \
	fi

vet:
	$(GO) vet ./...

test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

demo: deps build
	$(GO) run ./scripts/demo -bin-dir $(CURDIR)/$(BIN) -conf-dir $(CURDIR)/conf

# Benchmarks (root; not part of make test). They run in a private network
# namespace and clean up after themselves, also on Ctrl-C.
#   make bench       v6cni vs reference bridge + host-local, with the floor
#                    (BENCH_FLAGS="-n 1000" adds the 901–1000 vs 1–100 scale check)
#   make bench-ipam  ipamd allocation rate/latency at 1k/10k/100k leases vs raw etcd
#                    (BENCH_IPAM_FLAGS="-max 10000" for a shorter run)
BENCH_FLAGS ?= -n 50
BENCH_IPAM_FLAGS ?=
.PHONY: bench-ipam
bench: deps
	$(MAKE) build
	$(GO) run ./bench/cnibench -bin-dir $(CURDIR)/$(BIN) $(BENCH_FLAGS)

bench-ipam: deps
	$(MAKE) build
	$(GO) run ./bench/ipambench -bin-dir $(CURDIR)/$(BIN) $(BENCH_IPAM_FLAGS)

fmt:
	gofmt -w .

clean:
	rm -rf $(BIN)

# v6cni — build, test and demo. GNU make; run as root for deps, test and demo.
#
#   make build   bin/bridge-v6, bin/ipam-v6, bin/pd-ipam, bin/ipamd
#   make test    deps, gofmt, go vet, go test -race (integration tests need root)
#   make soak    the randomized model test, long: SOAK_OPS operations (default
#                50000; SOAK_SEED replays a failing run's seed)
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
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.buildVersion=$(VERSION)
# Static binaries without cgo: the plugins are exec'd once per container and
# must start fast; ipamd is copied to nodes as one file.
GOBUILD := $(GO) build -trimpath -ldflags "$(LDFLAGS)"

# One go test run; the integration tests start ipamd and many netns.
TEST_TIMEOUT ?= 20m

.PHONY: all build deps test soak vet fmt fmt-check demo bench clean

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

# The model test of `make test` runs a few thousand operations; soak runs
# many more (about 40 s per 1000 on a quiet 2-core machine).
SOAK_OPS  ?= 50000
SOAK_SEED ?=
soak: deps
	V6CNI_MODEL_OPS=$(SOAK_OPS) V6CNI_MODEL_SEED=$(SOAK_SEED) $(GO) test -count=1 -v -timeout 0 -run TestModel ./integration/model/

demo: deps build
	$(GO) run ./scripts/demo -bin-dir $(CURDIR)/$(BIN) -conf-dir $(CURDIR)/conf

# Benchmarks (root; not part of make test). They run in a private network
# namespace and clean up after themselves, also on Ctrl-C.
#   make bench       v6cni vs reference bridge + host-local, with the floor
#                    (BENCH_FLAGS="-n 1000" adds the 901–1000 vs 1–100 scale check)
#   make bench-ipam  ipamd allocation rate/latency at 1k/10k/100k leases vs raw etcd
#                    (BENCH_IPAM_FLAGS="-max 10000" for a shorter run)
#   make bench-cluster  10 and 1,000 simulated nodes × 110 pods, each its own
#                    allocator and etcd client, on one etcd-server; churn, the
#                    whole-cluster check, a node's removal; a few minutes
#                    (BENCH_CLUSTER_FLAGS="-nodes 200" for a shorter run)
#   make bench-cri   `crictl runp` and its CNI part through containerd 2's CRI
#                    (built by deps), v6cni vs reference bridge + host-local,
#                    interleaved; about 2 min (BENCH_CRI_FLAGS="-n 10" shorter)
BENCH_FLAGS ?= -n 50
BENCH_IPAM_FLAGS ?=
BENCH_CLUSTER_FLAGS ?=
BENCH_CRI_FLAGS ?=
.PHONY: bench-ipam bench-cluster bench-cri
bench: deps
	$(MAKE) build
	$(GO) run ./bench/cnibench -bin-dir $(CURDIR)/$(BIN) $(BENCH_FLAGS)

bench-ipam: deps
	$(MAKE) build
	$(GO) run ./bench/ipambench -bin-dir $(CURDIR)/$(BIN) $(BENCH_IPAM_FLAGS)

bench-cluster: deps
	$(GO) run ./bench/clusterbench -nodes 1000 -pods 110 -rounds 3 $(BENCH_CLUSTER_FLAGS)

bench-cri: deps
	$(MAKE) build
	$(GO) run ./bench/cribench -bin-dir $(CURDIR)/$(BIN) $(BENCH_CRI_FLAGS)

fmt:
	gofmt -w .

clean:
	rm -rf $(BIN)

# Install (root; DESTDIR for staging, e.g. make install DESTDIR=/tmp/stage):
#   make install              build, then the plugins into $(CNI_BIN_DIR), ipamd into
#                             $(BINDIR), the unit into $(SYSTEMD_DIR), and the example
#                             config as /etc/v6cni/ipamd.yaml unless one exists; the
#                             directory 0700 and the config 0600, root only (it may hold
#                             the BGP password; better: bgp.peers[].passwordFile)
#   make install CONFLIST=1   also conf/v6net.conflist as $(CNI_CONF_DIR)/10-v6net.conflist
#                             (unless a file of that name exists)
#   make uninstall            remove the binaries and the unit; the config files only
#                             while they are still the unedited examples
# The unit goes to /etc/systemd/system, which systemd reads whatever PREFIX is
# ($(PREFIX)/lib/systemd/system is not searched for PREFIX other than /usr,
# /usr/local); its ExecStart is rewritten to $(BINDIR)/ipamd. Without DESTDIR,
# on a machine booted with systemd, install runs systemctl daemon-reload and
# uninstall disables and stops ipamd first.
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
CNI_BIN_DIR  ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d
SYSTEMD_DIR  ?= /etc/systemd/system
V6CNI_CONF_DIR := /etc/v6cni
CONFLIST     ?=
PLUGINS      := bridge-v6 ipam-v6 pd-ipam
# systemctl only for the real root of a machine booted with systemd.
SYSTEMCTL     = $(if $(DESTDIR),:,$(if $(wildcard /run/systemd/system),systemctl,:))

.PHONY: install uninstall

install: build
	install -d -m 0755 $(DESTDIR)$(CNI_BIN_DIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSTEMD_DIR)
	for p in $(PLUGINS); do install -m 0755 $(BIN)/$$p $(DESTDIR)$(CNI_BIN_DIR)/$$p; done
	install -m 0755 $(BIN)/ipamd $(DESTDIR)$(BINDIR)/ipamd
	sed 's|^ExecStart=/usr/local/bin/ipamd |ExecStart=$(BINDIR)/ipamd |' conf/systemd/ipamd.service > $(BIN)/ipamd.service
	install -m 0644 $(BIN)/ipamd.service $(DESTDIR)$(SYSTEMD_DIR)/ipamd.service
	install -d -m 0700 $(DESTDIR)$(V6CNI_CONF_DIR)
	if [[ -e $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml ]]; then \
		echo "kept $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml (exists; made root-only: it may hold secrets)"; \
		chmod go-rwx $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml; \
	else install -m 0600 conf/ipamd.yaml $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml; fi
	if [[ -n "$(CONFLIST)" ]]; then \
		install -d -m 0755 $(DESTDIR)$(CNI_CONF_DIR); \
		if [[ -e $(DESTDIR)$(CNI_CONF_DIR)/10-v6net.conflist ]]; then \
			echo "kept $(DESTDIR)$(CNI_CONF_DIR)/10-v6net.conflist (exists)"; \
		else install -m 0644 conf/v6net.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-v6net.conflist; fi; \
	fi
	$(SYSTEMCTL) daemon-reload
	@echo "installed; start with: systemctl enable --now ipamd"

uninstall:
	$(SYSTEMCTL) disable --now ipamd.service || true
	for p in $(PLUGINS); do rm -f $(DESTDIR)$(CNI_BIN_DIR)/$$p; done
	rm -f $(DESTDIR)$(BINDIR)/ipamd $(DESTDIR)$(SYSTEMD_DIR)/ipamd.service
	if cmp -s conf/ipamd.yaml $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml; then \
		rm -f $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml; \
	elif [[ -e $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml ]]; then \
		echo "kept $(DESTDIR)$(V6CNI_CONF_DIR)/ipamd.yaml (edited)"; fi
	rmdir $(DESTDIR)$(V6CNI_CONF_DIR) 2>/dev/null || true
	if cmp -s conf/v6net.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-v6net.conflist; then \
		rm -f $(DESTDIR)$(CNI_CONF_DIR)/10-v6net.conflist; \
	elif [[ -e $(DESTDIR)$(CNI_CONF_DIR)/10-v6net.conflist ]]; then \
		echo "kept $(DESTDIR)$(CNI_CONF_DIR)/10-v6net.conflist (edited)"; fi
	$(SYSTEMCTL) daemon-reload

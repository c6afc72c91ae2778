#!/usr/bin/env bash
# install-deps.sh installs the Debian packages v6cni's build, tests and demo
# need. It is idempotent: it asks apt only when something is missing, runs
# `apt-get update` at most once, and prints nothing when all is there.
#
# Add a package by appending it to PACKAGES (one per line).
#
# It also unpacks the guest kernel of internal/testutil/vmtest (tests that need
# kernel features the host may lack, such as 802.1Q VLANs, run in a qemu
# guest booted with it): Debian's cloud kernel package, downloaded with
# apt-get download and unpacked with dpkg-deb -x into VMKERNEL_DIR/<version>,
# with VMKERNEL_DIR/current pointing to it. It is never installed: the
# host's /boot and module tree stay as they are.
#
# It also builds containerd, its runc shim, ctr and crictl, pinned, from the
# Go module proxy (go install pkg@version; nothing else is downloaded) into
# CRI_DIR/bin, for internal/testutil/critest and integration/cri. They go
# there, not to /usr/local/bin, so a host's own containerd is never shadowed.
# A stamp file names what was built: the build runs again only when a pin
# changes. Measured on 2 shared cores with an empty build cache (their
# dependencies downloaded too): containerd, shim and ctr 5 min 12 s, crictl
# 1 min 40 s, about 7 min in all; with a warm build cache 9 s; with the
# stamp current, nothing.
#
# Servers among them (etcd, kea, dhcpd, bird, gobgpd) are only ever started
# by the tests, in their own network namespaces: their Debian services are
# kept from starting at install time (policy-rc.d), so nothing listens on
# the host because of this script.
set -euo pipefail

PACKAGES=(
	iproute2     # ip, bridge: netns, links, addresses
	iputils-ping # ping -6 between containers in the demo and tests
	procps       # sysctl: tests set sysctls inside their network namespaces
	etcd-server  # external etcd for ipamd's cluster tests (single and 3 members, TLS)
	containernetworking-plugins # reference portmap/tuning/bandwidth/firewall: chaining tests, bench
	nftables     # nft: bridge-v6 ipMasq/ipMasq6
	iptables     # the reference portmap and firewall plugins
	gcc          # go test -race needs cgo
	libc6-dev    # headers and crt files for cgo
	kea-dhcp6-server # kea-dhcp6: delegating server for pkg/daemon/dhcp6pd's PD tests
	isc-dhcp-server  # dhcpd -6: second delegating server for pkg/daemon/dhcp6pd's PD tests
	ndisc6           # rdisc6: pkg/daemon/ra's tests read the router advertisements as a client
	isc-dhcp-client  # dhclient -6: pkg/daemon/dhcp6server's tests (stateless and stateful clients)
	bird2        # BGP peer for pkg/daemon/bgpspeaker's tests and the demo (bird, birdc)
	gobgpd       # GoBGP's daemon, second BGP peer in pkg/daemon/bgpspeaker's tests (gobgpd, gobgp)
	qemu-system-x86 # qemu-system-x86_64: internal/testutil/vmtest's guests (bridge-v6 VLAN tests)
	runc         # the OCI runtime under containerd's runc shim (integration/cri)
	radvd        # upstream routers' RAs: internal/testutil/upstream, bridge-v6 provider tests
	keepalived   # VRRPv3 first-hop redundancy of internal/testutil/upstream's routers
)

# The guest kernel (internal/testutil/vmtest.DefaultKernelDir): the metapackage names
# the current versioned package, whose .deb is unpacked, not installed.
VMKERNEL_DIR=/var/lib/v6cni-test/vmkernel
VMKERNEL_META=linux-image-cloud-amd64

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps.sh: must run as root (apt-get install needs it); try: sudo $0" >&2
	exit 1
fi

# One run at a time: two runs at once (make test in two checkouts) would
# share CRI_DIR/bin.partial, and one's rm -rf empties the other's build.
mkdir -p /var/lib/v6cni-test
exec 9>/var/lib/v6cni-test/.install-deps.lock
flock 9

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	if [[ $status != installed ]]; then
		missing+=("$pkg")
	fi
done

# Files and directories this run made and removes when it ends.
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

updated=
apt_update() {
	if [[ -z $updated ]]; then
		apt-get update -qq
		updated=1
	fi
}

if [[ ${#missing[@]} -gt 0 ]]; then
	echo "install-deps.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		cleanup+=(/usr/sbin/policy-rc.d)
	fi
	apt_update
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# containerd, pinned; CGO_ENABLED=0 needs -tags no_btrfs (btrfs' snapshotter is
# cgo only). containerd v2.4.2's go.mod has no replace directives, so
# go install pkg@version builds it as released.
CONTAINERD_VERSION=v2.4.2
CRITOOLS_VERSION=v1.37.0
CRI_DIR=/var/lib/v6cni-test/cri
cri_stamp="containerd $CONTAINERD_VERSION crictl $CRITOOLS_VERSION tags no_btrfs"
if [[ $(cat "$CRI_DIR/bin/.stamp" 2>/dev/null || true) != "$cri_stamp" ]]; then
	if ! command -v go >/dev/null; then
		echo "install-deps.sh: go is not in PATH; it builds containerd and crictl" >&2
		exit 1
	fi
	echo "install-deps.sh: building containerd $CONTAINERD_VERSION and crictl $CRITOOLS_VERSION into $CRI_DIR/bin (about 7 min on a cold cache)" >&2
	mkdir -p "$CRI_DIR"
	rm -rf "$CRI_DIR/bin.partial"
	mkdir "$CRI_DIR/bin.partial"
	cleanup+=("$CRI_DIR/bin.partial")
	# GOTOOLCHAIN=local: build with the Go that builds v6cni, download no other;
	# GOFLAGS cleared: a -mod flag from the caller breaks go install pkg@version.
	(
	export GOTOOLCHAIN=local GOFLAGS= CGO_ENABLED=0 GOBIN=$CRI_DIR/bin.partial
	go install -trimpath -tags no_btrfs -ldflags '-s -w' \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
	go install -trimpath -ldflags '-s -w' "sigs.k8s.io/cri-tools/cmd/crictl@$CRITOOLS_VERSION"
	)
	printf '%s\n' "$cri_stamp" > "$CRI_DIR/bin.partial/.stamp"
	rm -rf "$CRI_DIR/bin"
	mv "$CRI_DIR/bin.partial" "$CRI_DIR/bin"
fi

# The guest kernel, once: a kernel already unpacked is kept (the tests need
# one with 802.1Q, bridge and veth modules, which every Debian kernel has).
if [[ ! -e $VMKERNEL_DIR/current/boot ]]; then
	kernel_pkg() { apt-cache depends "$VMKERNEL_META" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'; }
	pkg=$(kernel_pkg)
	if [[ -z $pkg ]]; then
		apt_update
		pkg=$(kernel_pkg)
	fi
	if [[ -z $pkg ]]; then
		echo "install-deps.sh: apt-cache depends $VMKERNEL_META names no kernel package" >&2
		exit 1
	fi
	version=${pkg#linux-image-}
	echo "install-deps.sh: unpacking $pkg into $VMKERNEL_DIR/$version (guest kernel of internal/testutil/vmtest)" >&2
	tmp=$(mktemp -d)
	cleanup+=("$tmp")
	chown _apt "$tmp" 2>/dev/null || true # apt downloads as _apt
	(cd "$tmp" && apt-get download -qq "$pkg")
	mkdir -p "$VMKERNEL_DIR"
	rm -rf "$VMKERNEL_DIR/$version.partial"
	dpkg-deb -x "$tmp"/*.deb "$VMKERNEL_DIR/$version.partial"
	rm -rf "${VMKERNEL_DIR:?}/$version"
	mv "$VMKERNEL_DIR/$version.partial" "$VMKERNEL_DIR/$version"
	ln -sfn "$version" "$VMKERNEL_DIR/current"
fi

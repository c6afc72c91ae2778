#!/usr/bin/env bash
# install-deps.sh installs the Debian packages v6cni's build, tests and demo
# need. It is idempotent: it asks apt only when something is missing, runs
# `apt-get update` at most once, and prints nothing when all is there.
#
# Add a package by appending it to PACKAGES (one per line).
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
	kea-dhcp6-server # kea-dhcp6: delegating server for pkg/dhcp6pd's PD tests
	isc-dhcp-server  # dhcpd -6: second delegating server for pkg/dhcp6pd's PD tests
	ndisc6           # rdisc6: pkg/ra's tests read the router advertisements as a client
	isc-dhcp-client  # dhclient -6: pkg/dhcp6server's tests (stateless and stateful clients)
	bird2        # BGP peer for pkg/bgpspeaker's tests and the demo (bird, birdc)
	gobgpd       # GoBGP's daemon, second BGP peer in pkg/bgpspeaker's tests (gobgpd, gobgp)
)

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps.sh: must run as root (apt-get install needs it); try: sudo $0" >&2
	exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	if [[ $status != installed ]]; then
		missing+=("$pkg")
	fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

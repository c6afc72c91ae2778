package link

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Masquerading is done with nftables through the nft command (no library
// linked into the plugin): one table "inet v6cni", and per bridge a set of
// the IPv4 and a set of the IPv6 container addresses to masquerade and one
// postrouting NAT chain. A container's traffic is masqueraded when it
// leaves through another interface than its bridge (container to container
// traffic keeps its source).
//
// Each ADD rewrites the bridge's chain in one nft transaction (atomic, so
// concurrent ADDs converge on the same single rule set) and adds its
// addresses to the sets; DEL removes them.

// MasqTable is the nftables table (family inet) bridge-v6 owns; exported
// so that tests (and readers) can find what this package writes.
const MasqTable = "v6cni"

// masqNames returns the chain and set names for a bridge: nft identifiers
// cannot hold every character an interface name can, so they are hashed.
func masqNames(bridge string) (chain, set4, set6 string) {
	sum := sha256.Sum256([]byte(bridge))
	h := hex.EncodeToString(sum[:5])
	return "masq_" + h, "masq4_" + h, "masq6_" + h
}

// SetupMasquerade masquerades the given container addresses (IPv4 ones
// when v4, IPv6 ones when v6) for traffic that leaves through another
// interface than bridge, in the namespace of the calling thread.
func SetupMasquerade(bridge string, addrs []netip.Prefix, v4, v6 bool) error {
	if strings.ContainsAny(bridge, "\"\\") {
		return fmt.Errorf("bridge name %q cannot be written in an nftables rule", bridge)
	}
	chain, set4, set6 := masqNames(bridge)
	var b strings.Builder
	fmt.Fprintf(&b, "add table inet %s\n", MasqTable)
	fmt.Fprintf(&b, "add set inet %s %s { type ipv4_addr; }\n", MasqTable, set4)
	fmt.Fprintf(&b, "add set inet %s %s { type ipv6_addr; }\n", MasqTable, set6)
	fmt.Fprintf(&b, "add chain inet %s %s { type nat hook postrouting priority srcnat; }\n", MasqTable, chain)
	fmt.Fprintf(&b, "flush chain inet %s %s\n", MasqTable, chain)
	fmt.Fprintf(&b, "add rule inet %s %s ip saddr @%s oifname != \"%s\" masquerade\n", MasqTable, chain, set4, bridge)
	fmt.Fprintf(&b, "add rule inet %s %s ip6 saddr @%s oifname != \"%s\" masquerade\n", MasqTable, chain, set6, bridge)
	for _, a := range addrs {
		ip := a.Addr().Unmap()
		switch {
		case ip.Is4() && v4:
			fmt.Fprintf(&b, "add element inet %s %s { %s }\n", MasqTable, set4, ip)
		case ip.Is6() && v6:
			fmt.Fprintf(&b, "add element inet %s %s { %s }\n", MasqTable, set6, ip)
		}
	}
	if err := nft(b.String()); err != nil {
		return fmt.Errorf("set up masquerading for bridge %s: %w", bridge, err)
	}
	return nil
}

// TeardownMasquerade stops masquerading the given addresses. Addresses,
// sets or a table that are already gone are fine.
func TeardownMasquerade(bridge string, addrs []netip.Prefix) error {
	_, set4, set6 := masqNames(bridge)
	for _, a := range addrs {
		ip := a.Addr().Unmap()
		set := set6
		if ip.Is4() {
			set = set4
		}
		// One element per transaction: deleting a missing element fails
		// the whole transaction.
		err := nft(fmt.Sprintf("delete element inet %s %s { %s }\n", MasqTable, set, ip))
		if err != nil && !strings.Contains(err.Error(), "No such file or directory") {
			return fmt.Errorf("stop masquerading %s (bridge %s): %w", ip, bridge, err)
		}
	}
	return nil
}

// nft runs an nft script.
func nft(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

package link

import (
	"fmt"
	"net"
	"strings"
)

// MAC spoof checking is done with nftables through the nft command, like
// masquerading: table "bridge v6cni" (the bridge family sees the frames a
// container sends before the bridge forwards them or the host receives
// them), one prerouting filter chain, and two sets: the host veths whose
// container is checked, and the (host veth, container MAC) pairs allowed.
// A frame entering the bridge from a checked port with another source MAC
// is dropped. One rule serves every attachment; ADD and DEL add and remove
// set elements.

// SpoofTable is the nftables table (family bridge) of the MAC spoof check;
// exported so that tests (and readers) can find what this package writes.
const SpoofTable = "v6cni"

const (
	spoofChain = "macspoofchk"
	spoofPorts = "macspoofchk_ports"
	spoofPairs = "macspoofchk_macs"
)

// SetupMACSpoofCheck drops frames that arrive from the host veth hostVeth
// (i.e. that the container sends) with a source MAC other than mac.
func SetupMACSpoofCheck(hostVeth string, mac net.HardwareAddr) error {
	if err := nftIdent(hostVeth); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "add table bridge %s\n", SpoofTable)
	fmt.Fprintf(&b, "add set bridge %s %s { type ifname; }\n", SpoofTable, spoofPorts)
	fmt.Fprintf(&b, "add set bridge %s %s { type ifname . ether_addr; }\n", SpoofTable, spoofPairs)
	fmt.Fprintf(&b, "add chain bridge %s %s { type filter hook prerouting priority -300; }\n", SpoofTable, spoofChain)
	// Rewritten in the same transaction: concurrent ADDs converge on one rule.
	fmt.Fprintf(&b, "flush chain bridge %s %s\n", SpoofTable, spoofChain)
	fmt.Fprintf(&b, "add rule bridge %s %s iifname @%s iifname . ether saddr != @%s drop\n", SpoofTable, spoofChain, spoofPorts, spoofPairs)
	fmt.Fprintf(&b, "add element bridge %s %s { \"%s\" . %s }\n", SpoofTable, spoofPairs, hostVeth, mac)
	fmt.Fprintf(&b, "add element bridge %s %s { \"%s\" }\n", SpoofTable, spoofPorts, hostVeth)
	if err := nft(b.String()); err != nil {
		return fmt.Errorf("set up MAC spoof check on %s: %w", hostVeth, err)
	}
	return nil
}

// TeardownMACSpoofCheck removes hostVeth's elements. With mac nil only the
// port is removed (the pair, keyed by the MAC, stays until a later ADD of
// the same attachment replaces nothing: harmless, the port is no longer
// checked). Elements, sets or a table already gone are fine.
func TeardownMACSpoofCheck(hostVeth string, mac net.HardwareAddr) error {
	if err := nftIdent(hostVeth); err != nil {
		return err
	}
	scripts := []string{fmt.Sprintf("delete element bridge %s %s { \"%s\" }\n", SpoofTable, spoofPorts, hostVeth)}
	if mac != nil {
		scripts = append(scripts, fmt.Sprintf("delete element bridge %s %s { \"%s\" . %s }\n", SpoofTable, spoofPairs, hostVeth, mac))
	}
	for _, s := range scripts {
		// One element per transaction: deleting a missing element fails
		// the whole transaction.
		if err := nft(s); err != nil && !strings.Contains(err.Error(), "No such file or directory") {
			return fmt.Errorf("remove MAC spoof check of %s: %w", hostVeth, err)
		}
	}
	return nil
}

// nftIdent refuses names that cannot be written in an nft string literal.
func nftIdent(name string) error {
	if name == "" || strings.ContainsAny(name, "\"\\\n") {
		return fmt.Errorf("interface name %q cannot be written in an nftables rule", name)
	}
	return nil
}

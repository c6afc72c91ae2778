package allocator

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/pkg/ipmath"
	"github.com/v6cni/v6cni/pkg/link"
)

// addGatewayBeside puts the gateway of newBlock on every interface of this
// namespace that carries the gateway of oldBlock: bridge-v6 put that one at
// ADD (on the network's bridge or its VLAN interface), and the containers
// of the old block need their new gateway there before they get their new
// address. No interface carrying it (isGateway off) is fine.
func addGatewayBeside(oldBlock, newBlock netip.Prefix) error {
	oldGW := ipmath.Gateway(oldBlock)
	addrs, err := netlink.AddrList(nil, unix.AF_INET6)
	if err != nil {
		return fmt.Errorf("list addresses to find gateway %s: %w", oldGW, err)
	}
	newGW := netip.PrefixFrom(ipmath.Gateway(newBlock), newBlock.Bits())
	for _, a := range addrs {
		p, ok := link.PrefixFromIPNet(a.IPNet)
		if !ok || p.Addr() != oldGW || p.Bits() != oldBlock.Bits() {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return fmt.Errorf("gateway %s: link %d: %w", oldGW, a.LinkIndex, err)
		}
		if err := link.AddGatewayAddrs(l, []netip.Prefix{newGW}, false); err != nil {
			return err
		}
	}
	return nil
}

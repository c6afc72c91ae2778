package link

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/pkg/ipmath"
)

// RemoveGateway deletes the gateway address of block (ipmath.Gateway with
// the block's prefix length) from whichever interface of the calling
// thread's namespace carries it (a bridge-v6 bridge or its VLAN
// interface): once the block may go to another node, this node must stop
// claiming its prefix. It is the undo of AddGatewayAddrs; no such address
// is fine.
func RemoveGateway(block netip.Prefix) error {
	gw := ipmath.Gateway(block)
	family := unix.AF_INET6
	if gw.Is4() {
		family = unix.AF_INET
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, family) })
	if err != nil {
		return fmt.Errorf("list addresses to remove gateway %s: %w", gw, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != gw {
			continue
		}
		if ones, _ := a.Mask.Size(); ones != block.Bits() {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return fmt.Errorf("remove gateway %s: link %d: %w", gw, a.LinkIndex, err)
		}
		if err := netlink.AddrDel(l, &a); err != nil {
			return fmt.Errorf("remove gateway %s from %s: %w", gw, l.Attrs().Name, err)
		}
	}
	return nil
}

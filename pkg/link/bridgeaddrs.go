package link

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// BridgeAddr is one address of a bridge or of a VLAN interface on a bridge:
// where bridge-v6 puts the gateway addresses (AddGatewayAddrs).
type BridgeAddr struct {
	// Link is the interface that carries the address.
	Link string
	// Bridge is the bridge: Link itself, or the bridge Link is a VLAN of.
	Bridge string
	// Addr is the address with its prefix length.
	Addr netip.Prefix
}

// BridgeAddrs lists the global addresses of every bridge and every VLAN
// interface on a bridge in the calling thread's namespace, for `ipamd
// check`. Link-local addresses are left out: no gateway is one.
func BridgeAddrs() ([]BridgeAddr, error) {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	bridges := map[int]string{}
	for _, l := range links {
		if _, ok := l.(*netlink.Bridge); ok {
			bridges[l.Attrs().Index] = l.Attrs().Name
		}
	}
	var out []BridgeAddr
	for _, l := range links {
		bridge, ok := bridges[l.Attrs().Index]
		if v, isVLAN := l.(*netlink.Vlan); isVLAN {
			bridge, ok = bridges[v.ParentIndex]
		}
		if !ok {
			continue
		}
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return linkAddrs(l.Attrs().Index) })
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			p, ok := PrefixFromIPNet(a.IPNet)
			if !ok || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			out = append(out, BridgeAddr{Link: l.Attrs().Name, Bridge: bridge, Addr: p})
		}
	}
	return out, nil
}

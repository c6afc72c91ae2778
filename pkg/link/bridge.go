package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// EnsureBridge returns the bridge called name, creating it if needed, with
// the given MTU (0: leave it) and up. It is safe when many ADDs race to
// create the same new bridge: the losers of the race get EEXIST and reuse
// the winner's bridge. A link of that name that is not a bridge is an error.
//
// A new bridge gets the MAC bridgeMAC(name), so its MAC never changes as
// ports come and go.
func EnsureBridge(name string, mtu int) (*netlink.Bridge, error) {
	l, err := linkByName(name)
	switch {
	case err == nil:
		return reuseBridge(l, mtu)
	case !isNotFound(err):
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}

	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	attrs.HardwareAddr = bridgeMAC(name)
	br := &netlink.Bridge{LinkAttrs: attrs}
	err = netlink.LinkAdd(br)
	if errors.Is(err, unix.EEXIST) {
		// Another ADD created it between our lookup and our add.
		if l, err = linkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s after EEXIST: %w", name, err)
		}
		return reuseBridge(l, mtu)
	}
	if err != nil {
		return nil, fmt.Errorf("create bridge %s: %w", name, err)
	}
	// Created down, so that its link-local address skips DAD when it comes
	// up: the bridge is the containers' router, and until its link-local
	// leaves the tentative state (1–2 s) it can send no router
	// advertisement (ipv6Mode slaac) and answer no neighbour solicitation
	// from it. Its MAC is ours (bridgeMAC), so the address is unique.
	if err := setSysctl("net/ipv6/conf/"+name+"/accept_dad", "0"); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if l, err = linkByName(name); err != nil {
		return nil, fmt.Errorf("look up new bridge %s: %w", name, err)
	}
	return reuseBridge(l, mtu)
}

// reuseBridge checks that an existing link is a bridge and brings its MTU
// and admin state to what the config asks.
func reuseBridge(l netlink.Link, mtu int) (*netlink.Bridge, error) {
	name := l.Attrs().Name
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("link %s already exists and is a %s, %w", name, l.Type(), ErrNotBridge)
	}
	if err := mtuAndUp(br, "bridge", mtu); err != nil {
		return nil, err
	}
	return br, nil
}

// mtuAndUp brings l (a kind, for errors) to MTU mtu (0: as it is) and up,
// and updates its attributes to match.
func mtuAndUp(l netlink.Link, kind string, mtu int) error {
	a := l.Attrs()
	if mtu != 0 && a.MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s %s: %w", mtu, kind, a.Name, err)
		}
		a.MTU = mtu
	}
	if a.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s %s up: %w", kind, a.Name, err)
		}
		a.Flags |= net.FlagUp
	}
	return nil
}

// AddGatewayAddrs puts each gateway address (gateway IP with the block's
// prefix length, e.g. 2001:db8:cafe:3::1/64) on the bridge (or on the
// bridge's VLAN interface, for a network with a VLAN) with IFA_F_NODAD:
// IPAM owns uniqueness, and without it the address stays tentative for the
// host's DAD (1–2 s) and the first containers cannot reach their gateway.
// An address already there (put by an earlier ADD) is fine.
//
// Another address on the bridge that overlaps the gateway's block (a
// different gateway for the same block, or the same address with another
// prefix length) is an error naming it; with force it is removed instead.
func AddGatewayAddrs(br netlink.Link, gateways []netip.Prefix, force bool) error {
	if len(gateways) == 0 {
		return nil
	}
	name := linkKind(br) + " " + br.Attrs().Name
	have, err := retryDump(func() ([]netlink.Addr, error) { return linkAddrs(br.Attrs().Index) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, gw := range gateways {
		gw = netip.PrefixFrom(gw.Addr().Unmap(), gw.Bits())
		present := false
		for _, a := range have {
			p, ok := PrefixFromIPNet(a.IPNet)
			if !ok || !p.Overlaps(gw) {
				continue
			}
			if p == gw {
				present = true
				continue
			}
			if !force {
				return fmt.Errorf("%s has address %s, which conflicts with gateway %s (set forceAddress to replace it)", name, p, gw)
			}
			a.LinkIndex = br.Attrs().Index
			if err := netlink.AddrDel(br, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove address %s from %s (forceAddress): %w", p, name, err)
			}
		}
		if present {
			continue
		}
		addr := &netlink.Addr{IPNet: ipNet(gw), Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(br, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add gateway %s to %s: %w", gw, name, err)
		}
	}
	return nil
}

// linkKind names the kind of link that holds gateway addresses.
func linkKind(l netlink.Link) string {
	if _, ok := l.(*netlink.Vlan); ok {
		return "VLAN interface"
	}
	return "bridge"
}

// BridgeByName returns the bridge called name, or an error if there is no
// such link or it is not a bridge.
func BridgeByName(name string) (*netlink.Bridge, error) {
	l, err := linkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("bridge %s not found", name)
		}
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("link %s is a %s, not a bridge", name, l.Type())
	}
	return br, nil
}

// linkAddrs lists the addresses of the link with this index. Unlike
// netlink.AddrList, which dumps every address of the namespace and filters
// here (on a node with n containers the host veths' link-local addresses
// make that O(n) per ADD), it asks the kernel to filter
// (NETLINK_GET_STRICT_CHK with the index in the request, Linux ≥ 4.20).
// On an older kernel the option fails, the dump is whole, and the filter
// below still applies. It is a dump, so it stays on vishvananda/netlink's
// request machinery, which reads it to NLMSG_DONE and reports
// NLM_F_DUMP_INTR as netlink.ErrDumpInterrupted (retryDump); internal/nlraw
// only does request/ack exchanges.
func linkAddrs(index int) ([]netlink.Addr, error) {
	s, err := nl.GetNetlinkSocketAt(-1, -1, unix.NETLINK_ROUTE) // -1: this namespace
	if err != nil {
		return nil, err
	}
	defer s.Close()
	_ = unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	msg := nl.NewIfAddrmsg(netlink.FAMILY_ALL)
	msg.Index = uint32(index)
	req.AddData(msg)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
	if err != nil {
		return nil, err
	}
	var out []netlink.Addr
	for _, m := range msgs {
		ifa := nl.DeserializeIfAddrmsg(m)
		if int(ifa.Index) != index {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[ifa.Len():])
		if err != nil {
			return nil, err
		}
		var local, address net.IP
		flags := int(ifa.Flags)
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.IFA_LOCAL:
				local = net.IP(a.Value)
			case unix.IFA_ADDRESS:
				address = net.IP(a.Value)
			case unix.IFA_FLAGS:
				if len(a.Value) >= 4 {
					flags = int(nl.NativeEndian().Uint32(a.Value[:4]))
				}
			}
		}
		ip := local // IPv4: IFA_LOCAL is the address (IFA_ADDRESS the peer)
		if ip == nil {
			ip = address
		}
		if ip == nil {
			continue
		}
		bits := 8 * len(ip)
		out = append(out, netlink.Addr{
			IPNet:     &net.IPNet{IP: ip, Mask: net.CIDRMask(int(ifa.Prefixlen), bits)},
			Flags:     flags,
			LinkIndex: index,
		})
	}
	return out, nil
}

package link

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A provider bridge holds a host uplink: the containers sit directly on
// the upstream segment (a provider network), the upstream routers are
// their gateways, and the node routes nothing for them.

// ProviderLockDir holds the lock files that serialize the first set-up of
// a provider bridge (one per bridge name). A variable for tests only.
var ProviderLockDir = "/run/v6cni"

// UplinkRASysctls are the uplink's IPv6 keys (under net/ipv6/conf/<if>/)
// the bridge takes over with its addresses: how the node learns its own
// routes and addresses from the segment's routers. The uplink itself then
// gets accept_ra=0 and autoconf=0: as a bridge port it no longer receives
// anything for the node.
var UplinkRASysctls = []string{
	"accept_ra",
	"accept_ra_defrtr",
	"accept_ra_pinfo",
	"accept_ra_rtr_pref",
	"accept_ra_mtu",
	"accept_ra_rt_info_min_plen",
	"accept_ra_rt_info_max_plen",
	"ra_defrtr_metric",
	"autoconf",
	"router_solicitations",
	"router_solicitation_interval",
	"use_tempaddr",
	"addr_gen_mode",
}

// EnsureProviderUplink makes bridge br hold the provider uplink, once: the
// uplink is master or, with vid, the VLAN sub-interface uplink of master
// (created, up, when missing). The first call (under a file lock per
// bridge, so concurrent first ADDs do it once) copies the uplink's
// UplinkRASysctls and MAC to the bridge, puts the uplink's addresses other
// than link-local on the bridge (without DAD: they are the node's already;
// lifetimes kept), enslaves the uplink, moves the uplink's routes to the
// bridge: the RA-learned ones with their remaining lifetime (at most
// MovedRARouteHold) and a metric after theirs, until the bridge learns
// them again from the routers (see moveRARoutes), the others as they are,
// but for the kernel's (re-made with the addresses); then it removes the
// addresses and every route left on the uplink other than its link-local
// ones. The node stays reachable at its addresses throughout. Later calls
// find the uplink enslaved and change nothing. It returns the uplink.
//
// The bridge must be new or hold no other port yet for the node to
// solicit the routers' RAs at once (a bridge that already has carrier
// sends its next router solicitation only when told to).
func EnsureProviderUplink(br *netlink.Bridge, master string, vid int, uplink string) (netlink.Link, error) {
	unlock, err := lockProvider(br.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()

	up, err := ensureUplink(master, vid, uplink)
	if err != nil {
		return nil, err
	}
	switch m := up.Attrs().MasterIndex; {
	case m == br.Index:
		return up, nil // set up by an earlier ADD
	case m != 0:
		return nil, fmt.Errorf("uplink %s of bridge %s is already a port of link index %d", uplink, br.Name, m)
	}
	return up, moveToBridge(br, up)
}

// lockProvider takes an exclusive lock on the bridge's lock file.
func lockProvider(bridge string) (unlock func(), err error) {
	if err := os.MkdirAll(ProviderLockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock provider bridge %s: %w", bridge, err)
	}
	path := filepath.Join(ProviderLockDir, "provider-"+bridge+".lock")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock provider bridge %s: open %s: %w", bridge, path, err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock provider bridge %s: flock %s: %w", bridge, path, err)
	}
	return func() { unix.Close(fd) }, nil
}

// ensureUplink returns the uplink: master itself, or its VLAN vid named
// uplink, created when missing. Both are brought up.
func ensureUplink(master string, vid int, uplink string) (netlink.Link, error) {
	m, err := linkByName(master)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("provider master %s not found", master)
		}
		return nil, fmt.Errorf("look up provider master %s: %w", master, err)
	}
	if err := mtuAndUp(m, "provider master", 0); err != nil {
		return nil, err
	}
	if vid == 0 {
		return m, nil
	}
	l, err := linkByName(uplink)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("look up provider uplink %s: %w", uplink, err)
	}
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = uplink
		attrs.ParentIndex = m.Attrs().Index
		err = netlink.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: vid, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create provider uplink %s (VLAN %d of %s): %w", uplink, vid, master, err)
		}
		if l, err = linkByName(uplink); err != nil {
			return nil, fmt.Errorf("look up provider uplink %s: %w", uplink, err)
		}
	}
	v, ok := l.(*netlink.Vlan)
	if !ok || v.ParentIndex != m.Attrs().Index || v.VlanId != vid {
		return nil, fmt.Errorf("provider uplink %s exists and is not VLAN %d of %s", uplink, vid, master)
	}
	if err := mtuAndUp(v, "provider uplink", 0); err != nil {
		return nil, err
	}
	return v, nil
}

// moveToBridge does EnsureProviderUplink's first set-up.
func moveToBridge(br *netlink.Bridge, up netlink.Link) error {
	name := up.Attrs().Name
	s := openSysctls()
	defer s.close()
	for _, key := range UplinkRASysctls {
		v, err := s.read("net/ipv6/conf/" + name + "/" + key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a key this kernel lacks
		}
		if err != nil {
			return fmt.Errorf("provider uplink %s: %w", name, err)
		}
		if err := s.set("net/ipv6/conf/"+br.Name+"/"+key, v); err != nil {
			return fmt.Errorf("provider bridge %s: %w", br.Name, err)
		}
	}
	if err := s.set("net/ipv6/conf/"+br.Name+"/disable_ipv6", "0"); err != nil {
		return fmt.Errorf("provider bridge %s: %w", br.Name, err)
	}
	if mac := up.Attrs().HardwareAddr; len(mac) == 6 && !sameMAC(mac, br.HardwareAddr) {
		if err := netlink.LinkSetHardwareAddr(br, mac); err != nil {
			return fmt.Errorf("give provider bridge %s the MAC %s of uplink %s: %w", br.Name, mac, name, err)
		}
		br.HardwareAddr = mac
	}

	// netlink.AddrList, not linkAddrs: the lifetimes are needed (once
	// per bridge, the cost does not matter).
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(up, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of provider uplink %s: %w", name, err)
	}
	var moved []netlink.Addr
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() || a.Flags&unix.IFA_F_DADFAILED != 0 {
			continue
		}
		moved = append(moved, a)
		// The node's own address: no DAD. The lifetimes of an address
		// the uplink formed from an RA are kept; the bridge renews it.
		na := &netlink.Addr{
			IPNet:       a.IPNet,
			Flags:       unix.IFA_F_NODAD | a.Flags&(unix.IFA_F_NOPREFIXROUTE|unix.IFA_F_MANAGETEMPADDR),
			ValidLft:    a.ValidLft,
			PreferedLft: a.PreferedLft,
		}
		if err := netlink.AddrAdd(br, na); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("move address %s of uplink %s to provider bridge %s: %w", a.IPNet, name, br.Name, err)
		}
	}
	routes, err := uplinkRoutes(up)
	if err != nil {
		return fmt.Errorf("list routes of provider uplink %s: %w", name, err)
	}
	raRoutes, err := raRoutesOf(up.Attrs().Index)
	if err != nil {
		return fmt.Errorf("list RA routes of provider uplink %s: %w", name, err)
	}

	if err := netlink.LinkSetMasterByIndex(up, br.Index); err != nil {
		return fmt.Errorf("enslave provider uplink %s to bridge %s: %w", name, br.Name, err)
	}
	// From here the uplink delivers nothing to the node: the routes
	// first (what the node sends by a route of the uplink is lost).
	if err := moveRARoutes(br.Index, raRoutes); err != nil {
		return fmt.Errorf("provider uplink %s: %w", name, err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_RA || !uplinkGlobal(r) {
			continue // moved above; or the kernel's link-local ones
		}
		// Removed first: IPv6 takes a route of the same destination and
		// metric on another device for the same route (EEXIST).
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove route %s from provider uplink %s: %w", routeDst(r), name, err)
		}
		if r.Protocol == unix.RTPROT_KERNEL {
			// A prefix route of an address: the bridge has its own
			// since the address was put on it.
			continue
		}
		nr := r
		nr.LinkIndex = br.Index
		nr.ILinkIndex = 0
		if err := netlink.RouteAdd(&nr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("move route %s of uplink %s to provider bridge %s: %w", routeDst(r), name, br.Name, err)
		}
	}
	for _, a := range moved {
		a.LinkIndex = up.Attrs().Index
		if err := netlink.AddrDel(up, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from provider uplink %s: %w", a.IPNet, name, err)
		}
	}
	// What the addresses' removal left. The kernel removes the prefix
	// route of an address when it removes the address only for an
	// address without lifetimes (IFA_F_PERMANENT): the on-link route of
	// an RA's prefix (proto kernel, with an expiry) stays on the uplink
	// when the uplink's SLAAC address goes, ahead of the bridge's own
	// (same metric, older), and the node then sends to the segment out of
	// the bridge port, where nothing answers. The prefix routes were
	// removed above already; this catches whatever the kernel made
	// meanwhile (an RA received before the uplink was enslaved).
	if routes, err = uplinkRoutes(up); err != nil {
		return fmt.Errorf("list routes of provider uplink %s: %w", name, err)
	}
	for _, r := range routes {
		if !uplinkGlobal(r) {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove route %s from provider uplink %s: %w", routeDst(r), name, err)
		}
	}
	for _, kv := range [][2]string{{"accept_ra", "0"}, {"autoconf", "0"}} {
		if err := s.set("net/ipv6/conf/"+name+"/"+kv[0], kv[1]); err != nil {
			return fmt.Errorf("provider uplink %s: %w", name, err)
		}
	}
	return nil
}

// uplinkRoutes are the routes out of the uplink, of every table and
// family.
func uplinkRoutes(up netlink.Link) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: up.Attrs().Index, Table: unix.RT_TABLE_UNSPEC},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
}

// uplinkGlobal reports whether r, a route out of the provider uplink, is
// one the uplink must not keep once it is a bridge port: a unicast route
// of the main or another routing table to a destination other than
// link-local. The uplink keeps the kernel's own routes of its link-local
// address: fe80::/64 (the bridge has its own; a link-local destination
// names its interface, so the uplink's is never chosen for the bridge's
// traffic) and those of the local table (its link-local address, the
// multicast ff00::/8), which are about the uplink only.
func uplinkGlobal(r netlink.Route) bool {
	if r.Table == unix.RT_TABLE_LOCAL || r.Type != unix.RTN_UNICAST {
		return false
	}
	return r.Dst == nil || !r.Dst.IP.IsLinkLocalUnicast()
}

func sameMAC(a, b net.HardwareAddr) bool { return a.String() == b.String() }

// CheckProviderUplink verifies that uplink is still a port of br.
func CheckProviderUplink(br *netlink.Bridge, uplink string) error {
	l, err := linkByName(uplink)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("provider uplink %s of bridge %s not found", uplink, br.Name)
		}
		return fmt.Errorf("look up provider uplink %s: %w", uplink, err)
	}
	if l.Attrs().MasterIndex != br.Index {
		return fmt.Errorf("provider uplink %s is not a port of bridge %s (master index %d, bridge %d)", uplink, br.Name, l.Attrs().MasterIndex, br.Index)
	}
	return nil
}

// SolicitRouter sends a router solicitation (RFC 4861 §4.1, no options:
// valid from any source) to all-routers out of the interface ifindex, in
// the network namespace of the calling thread.
func SolicitRouter(ifindex int, ifname string) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("solicit a router on %s: open ICMPv6 socket: %w", ifname, err)
	}
	defer unix.Close(fd)
	var blockAll unix.ICMPv6Filter
	for i := range blockAll.Data {
		blockAll.Data[i] = ^uint32(0)
	}
	if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &blockAll); err != nil {
		return fmt.Errorf("solicit a router on %s: set ICMPV6_FILTER: %w", ifname, err)
	}
	for _, o := range [][2]int{{unix.IPV6_MULTICAST_IF, ifindex}, {unix.IPV6_MULTICAST_HOPS, hopLimitNDP}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o[0], o[1]); err != nil {
			return fmt.Errorf("solicit a router on %s: setsockopt %d: %w", ifname, o[0], err)
		}
	}
	// Type 133, code 0, checksum (the kernel's), 4 reserved bytes.
	rs := [8]byte{icmpv6TypeRS}
	dst := &unix.SockaddrInet6{Addr: netip.MustParseAddr("ff02::2").As16(), ZoneId: uint32(ifindex)}
	err = unix.Sendto(fd, rs[:], 0, dst)
	if errors.Is(err, unix.ENETUNREACH) {
		// No multicast route yet (see sendNAs).
		if rerr := addMulticastRoute(ifindex); rerr == nil {
			err = unix.Sendto(fd, rs[:], 0, dst)
		}
	}
	if err != nil {
		return fmt.Errorf("solicit a router on %s: %w", ifname, err)
	}
	return nil
}

// icmpv6TypeRS is the ICMPv6 type of a router solicitation.
const icmpv6TypeRS = 133

// AwaitDefaultRouter waits, on netlink route events, at most timeout, for
// l to have an IPv6 default route learned from a router advertisement, and
// returns its gateway (a router's link-local address). Call it in the
// namespace of l, after link-up.
func AwaitDefaultRouter(l netlink.Link, timeout time.Duration) (netip.Addr, error) {
	events := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.RouteSubscribeWithOptions(events, done, netlink.RouteSubscribeOptions{}); err != nil {
		return netip.Addr{}, fmt.Errorf("subscribe to route events of %s: %w", l.Attrs().Name, err)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		gw, err := defaultRouter(l)
		if err != nil || gw.IsValid() {
			return gw, err
		}
		select {
		case _, ok := <-events:
			if !ok {
				return netip.Addr{}, fmt.Errorf("route events of %s stopped", l.Attrs().Name)
			}
		case <-deadline.C:
			return netip.Addr{}, fmt.Errorf("no router advertised a default route on %s within %s (do the upstream routers send RAs with a router lifetime? set provider.gateway otherwise)", l.Attrs().Name, timeout)
		}
	}
}

// defaultRouter is the gateway of l's RA-learned IPv6 default route (the
// zero Addr when none).
func defaultRouter(l netlink.Link) (netip.Addr, error) {
	routes, err := retryDump(func() ([]netlink.Route, error) { return routeList(l, netlink.FAMILY_V6) })
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list routes of %s: %w", l.Attrs().Name, err)
	}
	for _, r := range routes {
		if r.Protocol != unix.RTPROT_RA || (r.Dst != nil && !isDefault(r.Dst)) {
			continue
		}
		if gw := AddrFromIP(r.Gw); gw.IsValid() {
			return gw, nil
		}
		for _, nh := range r.MultiPath {
			if gw := AddrFromIP(nh.Gw); gw.IsValid() {
				return gw, nil
			}
		}
	}
	return netip.Addr{}, nil
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

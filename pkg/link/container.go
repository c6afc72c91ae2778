package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// loopbackIndex is the ifindex of lo in every network namespace (the kernel
// registers it first, LOOPBACK_IFINDEX): using it saves a lookup.
const loopbackIndex = 1

// Route is a route in the container. A zero GW is an on-link route.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

func (r Route) String() string {
	if !r.GW.IsValid() {
		return r.Dst.String() + " on-link"
	}
	return r.Dst.String() + " via " + r.GW.String()
}

// dadTimeout bounds the wait for duplicate address detection when
// ContainerOptions.DAD is set.
const dadTimeout = 5 * time.Second

// ContainerOptions change how ConfigureContainerWith configures the
// container end.
type ContainerOptions struct {
	// DAD keeps duplicate address detection on (accept_dad=1, addresses
	// without IFA_F_NODAD) and waits, on netlink address events, at most
	// 5 s (dadTimeout), until no address of the interface is tentative. A
	// duplicate fails at once.
	DAD bool
	// AcceptRA makes the interface take router advertisements
	// (accept_ra=1; forwarding is off in a container namespace): the
	// self-configuring IPv6 modes. Autoconf adds SLAAC (autoconf=1) with
	// EUI-64 interface IDs (addr_gen_mode=0).
	AcceptRA, Autoconf bool
	// Await are addresses the plugin does not add but the interface must
	// get by itself (SLAAC from an RA): after link-up, before the routes,
	// ConfigureContainerWith waits on netlink address events, at most 5 s
	// (awaitTimeout), until each is on the interface (any prefix length)
	// and not tentative. CheckContainerWith checks they are present.
	Await []netip.Addr
	// Index is the interface's index when the caller knows it (the
	// ParentIndex CreateVeth returns): it spares a lookup by name.
	Index int

	// The options of a provider network, where the container shares a
	// segment with other hosts and its router is upstream.

	// OptimisticDAD (with DAD) makes the addresses usable while their
	// DAD runs (RFC 4429: optimistic_dad=1, use_optimistic=1), with one
	// probe (dad_transmits=1) sent at once.
	OptimisticDAD bool
	// FastNUD tunes the interface's neighbour timers so that a dead
	// router is noticed in about 1.5 s (NUDSysctls).
	FastNUD bool
	// PortReady, when set, is called after link-up and the addresses
	// are added once it returns: it waits for the bridge to forward the
	// port, so that the first DAD probe reaches the segment (sent
	// before, it is dropped and a duplicate goes unnoticed).
	PortReady func() error
	// IgnoreRADefaultRoute (with AcceptRA) keeps the RAs from adding a
	// default route (accept_ra_defrtr=0): the caller adds its own, to a
	// configured gateway, which one from an RA would shadow.
	IgnoreRADefaultRoute bool
	// SolicitRouter (with AcceptRA) sends a router solicitation once
	// the port forwards: the kernel's own was sent at link-up, before
	// it did, and the next one comes 4 s later.
	SolicitRouter bool
}

// NUDSysctls are the neighbour settings (net/ipv6/neigh/<if>/) of
// ContainerOptions.FastNUD: a reachable entry goes stale after
// 250–750 ms without confirmation, is probed 1 s after it is next used,
// 3 times 100 ms apart, then fails; the kernel then prefers another
// default router. The same retransmission time spaces the DAD probes.
var NUDSysctls = [][2]string{
	{"base_reachable_time_ms", "500"},
	{"delay_first_probe_time", "1"},
	{"retrans_time_ms", "100"},
	{"ucast_solicit", "3"},
	{"mcast_solicit", "3"},
}

// awaitTimeout bounds the wait for ContainerOptions.Await.
const awaitTimeout = 5 * time.Second

// ConfigureContainerWith configures the container end ifname in the network
// namespace of the calling thread (call it from ns.NetNS.Do): sysctls while
// it is still down, each address (with its prefix length, e.g.
// 2001:db8:cafe:3::2/64) with IFA_F_NODAD unless opts.DAD, lo and ifname
// up, ndisc_notify/arp_notify (see enableNotify), the DAD wait when opts.DAD, then the routes (after the addresses and
// link-up, so their gateways are on-link). It returns the interface.
func ConfigureContainerWith(ifname string, addrs []netip.Prefix, routes []Route, opts ContainerOptions) (netlink.Link, error) {
	var l netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: opts.Index, Name: ifname}}
	if opts.Index <= 0 {
		var err error
		if l, err = linkByName(ifname); err != nil {
			return nil, fmt.Errorf("look up %s: %w", ifname, err)
		}
	}

	var has4, has6 bool
	for _, a := range addrs {
		if a.Addr().Unmap().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	has6 = has6 || len(opts.Await) > 0
	s := openSysctls()
	defer s.close()
	if err := prepareContainerIface(s, ifname, has6, opts); err != nil {
		return nil, err
	}

	var dadEvents chan netlink.AddrUpdate
	if (opts.DAD && has6) || len(opts.Await) > 0 {
		// Subscribed before the addresses exist: no event can be missed.
		dadEvents = make(chan netlink.AddrUpdate, 64)
		done := make(chan struct{})
		defer close(done)
		if err := netlink.AddrSubscribeWithOptions(dadEvents, done, netlink.AddrSubscribeOptions{}); err != nil {
			return nil, fmt.Errorf("subscribe to address events for the DAD of %s: %w", ifname, err)
		}
	}

	flags := unix.IFA_F_NODAD
	if opts.DAD {
		flags = 0
	}
	addAddrs := func() error {
		for _, a := range addrs {
			addr := &netlink.Addr{IPNet: ipNet(a), Flags: flags}
			if opts.DAD && opts.OptimisticDAD && a.Addr().Is6() {
				addr.Flags |= unix.IFA_F_OPTIMISTIC
			}
			if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add address %s to %s: %w", a, ifname, err)
			}
		}
		return nil
	}
	if opts.PortReady == nil {
		if err := addAddrs(); err != nil {
			return nil, err
		}
	}

	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: loopbackIndex, Name: "lo"}}
	if err := netlink.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("set lo up: %w", err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", ifname, err)
	}
	if opts.PortReady != nil {
		if err := opts.PortReady(); err != nil {
			return nil, err
		}
		if err := addAddrs(); err != nil {
			return nil, err
		}
	}
	if opts.SolicitRouter && opts.AcceptRA {
		if err := SolicitRouter(l.Attrs().Index, ifname); err != nil {
			return nil, err
		}
	}
	if err := enableNotify(s, ifname, has6, has4); err != nil {
		return nil, err
	}

	if len(opts.Await) > 0 {
		if err := waitAddrs(l, opts.Await, dadEvents, awaitTimeout); err != nil {
			return nil, err
		}
	}
	if opts.DAD && has6 {
		if err := waitDAD(l, dadEvents, dadTimeout); err != nil {
			return nil, err
		}
	}

	if err := AddRoutes(l, routes); err != nil {
		return nil, err
	}
	return l, nil
}

// AddRoutes adds routes via l (an existing one is fine), in the network
// namespace of the calling thread.
func AddRoutes(l netlink.Link, routes []Route) error {
	ifname := l.Attrs().Name
	for _, r := range routes {
		route := &netlink.Route{
			LinkIndex: l.Attrs().Index,
			Dst:       ipNet(r.Dst.Masked()),
			Scope:     netlink.SCOPE_UNIVERSE,
		}
		if r.GW.IsValid() {
			route.Gw = r.GW.Unmap().AsSlice()
		} else {
			route.Scope = netlink.SCOPE_LINK
		}
		if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add route %s dev %s: %w", r, ifname, err)
		}
	}
	return nil
}

// ErrDADFailed is wrapped by the error ConfigureContainerWith returns when
// an address of the container is a duplicate on the link; that error's
// chain holds a *DADError naming the address.
var ErrDADFailed = errors.New("duplicate address detection failed")

// DADError is the failure of duplicate address detection for one address:
// another node on the link holds Addr. It wraps ErrDADFailed.
type DADError struct {
	Addr   netip.Prefix
	Ifname string
}

func (e *DADError) Error() string {
	return fmt.Sprintf("%v: %s on %s is already used by another node on the link", ErrDADFailed, e.Addr, e.Ifname)
}

func (e *DADError) Unwrap() error { return ErrDADFailed }

// waitDAD returns when no IPv6 address of l is tentative, fails as soon as
// one is DADFAILED, and gives up after timeout. It reads the addresses
// again on each address event of the namespace (no sleeps).
func waitDAD(l netlink.Link, events <-chan netlink.AddrUpdate, timeout time.Duration) error {
	name := l.Attrs().Name
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		have, err := addrList(l, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("list addresses of %s during DAD: %w", name, err)
		}
		var tentative []string
		for _, a := range have {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				p, _ := PrefixFromIPNet(a.IPNet)
				return &DADError{Addr: p, Ifname: name}
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = append(tentative, a.IPNet.String())
			}
		}
		if len(tentative) == 0 {
			return nil
		}
		select {
		case _, ok := <-events:
			if !ok {
				return fmt.Errorf("address events for the DAD of %s stopped", name)
			}
		case <-deadline.C:
			return fmt.Errorf("duplicate address detection on %s did not finish within %s: %s still tentative",
				name, timeout, strings.Join(tentative, ", "))
		}
	}
}

// errAddrMissing is wrapped by the error ConfigureContainerWith returns
// when an awaited address did not appear in time.
var errAddrMissing = errors.New("address did not appear")

// waitAddrs returns when every address in want is on l and not tentative,
// and gives up after timeout. It reads the addresses again on each address
// event of the namespace (no sleeps).
func waitAddrs(l netlink.Link, want []netip.Addr, events <-chan netlink.AddrUpdate, timeout time.Duration) error {
	name := l.Attrs().Name
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		missing, failed, err := awaitedAddrs(l, want, true)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", name, err)
		}
		if len(failed) > 0 {
			// Another node holds the address the container formed:
			// fail at once, as for an address the plugin added.
			return &DADError{Addr: failed[0], Ifname: name}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case u, ok := <-events:
			if !ok {
				return fmt.Errorf("address events of %s stopped", name)
			}
			// The kernel removes an address it formed (SLAAC) whose
			// DAD failed (RFC 4862 §5.4.5): it goes while still
			// tentative. (A permanent one stays, DADFAILED: above.)
			if p, ok := PrefixFromIPNet(&u.LinkAddress); ok && !u.NewAddr && u.LinkIndex == l.Attrs().Index &&
				u.Flags&unix.IFA_F_TENTATIVE != 0 && slices.Contains(want, p.Addr()) {
				return &DADError{Addr: p, Ifname: name}
			}
		case <-deadline.C:
			return fmt.Errorf("%w: %s not configured on %s within %s (router advertisements of the bridge's prefix reach it? the address is the EUI-64 one of its MAC?)",
				errAddrMissing, joinAddrs(missing), name, timeout)
		}
	}
}

// missingAddrs returns the addresses of want that l does not carry (any
// prefix length); with usable, a tentative or DAD-failed one counts as
// missing.
func missingAddrs(l netlink.Link, want []netip.Addr, usable bool) ([]netip.Addr, error) {
	missing, _, err := awaitedAddrs(l, want, usable)
	return missing, err
}

// awaitedAddrs is missingAddrs, also returning the addresses of want whose
// duplicate address detection failed (with their prefix length).
func awaitedAddrs(l netlink.Link, want []netip.Addr, usable bool) (missing []netip.Addr, failed []netip.Prefix, err error) {
	have, err := addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, err
	}
	present := make(map[netip.Addr]bool, len(have))
	for _, a := range have {
		p, ok := PrefixFromIPNet(a.IPNet)
		if !ok {
			continue
		}
		if a.Flags&unix.IFA_F_DADFAILED != 0 && slices.Contains(want, p.Addr()) {
			failed = append(failed, p)
		}
		if usable && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		present[p.Addr()] = true
	}
	for _, w := range want {
		if !present[w.Unmap()] {
			missing = append(missing, w)
		}
	}
	return missing, failed, nil
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// announceLink sends, in the namespace of the calling thread, an
// unsolicited neighbour advertisement for every usable IPv6 address of l
// (link-local included) and a gratuitous ARP for each IPv4 one (its index,
// name, flags and, when mac is nil, MAC are used). It lists the addresses
// of l (one dump) and announces those the kernel itself would on a MAC change
// (ndisc_send_unsol_na, inetdev_send_gratuitous_arp): all but the
// tentative ones, an optimistic address without the Override flag, except
// secondary IPv4 addresses. Callers know their addresses and call
// AnnounceAddrs (which documents how the announcements are sent, and why
// not by the kernel): the dump costs more than the announcements. This one
// serves the tests, which compare what it sends with the kernel's own.
func announceLink(l netlink.Link, mac net.HardwareAddr) error {
	have, err := addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s to announce them: %w", l.Attrs().Name, err)
	}
	list := make([]announcement, 0, len(have))
	for _, a := range have {
		p, ok := PrefixFromIPNet(a.IPNet)
		if !ok {
			continue
		}
		optimistic := a.Flags&unix.IFA_F_OPTIMISTIC != 0
		switch {
		case a.Flags&unix.IFA_F_DADFAILED != 0, a.Flags&unix.IFA_F_TENTATIVE != 0 && !optimistic:
			continue // the kernel would refuse it as a source
		case a.Flags&unix.IFA_F_SECONDARY != 0 && p.Addr().Is4():
			continue // the kernel's ARP for it would name the primary (see AnnounceAddrs)
		}
		list = append(list, announcement{addr: p.Addr(), override: !optimistic})
	}
	return announce(l, mac, list)
}

// CheckContainerWith verifies, in the network namespace of the calling
// thread, that ifname exists with the given MAC (nil: not checked),
// carries every address in addrs, and that every route in routes is in the
// namespace's main table; other addresses and routes (added by later
// plugins) are tolerated, and errors name what is missing. For an
// interface configured with opts, the sysctls opts sets (accept_ra=1 with
// AcceptRA) and the awaited addresses (any prefix length) are checked too.
func CheckContainerWith(ifname string, mac net.HardwareAddr, addrs []netip.Prefix, routes []Route, opts ContainerOptions) error {
	l, err := linkByName(ifname)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("interface %s not found", ifname)
		}
		return fmt.Errorf("look up %s: %w", ifname, err)
	}
	if mac != nil && !slices.Equal(l.Attrs().HardwareAddr, mac) {
		return fmt.Errorf("interface %s has MAC %s, want %s", ifname, l.Attrs().HardwareAddr, mac)
	}

	if err := checkAddrs(l, addrs); err != nil {
		return err
	}
	if len(opts.Await) > 0 {
		missing, err := missingAddrs(l, opts.Await, false)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", ifname, err)
		}
		if len(missing) > 0 {
			return fmt.Errorf("address %s missing on %s (the container configures it itself: router advertisements or its DHCPv6 client did not give it)", joinAddrs(missing), ifname)
		}
	}
	if err := checkContainerSysctls(ifname, addrs, opts); err != nil {
		return err
	}

	if len(routes) > 0 {
		// Every route of the namespace, not only ifname's: a route in
		// prevResult may belong to a later plugin's interface.
		have, err := routeList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list routes in the netns of %s: %w", ifname, err)
		}
		present := make(map[Route]bool, len(have))
		for _, r := range have {
			if dst, ok := PrefixFromIPNet(r.Dst); ok {
				present[Route{Dst: dst.Masked(), GW: AddrFromIP(r.Gw)}] = true
			}
		}
		for _, want := range routes {
			key := Route{Dst: want.Dst.Masked(), GW: want.GW.Unmap()}
			key.Dst = netip.PrefixFrom(key.Dst.Addr().Unmap(), key.Dst.Bits())
			if !present[key] {
				return fmt.Errorf("route %s missing (checking %s)", want, ifname)
			}
		}
	}
	return nil
}

// CheckBridgeGateways verifies that every gateway address (with its block's
// prefix length) is on the bridge.
func CheckBridgeGateways(br netlink.Link, gateways []netip.Prefix) error {
	return checkAddrs(br, gateways)
}

// checkAddrs verifies that every address in want is on l, with its prefix
// length; other addresses are tolerated.
func checkAddrs(l netlink.Link, want []netip.Prefix) error {
	if len(want) == 0 {
		return nil
	}
	name := l.Attrs().Name
	have, err := addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	present := make(map[netip.Prefix]bool, len(have))
	for _, a := range have {
		if p, ok := PrefixFromIPNet(a.IPNet); ok {
			present[p] = true
		}
	}
	for _, w := range want {
		if !present[netip.PrefixFrom(w.Addr().Unmap(), w.Bits())] {
			return fmt.Errorf("address %s missing on %s", w, name)
		}
	}
	return nil
}

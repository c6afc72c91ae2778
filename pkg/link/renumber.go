package link

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Renumbering a running container, make-before-break (design
// pd-ha-renumbering §3.3): the new address is added and usable at once,
// the routes move to the new gateway, and the old address stays valid but
// deprecated until its prefix's valid lifetime ends, so connections bound
// to it keep working while new ones take the new address (RFC 6724 rule 3:
// a deprecated address is never preferred as a source). The old address's
// end is the kernel's own: its valid_lft is set, so it goes at its valid
// end even when ipamd is down. Every function acts on the namespace of the
// calling thread (call it from NetNS.Do) and is idempotent: a job retried
// after a restart lands in the same state.

// ErrIfaceMismatch is wrapped when the interface a renumbering targets is
// missing or has another MAC: the netns path is stale (a /proc/<pid>/ns/net
// path whose pid was reused, a bind mount of a namespace re-created) and
// nothing in it may be touched.
var ErrIfaceMismatch = errors.New("interface missing or with another MAC")

// Renumbering is one attachment's move from one address to another.
type Renumbering struct {
	// IfName and MAC identify the container end (MAC nil: not checked;
	// the interface must hold Old or New in any case).
	IfName string
	MAC    net.HardwareAddr
	// Old and New are the addresses with their block's prefix length.
	Old, New netip.Prefix
	// OldGateway and NewGateway are the gateways of the old and new
	// blocks: routes via OldGateway move to NewGateway. Zero: no routes
	// are moved.
	OldGateway, NewGateway netip.Addr
	// OldValidUntil is when the old address stops being valid; zero or
	// past removes it at once (a break: the server said it is invalid).
	OldValidUntil time.Time
}

// ContainerIface returns the interface ifname of the calling thread's
// namespace, after checking its MAC (nil: not checked). A missing
// interface or another MAC is an error wrapping ErrIfaceMismatch.
func ContainerIface(ifname string, mac net.HardwareAddr) (netlink.Link, error) {
	l, err := linkByName(ifname)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: interface %s not found", ErrIfaceMismatch, ifname)
		}
		return nil, fmt.Errorf("look up %s: %w", ifname, err)
	}
	if mac != nil && !slices.Equal(l.Attrs().HardwareAddr, mac) {
		return nil, fmt.Errorf("%w: interface %s has MAC %s, want %s", ErrIfaceMismatch, ifname, l.Attrs().HardwareAddr, mac)
	}
	return l, nil
}

// RenumberContainer applies r in the namespace of the calling thread: the
// interface is checked first, its MAC and that it holds the old or the new
// address (ErrIfaceMismatch: nothing done), then the new
// address is added, the routes via the old gateway are moved to the new
// one, the old address is deprecated with the valid time left (or removed
// when none is left), and an unsolicited neighbour advertisement for the
// new address tells peers its MAC. now is the time OldValidUntil is
// measured against.
func RenumberContainer(r Renumbering, now time.Time) error {
	l, err := ContainerIface(r.IfName, r.MAC)
	if err != nil {
		return err
	}
	// The address is the attachment's other proof of identity, and its
	// only one when the record has no MAC (ipamd records it for
	// self-configuring attachments only): IPAM made both unique, so an
	// interface holding neither is another container's.
	held, err := missingAddrs(l, []netip.Addr{r.Old.Addr().Unmap(), r.New.Addr().Unmap()}, false)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", r.IfName, err)
	}
	if len(held) == 2 {
		return fmt.Errorf("%w: interface %s holds neither %s nor %s", ErrIfaceMismatch, r.IfName, r.Old.Addr(), r.New.Addr())
	}
	if err := AddPermanentAddr(l, r.New); err != nil {
		return err
	}
	if r.OldGateway.IsValid() && r.NewGateway.IsValid() && r.OldGateway != r.NewGateway {
		if err := MoveRoutes(r.OldGateway, r.NewGateway); err != nil {
			return fmt.Errorf("%w (renumbering %s on %s)", err, r.Old, r.IfName)
		}
	}
	if left := r.OldValidUntil.Sub(now); r.OldValidUntil.IsZero() || left <= 0 {
		if err := RemoveAddr(l, r.Old.Addr()); err != nil {
			return err
		}
	} else if err := DeprecateAddr(l, r.Old, left); err != nil {
		return err
	}
	if err := AnnounceAddrs(l, r.MAC, []netip.Prefix{r.New}); err != nil {
		return fmt.Errorf("announce %s after renumbering: %w", r.New.Addr(), err)
	}
	return nil
}

// AddPermanentAddr puts p on l with IFA_F_NODAD and infinite lifetimes
// (replacing the address if present, whatever its lifetimes): usable as a
// source at once. IPAM owns uniqueness, as for ConfigureContainerWith.
func AddPermanentAddr(l netlink.Link, p netip.Prefix) error {
	addr := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("add address %s to %s: %w", p, l.Attrs().Name, err)
	}
	return nil
}

// DeprecateAddr sets the address p of l to preferred_lft 0 and valid_lft
// validLeft (rounded up to a second): no new connection picks it, those
// bound to it go on, and the kernel removes it when validLeft has passed.
// An address no longer on l (the kernel removed it at its valid end, or a
// previous run did) is not put back.
func DeprecateAddr(l netlink.Link, p netip.Prefix, validLeft time.Duration) error {
	have, err := addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	want := netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	found := false
	var flags int
	for _, a := range have {
		if q, ok := PrefixFromIPNet(a.IPNet); ok && q == want {
			found, flags = true, a.Flags
			break
		}
	}
	if !found {
		return nil
	}
	secs := math.Ceil(validLeft.Seconds())
	if secs < 1 {
		return RemoveAddr(l, p.Addr())
	}
	if secs >= math.MaxUint32 {
		secs = math.MaxUint32 - 1 // 0xffffffff is "forever"
	}
	// IFA_F_NODAD kept (a replace without it would not start DAD on an
	// address that has none, but says so); IFA_F_PERMANENT is the
	// kernel's, cleared by the finite valid lifetime.
	addr := &netlink.Addr{
		IPNet:       ipNet(want),
		Flags:       flags & unix.IFA_F_NODAD,
		PreferedLft: 0,
		ValidLft:    int(secs),
	}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("deprecate address %s on %s (valid %ds): %w", want, l.Attrs().Name, int(secs), err)
	}
	return nil
}

// RemoveAddr deletes every address of l equal to a (whatever its prefix
// length: a SLAAC address is matched as well as a static one). An address
// that is not there is fine.
func RemoveAddr(l netlink.Link, a netip.Addr) error {
	have, err := addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	a = a.Unmap()
	for _, h := range have {
		p, ok := PrefixFromIPNet(h.IPNet)
		if !ok || p.Addr() != a {
			continue
		}
		h.LinkIndex = l.Attrs().Index
		if err := netlink.AddrDel(l, &h); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from %s: %w", p, l.Attrs().Name, err)
		}
	}
	return nil
}

// MoveRoutes replaces every main-table route via oldGW (the default route
// bridge-v6 adds, and routes IPAM gave) with the same route via newGW, in
// place (route replace: the destination is never without a route). newGW
// must already be on-link (its block's address added first). Multipath
// routes are left alone: bridge-v6 never installs one.
func MoveRoutes(oldGW, newGW netip.Addr) error {
	family := netlink.FAMILY_V6
	if oldGW.Unmap().Is4() {
		family = netlink.FAMILY_V4
	}
	filter := &netlink.Route{Gw: oldGW.Unmap().AsSlice(), Table: unix.RT_TABLE_MAIN}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(family, filter, netlink.RT_FILTER_GW|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes via %s: %w", oldGW, err)
	}
	for _, r := range routes {
		if len(r.MultiPath) > 0 {
			continue
		}
		r.Gw = newGW.Unmap().AsSlice()
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("move route %s from %s to %s: %w", routeDst(r), oldGW, newGW, err)
		}
	}
	return nil
}

// routeDst names a route's destination for errors ("default" for none).
func routeDst(r netlink.Route) string {
	if r.Dst == nil {
		return "default"
	}
	return r.Dst.String()
}

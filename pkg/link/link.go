// Package link does the kernel work of a bridge-v6 attachment: the bridge
// and its gateway addresses (bridge.go), the veth pair with its container
// end created directly in the container's network namespace (veth.go,
// newlink.go), the container end's addresses without DAD, routes and IPv6
// sysctls (container.go, sysctl.go), access VLANs (vlan.go), the wait for
// the host port to forward (port.go), the announcements of the container's
// addresses (announce.go), masquerading and the MAC spoof check with nft
// (masq.go, spoofchk.go), a provider network's uplink moved into the
// bridge and the router solicited or awaited (provider.go), the
// make-before-break renumbering of a running
// container (renumber.go), entering a network namespace in place (netns.go)
// and the names and MACs every ADD, CHECK and DEL recompute (names.go). It
// knows nothing of CNI results or configs: callers pass plain names, netip
// values and netlink links.
//
// Layering: most requests go through vishvananda/netlink. The few it
// cannot send, or sends at a cost measured on the ADD path of a plugin
// exec'd per container, go through internal/nlraw, this package's own
// small rtnetlink layer (a socket, one request/ack exchange, one message
// builder, the decoders of the kernel's answers): the veth pair in one
// RTM_NEWLINK on one socket (newlink.go: 4 requests on 4 sockets with
// LinkAdd), the oper-up watch without a goroutine decoding every event
// (port.go), the gratuitous ARPs as one batch of neighbour requests
// (announce.go), and vlan_filtering without the name an up bridge refuses
// (vlan.go). Each place says why where it builds its request.
//
// Functions that work inside a network namespace (ConfigureContainerWith,
// CheckContainerWith…) act on the namespace of the calling thread: call
// them from NetNS.Do.
package link

import (
	"errors"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// maxDumpAttempts bounds the retries of a netlink dump the kernel flagged as
// interrupted (NLM_F_DUMP_INTR: the table changed while it was read, which
// happens on a busy host with many containers starting at once).
const maxDumpAttempts = 5

// retryDump calls f until it returns something other than
// netlink.ErrDumpInterrupted, at most maxDumpAttempts times. Unlike
// plugins/pkg/netlinksafe it never returns a possibly inconsistent dump as a
// success: a CHECK that reads half a table would report false errors.
func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range maxDumpAttempts {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// linkByName looks a link up in the namespace of the calling thread.
func linkByName(name string) (netlink.Link, error) {
	return retryDump(func() (netlink.Link, error) { return netlink.LinkByName(name) })
}

// addrList lists the addresses of l of a family (netlink.FAMILY_ALL for all).
func addrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, family) })
}

// routeList lists the main-table routes through l.
func routeList(l netlink.Link, family int) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(l, family) })
}

// isNotFound reports whether err says a link does not exist.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// ipNet converts a prefix that keeps its host bits (an interface address
// such as 2001:db8::2/64) to the netlink form.
func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// PrefixFromIPNet converts a *net.IPNet (a netlink address or route
// destination, or a CNI result address) to a netip.Prefix, keeping host bits
// and turning IPv4 in its 16-byte form into a plain IPv4 prefix; ok is false
// for nil or malformed values.
func PrefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if a.Is4In6() {
		a = a.Unmap()
		if bits == 128 && ones >= 96 { // a 16-byte IPv4 mask
			ones, bits = ones-96, 32
		}
	}
	if bits == 0 || bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// AddrFromIP converts a net.IP (nil allowed) to a netip.Addr, IPv4 in its
// 16-byte form to plain IPv4; the zero Addr stands for "none".
func AddrFromIP(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

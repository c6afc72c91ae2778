package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Why the announcements are sent here and not left to the kernel: the only
// way to make the kernel announce addresses that skipped DAD is
// NETDEV_CHANGEADDR (setting the MAC to itself), which, under the RTNL
// lock, also flushes the interface's neighbour entries (neigh_changeaddr),
// runs the IPv6 FIB garbage collector, syncs linkwatch and broadcasts
// RTM_NEWLINK to every listener: profiled at about a sixth of an ADD's CPU
// with 1,000 containers on the node. What is sent here costs a few system
// calls whatever the node's size (in a small namespace, BenchmarkAnnounce:
// about 20 µs against 55 µs for two IPv6 addresses, 40 against 55 µs with
// an IPv4 one as well), and is, byte for byte, what the kernel sends on a
// MAC change (ndisc_send_unsol_na, inetdev_send_gratuitous_arp), so peers
// treat it alike.

// Sizes and codes of the neighbour advertisement (RFC 4861 §4.4, §4.6.1).
const (
	naLen          = 32 // ICMPv6 header (4), flags (4), target (16), TLLA option (8)
	icmpv6TypeNA   = 136
	naFlagOverride = 0x20
	ndOptTargetLLA = 2
	ethALen        = 6
	hopLimitNDP    = 255 // RFC 4861 §7.1.2: receivers drop NDP messages with another hop limit
)

// allNodes is the link-local all-nodes group, the destination of unsolicited
// advertisements.
var allNodes = netip.MustParseAddr("ff02::1").As16()

// announcement is one address to announce; override is false only for an
// optimistic address (RFC 4429 §3.3: it must not override an existing
// entry, which may be the legitimate owner's).
type announcement struct {
	addr     netip.Addr
	override bool
}

// AnnounceAddrs announces, in the network namespace of the calling thread,
// each address of addrs out of l: an unsolicited neighbour advertisement
// for an IPv6 one, a gratuitous ARP for an IPv4 one, so that peers holding
// a stale entry for the address (a previous container had it) learn l's
// MAC at once instead of after neighbour unreachability detection. mac is
// l's MAC (nil: l.Attrs().HardwareAddr), put in the advertisements' Target
// Link-Layer Address option; the ARP carries the MAC the kernel knows. The
// addresses must be on l and usable (not tentative, not DAD-failed): each
// is the source of its own advertisement, as in the kernel's, and the
// kernel refuses a source it does not own. Prefix lengths are ignored.
// An IPv4 address that is secondary on l (another address of its subnet
// came first) gets no gratuitous ARP of its own (see sendGARPs). A
// multicast or unspecified address fails the call before anything is sent;
// otherwise every address is tried, and the error joins the failures, each
// naming the interface and the address. Call it once the host end of the
// veth forwards, or the bridge drops the announcements.
//
// The advertisements have the Router flag clear, where the kernel takes it
// from the interface's forwarding sysctl: a container is a host (the
// plugin never enables forwarding in it), and reading the sysctl would
// cost as much as the rest. The kernel's own announcements on a later MAC
// change (ndisc_notify, arp_notify) are not affected.
func AnnounceAddrs(l netlink.Link, mac net.HardwareAddr, addrs []netip.Prefix) error {
	list := make([]announcement, 0, len(addrs))
	for _, p := range addrs {
		list = append(list, announcement{addr: p.Addr().Unmap(), override: true})
	}
	return announce(l, mac, list)
}

// announce sends the announcements of list out of l: the IPv6 ones from one
// raw ICMPv6 socket, the IPv4 ones through one netlink socket, each opened
// only when needed.
func announce(l netlink.Link, mac net.HardwareAddr, list []announcement) error {
	attrs := l.Attrs()
	if mac == nil {
		mac = attrs.HardwareAddr
	}
	if len(mac) != ethALen {
		return fmt.Errorf("announce the addresses of %s: MAC %q is not an Ethernet address", attrs.Name, mac)
	}
	var v6, v4 []announcement
	for _, a := range list {
		switch {
		case !a.addr.IsValid() || a.addr.IsMulticast() || a.addr.IsUnspecified() || a.addr == netip.IPv4Unspecified():
			return fmt.Errorf("announce %s on %s: not a unicast address", a.addr, attrs.Name)
		case a.addr.Is4():
			v4 = append(v4, a)
		default:
			v6 = append(v6, a)
		}
	}
	var errs []error
	if len(v6) > 0 {
		errs = append(errs, sendNAs(attrs.Index, attrs.Name, mac, v6))
	}
	// Like arp_send: an interface that does not do ARP gets no ARP.
	if len(v4) > 0 && attrs.RawFlags&unix.IFF_NOARP == 0 {
		errs = append(errs, sendGARPs(l, v4))
	}
	return errors.Join(errs...)
}

// sendNAs sends an unsolicited neighbour advertisement for each address of
// list out of ifindex, as ndisc_send_unsol_na does: to ff02::1, hop limit
// 255, from the address itself, Override set (unless optimistic), the MAC
// in a Target Link-Layer Address option, flow label 0. One socket serves
// every address: the source and the interface of each message are given by
// IPV6_PKTINFO rather than bind, and the kernel fills in the ICMPv6
// checksum (it always does on IPPROTO_ICMPV6 raw sockets, RFC 3542 §3.1).
func sendNAs(ifindex int, ifname string, mac net.HardwareAddr, list []announcement) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("announce the IPv6 addresses of %s: open ICMPv6 socket: %w", ifname, err)
	}
	defer unix.Close(fd)

	// Receive nothing: the socket only sends, and without a filter every
	// ICMPv6 packet reaching the namespace meanwhile would be copied to it.
	var blockAll unix.ICMPv6Filter
	for i := range blockAll.Data {
		blockAll.Data[i] = ^uint32(0)
	}
	if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &blockAll); err != nil {
		return fmt.Errorf("announce the IPv6 addresses of %s: set ICMPV6_FILTER: %w", ifname, err)
	}
	for _, o := range []struct {
		name       string
		opt, value int
		optional   bool // a kernel without it sends the same message
	}{
		{"IPV6_MULTICAST_IF", unix.IPV6_MULTICAST_IF, ifindex, false},
		{"IPV6_MULTICAST_HOPS", unix.IPV6_MULTICAST_HOPS, hopLimitNDP, false},
		// Our own namespace needs no copy.
		{"IPV6_MULTICAST_LOOP", unix.IPV6_MULTICAST_LOOP, 0, false},
		// The kernel's NDP messages carry flow label 0 (ip6_nd_hdr);
		// without this, auto_flowlabels gives each a hashed one.
		{"IPV6_AUTOFLOWLABEL", unix.IPV6_AUTOFLOWLABEL, 0, true},
	} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o.opt, o.value); err != nil && !(o.optional && errors.Is(err, unix.ENOPROTOOPT)) {
			return fmt.Errorf("announce the IPv6 addresses of %s: set %s=%d: %w", ifname, o.name, o.value, err)
		}
	}

	dst := &unix.SockaddrInet6{Addr: allNodes, ZoneId: uint32(ifindex)}
	var errs []error
	mrouteAdded := false
	for _, a := range list {
		msg := unsolicitedNA(a.addr, mac, a.override)
		oob := unix.PktInfo6(&unix.Inet6Pktinfo{Addr: a.addr.As16(), Ifindex: uint32(ifindex)})
		_, err := unix.SendmsgN(fd, msg[:], oob, dst, 0)
		if errors.Is(err, unix.ENETUNREACH) && !mrouteAdded {
			// Right after link-up the interface may not have its
			// multicast route yet: the kernel adds it when linkwatch
			// reports the carrier, which can come after the host end of
			// the veth already forwards. Add the very route the kernel
			// would (addrconf_add_mroute) and send again.
			mrouteAdded = true
			if rerr := addMulticastRoute(ifindex); rerr != nil {
				err = fmt.Errorf("%w (and adding the multicast route: %w)", err, rerr)
			} else {
				_, err = unix.SendmsgN(fd, msg[:], oob, dst, 0)
			}
		}
		if err != nil {
			hint := ""
			if errors.Is(err, unix.EINVAL) {
				// ip6_datagram_send_ctl refuses the source.
				hint = " (is the address on the interface, usable, and the interface up?)"
			}
			errs = append(errs, fmt.Errorf("send unsolicited neighbour advertisement for %s on %s: %w%s", a.addr, ifname, err, hint))
		}
	}
	return errors.Join(errs...)
}

// addMulticastRoute adds the route addrconf_add_mroute gives every IPv6
// interface: multicast ff00::/8 out of it, table local, metric 256, proto
// kernel. One the kernel added meanwhile is fine.
func addMulticastRoute(ifindex int) error {
	r := &netlink.Route{
		LinkIndex: ifindex,
		Dst:       &net.IPNet{IP: net.ParseIP("ff00::"), Mask: net.CIDRMask(8, 128)},
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_MULTICAST,
		Protocol:  unix.RTPROT_KERNEL,
		Priority:  256,
	}
	if err := netlink.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// unsolicitedNA returns the ICMPv6 message of an unsolicited neighbour
// advertisement (RFC 4861 §4.4, §7.2.6) for target with link-layer address
// mac (6 bytes): Router and Solicited clear, Override as given, checksum
// left 0 for the kernel.
func unsolicitedNA(target netip.Addr, mac net.HardwareAddr, override bool) [naLen]byte {
	var b [naLen]byte
	b[0] = icmpv6TypeNA
	// b[1] code 0, b[2:4] checksum (the kernel's), b[5:8] reserved.
	if override {
		b[4] = naFlagOverride
	}
	t := target.As16()
	copy(b[8:24], t[:])
	b[24] = ndOptTargetLLA
	b[25] = 1 // length in units of 8 bytes
	copy(b[26:32], mac)
	return b
}

// sendGARPs makes the kernel send a gratuitous ARP for each address of
// list out of l, the one inetdev_send_gratuitous_arp (arp_notify) sends: an
// ARP request broadcast from the interface's MAC, the address as both
// sender and target, a zero target MAC. For each address, an RTM_NEWNEIGH
// with NTF_USE creates a neighbour entry for it on l and makes the kernel
// resolve it at once (arp_solicit): the sender address it picks for a
// target of its own subnet is that address itself, so the request is the
// gratuitous one; an RTM_DELNEIGH deletes the entry right after, before the
// kernel's next probe. All the requests go in one datagram on one netlink
// socket, and the kernel handles them, sending the ARPs, before sendto
// returns.
//
// Not a packet socket, although the ARP is easily built by hand: closing an
// AF_PACKET socket waits for an RCU grace period (packet_release calls
// synchronize_net), and a plugin process pays it on close or at exit
// whatever it does (11 ms per process measured on a 6.18 kernel): far
// more than the NETDEV_CHANGEADDR this replaces.
//
// A secondary address (another address of its subnet on l came first) is
// not announced this way: the kernel's sender would be the primary one. On
// a link that is down the kernel drops the ARP without an error.
func sendGARPs(l netlink.Link, list []announcement) error {
	attrs := l.Attrs()
	var c nlraw.Conn // on the stack: one allocation fewer
	if err := c.Init(nlraw.Options{Buf: make([]byte, garpRecvBuf)}); err != nil {
		return fmt.Errorf("announce the IPv4 addresses of %s: %w", attrs.Name, err)
	}
	defer c.Close()

	// Request 2i is the NTF_USE of list[i], request 2i+1 its deletion.
	m := nlraw.NewMsg(make([]byte, 0, 2*len(list)*neighReqLen))
	for _, a := range list {
		appendNeighReq(&m, unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, unix.NTF_USE, c.Seq(), attrs.Index, a.addr)
		appendNeighReq(&m, unix.RTM_DELNEIGH, 0, 0, c.Seq(), attrs.Index, a.addr)
	}
	errs := make([]error, 2*len(list))
	if err := c.Do(m.Bytes(), func(i int, err error) { errs[i] = err }, nil); err != nil {
		return fmt.Errorf("announce the IPv4 addresses of %s: neighbour requests: %w", attrs.Name, err)
	}

	var out []error
	for i, a := range list {
		if err := errs[2*i]; err != nil {
			out = append(out, fmt.Errorf("send gratuitous ARP for %s on %s (RTM_NEWNEIGH with NTF_USE): %w", a.addr, attrs.Name, err))
			continue // nothing was created to delete
		}
		if err := errs[2*i+1]; err != nil && !errors.Is(err, unix.ENOENT) {
			out = append(out, fmt.Errorf("delete the neighbour entry for %s on %s that sent its gratuitous ARP: %w", a.addr, attrs.Name, err))
		}
	}
	return errors.Join(out...)
}

// garpRecvBuf is the receive buffer of sendGARPs. Its answers are acks,
// each a datagram of its own, at most 56 bytes (an error ack copies the
// 36-byte request back); a buffer the size of the old stack one (4 KiB)
// would be allocated now (the exchange hands the buffer to callbacks).
const garpRecvBuf = 256

// neighReqLen is the size of a neighbour request of appendNeighReq:
// nlmsghdr, ndmsg, and an NDA_DST attribute holding an IPv4 address.
const neighReqLen = unix.SizeofNlMsghdr + unix.SizeofNdMsg + unix.SizeofRtAttr + 4

// appendNeighReq appends to m a netlink request of type typ (RTM_NEWNEIGH,
// RTM_DELNEIGH) with NLM_F_REQUEST, NLM_F_ACK and flags, for the IPv4
// neighbour addr on ifindex, with neighbour flags ntf, state NUD_NONE.
func appendNeighReq(m *nlraw.Msg, typ, flags uint16, ntf uint8, seq uint32, ifindex int, addr netip.Addr) {
	m.Begin(typ, unix.NLM_F_ACK|flags, seq)
	var nd [unix.SizeofNdMsg]byte // struct ndmsg
	nd[0] = unix.AF_INET
	binary.NativeEndian.PutUint32(nd[4:], uint32(ifindex))
	// state NUD_NONE (nd[8:10]), flags, type
	nd[10] = ntf
	m.Fixed(nd[:])
	ip := addr.As4()
	m.Attr(unix.NDA_DST, ip[:])
}

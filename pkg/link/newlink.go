package link

import (
	"fmt"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// This file speaks rtnetlink directly (through internal/nlraw) for the veth
// pair of an attachment: a measured choice, not an oversight.
// vishvananda/netlink's LinkAdd opens a socket per request, looks the new
// link up by name to learn its index (RTM_GETLINK) and sets the master in a
// separate RTM_SETLINK, each with its own notifications: on a busy node that
// was ~8% of the plugin's CPU (BenchmarkCreateVeth: 1.51 → 1.02 ms). Here
// one RTM_NEWLINK creates the pair with everything the kernel takes at
// creation, the container end directly in its namespace, and its echo
// carries the index; the few requests that follow go on the same socket.

// in6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE (include/uapi/linux/if_link.h):
// the kernel forms no IPv6 link-local address on the link.
const in6AddrGenModeNone = 1

// vethRequestBuf is room for a veth request with names, MACs and MTU
// (~150 bytes), so building it does not grow the buffer.
const vethRequestBuf = 256

// vethRequest builds the one RTM_NEWLINK that creates the pair of spec
// with all of it: the host end named, with its MAC and MTU, up and enslaved
// to the bridge (the kernel does IFLA_MASTER at creation, after the echo:
// rtnl_newlink_create → do_set_master, and unregisters the pair if that
// fails); the container end (VETH_INFO_PEER) named, with its MAC and MTU,
// created directly in the container's namespace (IFLA_NET_NS_FD) and down
// (its ifinfomsg has no flags), so its sysctls can be set before it comes up.
//
// With echo, NLM_F_ECHO asks the kernel to send the new host end's
// RTM_NEWLINK back to the requester (honoured on creation since 6.2,
// d88e136cab37 "rtnetlink: Honour NLM_F_ECHO flag in rtnl_newlink_create"),
// which carries its index.
//
// IFLA_AF_SPEC {AF_INET6 {IFLA_INET6_ADDR_GEN_MODE}} is not in it: the
// kernel does not apply it at creation (rtnl_create_link takes no
// IFLA_AF_SPEC) and, since rtnl_create_link validates the message against
// the new, not yet registered device, which has no inet6_dev, it fails the
// whole request with EAFNOSUPPORT (6.18, and 6.1 stable since the
// validation moved there, b0ad3c179059 "rtnetlink: call validate_linkmsg in
// rtnl_create_link"; silently ignored before). It is set afterwards, by
// index (setAddrGenMode).
//
// IFLA_TXQLEN is not in it either: both ends get the kernel's default.
func vethRequest(spec VethSpec, seq uint32, echo bool) []byte {
	flags := uint16(unix.NLM_F_CREATE | unix.NLM_F_EXCL | unix.NLM_F_ACK)
	if echo {
		flags |= unix.NLM_F_ECHO
	}
	m := nlraw.NewMsg(make([]byte, 0, vethRequestBuf))
	m.Begin(unix.RTM_NEWLINK, flags, seq)
	m.IfInfomsg(0, unix.IFF_UP, unix.IFF_UP)
	m.AttrString(unix.IFLA_IFNAME, spec.HostName)
	if spec.HostMAC != nil {
		m.Attr(unix.IFLA_ADDRESS, spec.HostMAC)
	}
	if spec.MTU > 0 {
		m.AttrUint32(unix.IFLA_MTU, uint32(spec.MTU))
	}
	if spec.BridgeIndex > 0 {
		m.AttrUint32(unix.IFLA_MASTER, uint32(spec.BridgeIndex))
	}
	info := m.Nest(unix.IFLA_LINKINFO)
	m.Attr(unix.IFLA_INFO_KIND, []byte("veth"))
	data := m.Nest(unix.IFLA_INFO_DATA)
	peer := m.Nest(nl.VETH_INFO_PEER)
	m.IfInfomsg(0, 0, 0)
	m.AttrString(unix.IFLA_IFNAME, spec.ContainerName)
	if spec.ContainerMAC != nil {
		m.Attr(unix.IFLA_ADDRESS, spec.ContainerMAC)
	}
	if spec.MTU > 0 {
		m.AttrUint32(unix.IFLA_MTU, uint32(spec.MTU))
	}
	m.AttrUint32(unix.IFLA_NET_NS_FD, uint32(spec.NetNSFd))
	m.EndNest(peer)
	m.EndNest(data)
	m.EndNest(info)
	return m.Bytes()
}

// newVeth creates the pair of spec on c (see vethRequest) and returns the
// host end's index and its peer's (the container end's, in its namespace),
// 0 when the kernel sent no echo (before 6.2). On a kernel error (an
// *nlraw.Error) nothing was created, or the kernel removed it again.
func newVeth(c *nlraw.Conn, spec VethSpec, echo bool) (index, peer int, err error) {
	err = c.Request(vethRequest(spec, c.Seq(), echo), func(typ uint16, data []byte) {
		if typ != unix.RTM_NEWLINK {
			return
		}
		if m, ok := nlraw.ParseLinkMsg(data); ok && m.Index > 0 && m.Name == spec.HostName {
			index, peer = m.Index, m.Peer
		}
	})
	if err != nil {
		return 0, 0, err
	}
	return index, peer, nil
}

// linkIndex looks up on c the index of the link called name
// (RTM_GETLINK), and its IFLA_LINK (a veth's peer).
func linkIndex(c *nlraw.Conn, name string) (index, peer int, err error) {
	var buf [64]byte
	err = c.Request(getLinkRequest(buf[:0], c.Seq(), name), func(typ uint16, data []byte) {
		if typ != unix.RTM_NEWLINK {
			return
		}
		if l, ok := nlraw.ParseLinkMsg(data); ok && l.Index > 0 && l.Name == name {
			index, peer = l.Index, l.Peer
		}
	})
	if err == nil && index == 0 {
		err = fmt.Errorf("no link %s in the kernel's answer", name)
	}
	return index, peer, err
}

// getLinkRequest appends to buf an RTM_GETLINK for the link called name.
func getLinkRequest(buf []byte, seq uint32, name string) []byte {
	m := nlraw.NewMsg(buf)
	m.Begin(unix.RTM_GETLINK, unix.NLM_F_ACK, seq)
	m.IfInfomsg(0, 0, 0)
	m.AttrString(unix.IFLA_IFNAME, name)
	return m.Bytes()
}

// setAddrGenMode sets on c the IPv6 address generation mode of the link
// index. vishvananda/netlink's LinkSetIP6AddrGenMode would open a socket
// of its own.
func setAddrGenMode(c *nlraw.Conn, index int, mode uint8) error {
	var buf [64]byte
	return c.Request(addrGenModeRequest(buf[:0], c.Seq(), index, mode), nil)
}

// addrGenModeRequest appends to buf an RTM_SETLINK of the link index with
// IFLA_AF_SPEC {AF_INET6 {IFLA_INET6_ADDR_GEN_MODE mode}}.
func addrGenModeRequest(buf []byte, seq uint32, index int, mode uint8) []byte {
	m := nlraw.NewMsg(buf)
	m.Begin(unix.RTM_SETLINK, unix.NLM_F_ACK, seq)
	m.IfInfomsg(int32(index), 0, 0)
	af := m.Nest(unix.IFLA_AF_SPEC)
	in6 := m.Nest(unix.AF_INET6)
	m.Attr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{mode})
	m.EndNest(in6)
	m.EndNest(af)
	return m.Bytes()
}

package link

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// This file speaks rtnetlink directly for the veth pair of an attachment.
// vishvananda/netlink's LinkAdd opens a socket per request, looks the new
// link up by name to learn its index (RTM_GETLINK) and sets the master in a
// separate RTM_SETLINK, each with its own notifications: on a busy node that
// was ~8% of the plugin's CPU. Here one RTM_NEWLINK creates the pair with
// everything the kernel takes at creation, and its echo carries the index.

// in6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE (include/uapi/linux/if_link.h):
// the kernel forms no IPv6 link-local address on the link.
const in6AddrGenModeNone = 1

// rtnlRecvBufSize bounds one datagram from the kernel: an RTM_NEWLINK of a
// veth is ~1.5 KiB (6.18), an ack a few dozen bytes. A truncated datagram
// is skipped (see do), so a larger one would cost the echo, not correctness.
const rtnlRecvBufSize = 32 << 10

// rtnlConn is a NETLINK_ROUTE socket for a few requests in a row, each
// answered in full before the next goes out, in the network namespace of
// the thread that opened it. Not safe for concurrent use.
type rtnlConn struct {
	fd  int
	buf []byte
}

// openRtnl opens a NETLINK_ROUTE socket in the calling thread's network
// namespace. It is not bound: the kernel binds it to a free port id at the
// first send, which spares a bind(2).
func openRtnl() (*rtnlConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	// Best effort, kernels before 4.12 lack the first: the kernel's own
	// reason with an error ("extended ack"), and errors that do not copy the
	// whole request back.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &rtnlConn{fd: fd, buf: make([]byte, rtnlRecvBufSize)}, nil
}

func (c *rtnlConn) close() { _ = unix.Close(c.fd) }

// rtnlError is the error the kernel answered a request with. It unwraps to
// the errno, so errors.Is(err, unix.EEXIST) holds for an existing link.
type rtnlError struct {
	Errno unix.Errno
	Msg   string // the kernel's extended ack message, if it gave one
}

func (e *rtnlError) Error() string {
	if e.Msg == "" {
		return e.Errno.Error()
	}
	return e.Errno.Error() + ": " + e.Msg
}

func (e *rtnlError) Unwrap() error { return e.Errno }

// do sends req with NLM_F_ACK and reads the kernel's answers up to the ack,
// so an error that follows an echo (IFLA_MASTER is applied after the echo of
// a new link is sent) is never missed. Other answers to req (an echo, the
// reply to a get) go to f when it is not nil. A kernel error is returned as
// a *rtnlError; any other error means the answer was lost.
//
// The socket is blocking and has no timeout: the kernel handles a request
// to NETLINK_ROUTE synchronously in sendto(2) and queues every answer before
// it returns; if the queue overflowed instead, recvmsg(2) fails (ENOBUFS).
// Without a timeout the calls are also restarted after a signal (SA_RESTART);
// EINTR is retried anyway.
func (c *rtnlConn) do(req *nl.NetlinkRequest, f func(typ uint16, data []byte)) error {
	req.Flags |= unix.NLM_F_ACK
	b := req.Serialize()
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	for {
		err := unix.Sendto(c.fd, b, 0, kernel)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return fmt.Errorf("send rtnetlink request: %w", err)
		}
	}
	for {
		n, _, rflags, from, err := unix.Recvmsg(c.fd, c.buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("receive rtnetlink answer: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		if rflags&unix.MSG_TRUNC != 0 {
			// Only a link message can be this large, never an ack: lose
			// it and go on to the ack (newVeth then looks the index up).
			continue
		}
		msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return fmt.Errorf("parse rtnetlink answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq {
				continue // a late answer to an earlier request
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				return ackError(m)
			case unix.NLMSG_NOOP, unix.NLMSG_DONE:
			default:
				if f != nil {
					f(m.Header.Type, m.Data)
				}
			}
		}
	}
}

// ackError decodes an NLMSG_ERROR: nil for an ack, else a *rtnlError with
// the kernel's message, which follows the request it copies back (only its
// header with NLM_F_CAPPED).
func ackError(m syscall.NetlinkMessage) error {
	native := nl.NativeEndian()
	if len(m.Data) < 4 {
		return errors.New("truncated rtnetlink error message")
	}
	errno := -int32(native.Uint32(m.Data))
	if errno == 0 {
		return nil
	}
	e := &rtnlError{Errno: unix.Errno(errno)}
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(m.Data) < 4+unix.SizeofNlMsghdr {
		return e
	}
	skip := 4 + unix.SizeofNlMsghdr
	if m.Header.Flags&unix.NLM_F_CAPPED == 0 {
		skip = 4 + nlmAlign(int(native.Uint32(m.Data[4:])))
	}
	if skip <= len(m.Data) {
		walkAttrs(m.Data[skip:], func(typ uint16, v []byte) bool {
			if typ == unix.NLMSGERR_ATTR_MSG {
				e.Msg = unix.ByteSliceToString(v)
				return false
			}
			return true
		})
	}
	return e
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// walkAttrs calls f for each attribute of b, in order, until f returns
// false. Nested attributes are left to f. It allocates nothing, unlike
// nl.ParseRouteAttr, which copies the ~40 attributes of a link message.
func walkAttrs(b []byte, f func(typ uint16, value []byte) bool) {
	native := nl.NativeEndian()
	for len(b) >= unix.SizeofRtAttr {
		l := int(native.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		if !f(native.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofRtAttr:l]) {
			return
		}
		b = b[min(rtaAlign(l), len(b)):]
	}
}

// linkMsg is what this package reads of an RTM_NEWLINK or RTM_DELLINK
// payload.
type linkMsg struct {
	index     int
	name      string
	peer      int   // IFLA_LINK: for a veth end, its peer's index in the peer's namespace
	operState uint8 // IFLA_OPERSTATE; IF_OPER_UNKNOWN (0) without it
}

// parseLinkMsg reads the ifinfomsg and the attributes of linkMsg from an
// RTM_NEWLINK or RTM_DELLINK payload, in one walk; a truncated attribute
// is not read past. ok is false when the payload is too short for an
// ifinfomsg.
func parseLinkMsg(data []byte) (m linkMsg, ok bool) {
	if len(data) < unix.SizeofIfInfomsg {
		return m, false
	}
	native := nl.NativeEndian()
	m.index = int(int32(native.Uint32(data[4:8]))) // ifinfomsg.ifi_index
	walkAttrs(data[unix.SizeofIfInfomsg:], func(typ uint16, v []byte) bool {
		switch {
		case typ == unix.IFLA_IFNAME:
			m.name = unix.ByteSliceToString(v)
		case typ == unix.IFLA_LINK && len(v) >= 4:
			m.peer = int(int32(native.Uint32(v[:4])))
		case typ == unix.IFLA_OPERSTATE && len(v) > 0:
			m.operState = v[0]
		}
		return true
	})
	return m, true
}

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
func vethRequest(spec VethSpec, echo bool) *nl.NetlinkRequest {
	flags := unix.NLM_F_CREATE | unix.NLM_F_EXCL | unix.NLM_F_ACK
	if echo {
		flags |= unix.NLM_F_ECHO
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, flags)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags = unix.IFF_UP
	msg.Change = unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(spec.HostName)))
	if spec.HostMAC != nil {
		req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, spec.HostMAC))
	}
	if spec.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(spec.MTU))))
	}
	if spec.BridgeIndex > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(spec.BridgeIndex))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(spec.ContainerName))
	if spec.ContainerMAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, spec.ContainerMAC)
	}
	if spec.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(spec.MTU)))
	}
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(spec.NetNSFd)))
	req.AddData(info)
	return req
}

// newVeth creates the pair of spec (see vethRequest) and returns the host
// end's index and its peer's (the container end's, in its namespace), 0
// when the kernel sent no echo (before 6.2). On a kernel error nothing was
// created, or the kernel removed it again.
func (c *rtnlConn) newVeth(spec VethSpec, echo bool) (index, peer int, err error) {
	err = c.do(vethRequest(spec, echo), func(typ uint16, data []byte) {
		if typ != unix.RTM_NEWLINK {
			return
		}
		if m, ok := parseLinkMsg(data); ok && m.index > 0 && m.name == spec.HostName {
			index, peer = m.index, m.peer
		}
	})
	if err != nil {
		return 0, 0, err
	}
	return index, peer, nil
}

// linkIndex looks up the index of the link called name (RTM_GETLINK), and
// its IFLA_LINK (a veth's peer).
func (c *rtnlConn) linkIndex(name string) (index, peer int, err error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, 0)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	err = c.do(req, func(typ uint16, data []byte) {
		if typ != unix.RTM_NEWLINK {
			return
		}
		if m, ok := parseLinkMsg(data); ok && m.index > 0 && m.name == name {
			index, peer = m.index, m.peer
		}
	})
	if err == nil && index == 0 {
		err = fmt.Errorf("no link %s in the kernel's answer", name)
	}
	return index, peer, err
}

// setAddrGenMode sets the IPv6 address generation mode of the link index
// (RTM_SETLINK with IFLA_AF_SPEC {AF_INET6 {IFLA_INET6_ADDR_GEN_MODE}}).
func (c *rtnlConn) setAddrGenMode(index int, mode uint8) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, 0)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	af := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	af.AddRtAttr(unix.AF_INET6, nil).AddRtAttr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{mode})
	req.AddData(af)
	return c.do(req, nil)
}

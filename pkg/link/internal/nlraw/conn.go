// Package nlraw is pkg/link's own rtnetlink layer, for the few messages
// vishvananda/netlink cannot send, or sends at a cost measured on the ADD
// path of a plugin exec'd per container (see the comments where pkg/link
// uses it): a socket (Conn), one request/ack exchange (Conn.Do), one
// message builder (Msg) and the decoders of what the kernel answers
// (Messages, AckError, WalkAttrs, ParseLinkMsg). It knows no policy: what
// to ask and what an answer means stays in pkg/link.
//
// Decoders never panic on what the kernel (or anyone) sends: lengths that
// do not fit end the walk.
package nlraw

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DefaultRecvBuf bounds one datagram from the kernel: an RTM_NEWLINK of a
// veth is ~1.5 KiB (6.18), an ack a few dozen bytes. A larger datagram is
// truncated: Do skips it (it can only be a link message, never an ack),
// which costs the echo of a new link, not correctness.
const DefaultRecvBuf = 32 << 10

// Options of Open.
type Options struct {
	// Groups are the multicast groups (RTMGRP_* bits) to subscribe to.
	// Without, the socket is not bound: the kernel binds it to a free
	// port ID at the first send, which spares a bind(2).
	Groups uint32
	// ExtAck asks for the kernel's own reason with an error
	// (NETLINK_EXT_ACK) and for errors that copy back only the header of
	// the request (NETLINK_CAP_ACK); best effort, kernels before 4.12
	// lack the first. Two setsockopt(2) calls: only for requests whose
	// errors a user may read.
	ExtAck bool
	// Buf is the receive buffer; nil: a new one of DefaultRecvBuf bytes.
	// An exchange that only expects acks needs a few hundred bytes.
	Buf []byte
}

// Conn is a NETLINK_ROUTE socket in the network namespace of the thread
// that opened it, where it stays. Not safe for concurrent use.
type Conn struct {
	fd  int
	seq uint32
	buf []byte
}

// Open opens a NETLINK_ROUTE socket in the calling thread's network
// namespace.
func Open(o Options) (*Conn, error) {
	c := new(Conn)
	if err := c.Init(o); err != nil {
		return nil, err
	}
	return c, nil
}

// Init is Open for a zero Conn that is part of the caller's own struct or
// on its stack, which spares an allocation (Conn's methods keep no
// reference to it).
func (c *Conn) Init(o Options) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink socket: %w", err)
	}
	if o.Groups != 0 {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: o.Groups}); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("subscribe to rtnetlink groups %#x: %w", o.Groups, err)
		}
	}
	if o.ExtAck {
		_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
		_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	}
	if o.Buf == nil {
		o.Buf = make([]byte, DefaultRecvBuf)
	}
	*c = Conn{fd: fd, buf: o.Buf}
	return nil
}

// Close closes the socket. It may be called more than once.
func (c *Conn) Close() {
	if c.fd >= 0 {
		_ = unix.Close(c.fd)
		c.fd = -1
	}
}

// Fd is the socket's file descriptor (for poll(2)); -1 once closed.
func (c *Conn) Fd() int { return c.fd }

// Seq returns a sequence number for the next request, distinct from the
// conn's earlier ones, so late answers to those are told apart.
func (c *Conn) Seq() uint32 {
	c.seq++
	return c.seq
}

// Send sends b to the kernel as one datagram, retrying after a signal. No
// address is given: a netlink socket sends to the kernel (port ID 0) by
// default, as iproute2's rtnl_send does, and an address would have to be
// allocated (unix.Sockaddr is an interface).
func (c *Conn) Send(b []byte) error {
	for {
		err := unix.Sendto(c.fd, b, 0, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// Recv reads the next datagram from the kernel into the conn's buffer,
// skipping any other sender's and retrying after a signal; flags are
// recvfrom(2)'s (MSG_DONTWAIT). truncated is true when the datagram was
// larger than the buffer: data then ends in a cut message. data is valid
// until the next Recv.
func (c *Conn) Recv(flags int) (data []byte, truncated bool, err error) {
	for {
		// With MSG_TRUNC netlink returns the datagram's whole length,
		// which tells a truncated one.
		n, from, err := unix.Recvfrom(c.fd, c.buf, flags|unix.MSG_TRUNC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		if n > len(c.buf) {
			return c.buf, true, nil
		}
		return c.buf[:n], false, nil
	}
}

// Do sends req, one or more requests built by Msg, each with NLM_F_ACK and
// with consecutive sequence numbers, in one datagram, and reads the
// answers until every request is acknowledged, so an error that follows
// an echo (IFLA_MASTER is applied after the echo of a new link is sent) is
// never missed. ack(i, err) is called with the kernel's answer to request
// i (0 the first): nil for success, an *Error for the kernel's error (an
// error of AckError's own for an ack too short to read); the other answers
// to request i (an echo, the reply to a get) go to f. Either may be nil.
// Answers to earlier requests on the conn are skipped.
//
// The error Do returns means answers were lost. The reads do not wait:
// rtnetlink handles the requests in sendto(2) itself and has queued every
// answer before it returns, so a missing one is an error, not a hang (if
// the socket's queue overflowed, recvmsg(2) fails with ENOBUFS). Not for
// dumps, which the kernel continues as they are read.
func (c *Conn) Do(req []byte, ack func(i int, err error), f func(i int, typ uint16, data []byte)) error {
	var first uint32
	n := 0
	valid := Messages(req, func(h unix.NlMsghdr, _ []byte) bool {
		if n == 0 {
			first = h.Seq
		}
		if h.Flags&unix.NLM_F_ACK == 0 || h.Seq != first+uint32(n) {
			n = -1
			return false
		}
		n++
		return true
	})
	if !valid || n <= 0 {
		return errors.New("netlink request: not one or more messages with NLM_F_ACK and consecutive sequence numbers")
	}
	if err := c.Send(req); err != nil {
		return fmt.Errorf("send rtnetlink request: %w", err)
	}
	for acked := 0; acked < n; {
		data, truncated, err := c.Recv(unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return fmt.Errorf("receive rtnetlink answer: %d of %d acknowledgements missing", n-acked, n)
		}
		if err != nil {
			return fmt.Errorf("receive rtnetlink answer: %w", err)
		}
		if truncated {
			continue // only a link message can be this large, never an ack
		}
		valid := Messages(data, func(h unix.NlMsghdr, data []byte) bool {
			i := int(h.Seq - first)
			if h.Seq-first >= uint32(n) {
				return true // a late answer to an earlier request
			}
			switch h.Type {
			case unix.NLMSG_ERROR:
				acked++
				if ack != nil {
					ack(i, AckError(h, data))
				}
			case unix.NLMSG_NOOP, unix.NLMSG_DONE:
			default:
				if f != nil {
					f(i, h.Type, data)
				}
			}
			return true
		})
		if !valid {
			return errors.New("receive rtnetlink answer: malformed message")
		}
	}
	return nil
}

// Request is Do for one request, whose answers other than the ack go to f
// (may be nil). It returns the kernel's error (an *Error) or the reason
// the answer was lost.
func (c *Conn) Request(req []byte, f func(typ uint16, data []byte)) error {
	var kerr error
	err := c.Do(req, func(_ int, err error) { kerr = err }, func(_ int, typ uint16, data []byte) {
		if f != nil {
			f(typ, data)
		}
	})
	if err != nil {
		return err
	}
	return kerr
}

package nlraw

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Messages calls f for each message of the datagram b, in order, until f
// returns false. ok is false when it met a message whose length is not
// that of a message within b (a truncated datagram, or not netlink): that
// message and what follows are not read.
func Messages(b []byte, f func(h unix.NlMsghdr, data []byte) bool) (ok bool) {
	for len(b) >= unix.SizeofNlMsghdr {
		h := unix.NlMsghdr{
			Len:   native.Uint32(b[0:]),
			Type:  native.Uint16(b[4:]),
			Flags: native.Uint16(b[6:]),
			Seq:   native.Uint32(b[8:]),
			Pid:   native.Uint32(b[12:]),
		}
		if h.Len < unix.SizeofNlMsghdr || int(h.Len) > len(b) {
			return false
		}
		if !f(h, b[unix.SizeofNlMsghdr:h.Len]) {
			return true
		}
		b = b[min(Align(int(h.Len)), len(b)):]
	}
	return len(b) == 0
}

// Error is the error the kernel answered a request with. It unwraps to the
// errno, so errors.Is(err, unix.EEXIST) holds for an existing link.
type Error struct {
	Errno unix.Errno
	Msg   string // the kernel's extended ack message, if it gave one
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return e.Errno.Error()
	}
	return e.Errno.Error() + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Errno }

// errTruncatedAck is returned for an NLMSG_ERROR too short for its errno.
var errTruncatedAck = errors.New("truncated netlink error message")

// AckError decodes the payload of an NLMSG_ERROR with header h: nil for an
// ack, else an *Error with the kernel's message (NLMSGERR_ATTR_MSG), which
// follows the request it copies back (only the request's header with
// NLM_F_CAPPED). A payload too short for the errno is an error of its
// own, not an *Error; a copied-back request or attributes that do not fit
// are not read.
func AckError(h unix.NlMsghdr, data []byte) error {
	if len(data) < 4 {
		return errTruncatedAck
	}
	errno := -int32(native.Uint32(data))
	if errno == 0 {
		return nil
	}
	e := &Error{Errno: unix.Errno(errno)}
	if h.Flags&unix.NLM_F_ACK_TLVS == 0 || len(data) < 4+unix.SizeofNlMsghdr {
		return e
	}
	skip := 4 + unix.SizeofNlMsghdr
	if h.Flags&unix.NLM_F_CAPPED == 0 {
		skip = 4 + Align(int(native.Uint32(data[4:])))
	}
	if skip >= 4+unix.SizeofNlMsghdr && skip <= len(data) {
		WalkAttrs(data[skip:], func(typ uint16, v []byte) bool {
			if typ == unix.NLMSGERR_ATTR_MSG {
				e.Msg = unix.ByteSliceToString(v)
				return false
			}
			return true
		})
	}
	return e
}

// WalkAttrs calls f for each attribute of b, in order, until f returns
// false; the type has the nested and byte-order flags cleared. Nested
// attributes are left to f. An attribute whose length does not fit ends
// the walk. It allocates nothing, unlike nl.ParseRouteAttr, which copies
// the ~40 attributes of a link message.
func WalkAttrs(b []byte, f func(typ uint16, value []byte) bool) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(native.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		if !f(native.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofRtAttr:l]) {
			return
		}
		b = b[min(Align(l), len(b)):]
	}
}

// LinkMsg is what pkg/link reads of an RTM_NEWLINK or RTM_DELLINK payload.
type LinkMsg struct {
	Index     int
	Name      string
	Peer      int   // IFLA_LINK: for a veth end, its peer's index in the peer's namespace
	OperState uint8 // IFLA_OPERSTATE; IF_OPER_UNKNOWN (0) without it
}

// ParseLinkMsg reads the ifinfomsg and the attributes of LinkMsg from an
// RTM_NEWLINK or RTM_DELLINK payload, in one walk; a truncated attribute
// is not read past. ok is false when the payload is too short for an
// ifinfomsg.
func ParseLinkMsg(data []byte) (m LinkMsg, ok bool) {
	if len(data) < unix.SizeofIfInfomsg {
		return m, false
	}
	m.Index = int(int32(native.Uint32(data[4:8]))) // ifinfomsg.ifi_index
	WalkAttrs(data[unix.SizeofIfInfomsg:], func(typ uint16, v []byte) bool {
		switch {
		case typ == unix.IFLA_IFNAME:
			m.Name = unix.ByteSliceToString(v)
		case typ == unix.IFLA_LINK && len(v) >= 4:
			m.Peer = int(int32(native.Uint32(v[:4])))
		case typ == unix.IFLA_OPERSTATE && len(v) > 0:
			m.OperState = v[0]
		}
		return true
	})
	return m, true
}

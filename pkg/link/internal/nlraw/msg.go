package nlraw

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

var native = binary.NativeEndian

// Align rounds n up to the netlink alignment, which is the same for
// messages (NLMSG_ALIGNTO) and attributes (RTA_ALIGNTO): 4 bytes.
func Align(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// Msg appends netlink requests to a buffer: one or more messages, sent as
// one datagram. Start each message with Begin, then its fixed header
// (IfInfomsg, Fixed) and its attributes; Bytes returns the datagram.
// Lengths are filled in as the message grows, so nothing is built twice
// and nothing is allocated beyond the buffer.
type Msg struct {
	b     []byte
	start int // offset of the message being built
}

// NewMsg returns a Msg that appends to buf (which may be a caller's
// array, buf[:0], to build without allocating).
func NewMsg(buf []byte) Msg { return Msg{b: buf, start: len(buf)} }

// Begin starts a message of type typ with NLM_F_REQUEST|flags and sequence
// number seq. The kernel fills in the port ID.
func (m *Msg) Begin(typ, flags uint16, seq uint32) {
	m.end()
	m.start = len(m.b)
	m.b = native.AppendUint32(m.b, unix.SizeofNlMsghdr)
	m.b = native.AppendUint16(m.b, typ)
	m.b = native.AppendUint16(m.b, unix.NLM_F_REQUEST|flags)
	m.b = native.AppendUint32(m.b, seq)
	m.b = native.AppendUint32(m.b, 0)
}

// end sets the length of the message being built.
func (m *Msg) end() {
	if len(m.b)-m.start >= unix.SizeofNlMsghdr {
		native.PutUint32(m.b[m.start:], uint32(len(m.b)-m.start))
	}
}

// Bytes returns the buffer with every message begun so far, complete.
func (m *Msg) Bytes() []byte {
	m.end()
	return m.b
}

// Fixed appends a message's fixed header (struct ndmsg, ...), padded.
func (m *Msg) Fixed(p []byte) {
	m.b = append(m.b, p...)
	m.pad()
}

// IfInfomsg appends a struct ifinfomsg of family AF_UNSPEC: the fixed
// header of a link message, and of a veth peer's VETH_INFO_PEER.
func (m *Msg) IfInfomsg(index int32, flags, change uint32) {
	m.b = append(m.b, unix.AF_UNSPEC, 0, 0, 0) // family, pad, type
	m.b = native.AppendUint32(m.b, uint32(index))
	m.b = native.AppendUint32(m.b, flags)
	m.b = native.AppendUint32(m.b, change)
}

// Attr appends the attribute typ with value v, padded.
func (m *Msg) Attr(typ uint16, v []byte) {
	m.b = native.AppendUint16(m.b, uint16(unix.SizeofRtAttr+len(v)))
	m.b = native.AppendUint16(m.b, typ)
	m.b = append(m.b, v...)
	m.pad()
}

// AttrUint32 appends the attribute typ holding v in host byte order.
func (m *Msg) AttrUint32(typ uint16, v uint32) {
	m.b = native.AppendUint16(m.b, unix.SizeofRtAttr+4)
	m.b = native.AppendUint16(m.b, typ)
	m.b = native.AppendUint32(m.b, v)
}

// AttrString appends the attribute typ holding s and a terminating NUL
// (IFLA_IFNAME); a kind (IFLA_INFO_KIND) is Attr without one.
func (m *Msg) AttrString(typ uint16, s string) {
	m.b = native.AppendUint16(m.b, uint16(unix.SizeofRtAttr+len(s)+1))
	m.b = native.AppendUint16(m.b, typ)
	m.b = append(m.b, s...)
	m.b = append(m.b, 0)
	m.pad()
}

// Nest starts the nested attribute typ; what is appended until EndNest(at)
// is its value.
func (m *Msg) Nest(typ uint16) (at int) {
	at = len(m.b)
	m.b = native.AppendUint16(m.b, 0)
	m.b = native.AppendUint16(m.b, typ)
	return at
}

// EndNest sets the length of the nested attribute Nest started at at.
func (m *Msg) EndNest(at int) {
	native.PutUint16(m.b[at:], uint16(len(m.b)-at))
}

// pad aligns the end of the message being built.
func (m *Msg) pad() {
	for (len(m.b)-m.start)%unix.NLMSG_ALIGNTO != 0 {
		m.b = append(m.b, 0)
	}
}

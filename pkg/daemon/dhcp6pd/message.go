package dhcp6pd

// The wire codec: PD-only client messages out, Advertise/Reply in. Pure
// functions of their arguments, no I/O and no clock, so the state machine and
// the fuzz target can use them freely.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Infinity is the lifetime (or T1/T2) a server sends as 0xffffffff: it never
// runs out.
const Infinity = time.Duration(math.MaxInt64)

// infinitySeconds is the wire value of an infinite lifetime (RFC 8415 §7.7).
const infinitySeconds = 0xffffffff

// Option codes the library names differently or not at all.
const (
	optSolMaxRT = dhcpv6.OptionCode(82) // RFC 8415 §21.24
)

// Status is a DHCPv6 status code (RFC 8415 §21.13).
type Status uint16

// The status codes a PD client meets.
const (
	StatusSuccess       Status = 0
	StatusUnspecFail    Status = 1
	StatusNoAddrsAvail  Status = 2
	StatusNoBinding     Status = 3
	StatusNotOnLink     Status = 4
	StatusUseMulticast  Status = 5
	StatusNoPrefixAvail Status = 6
)

func (s Status) String() string {
	switch s {
	case StatusSuccess:
		return "Success"
	case StatusUnspecFail:
		return "UnspecFail"
	case StatusNoAddrsAvail:
		return "NoAddrsAvail"
	case StatusNoBinding:
		return "NoBinding"
	case StatusNotOnLink:
		return "NotOnLink"
	case StatusUseMulticast:
		return "UseMulticast"
	case StatusNoPrefixAvail:
		return "NoPrefixAvail"
	}
	return fmt.Sprintf("Status(%d)", uint16(s))
}

// outMsg is a client message to encode. One IA_PD per message.
type outMsg struct {
	typ         dhcpv6.MessageType
	xid         [3]byte
	clientID    DUID
	serverID    DUID // Request, Renew, Release only
	elapsed     time.Duration
	iaid        uint32
	hints       []netip.Prefix // exact prefixes, or ::/N as a length hint
	rapidCommit bool           // Solicit only
}

// encode builds the wire form of m.
func (m outMsg) encode() []byte {
	msg := &dhcpv6.Message{MessageType: m.typ, TransactionID: dhcpv6.TransactionID(m.xid)}
	msg.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientID, OptionData: m.clientID})
	if len(m.serverID) > 0 && (m.typ == dhcpv6.MessageTypeRequest || m.typ == dhcpv6.MessageTypeRenew || m.typ == dhcpv6.MessageTypeRelease) {
		msg.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: m.serverID})
	}
	msg.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionElapsedTime, OptionData: elapsedBytes(m.elapsed)})
	if m.typ != dhcpv6.MessageTypeRelease {
		// RFC 8415 §18.2.1: a Solicit asks for SOL_MAX_RT.
		msg.Options.Add(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, optSolMaxRT))
	}
	ia := &dhcpv6.OptIAPD{}
	binary.BigEndian.PutUint32(ia.IaId[:], m.iaid)
	for _, h := range m.hints {
		ia.Options.Add(&dhcpv6.OptIAPrefix{Prefix: prefixToIPNet(h)})
	}
	msg.Options.Add(ia)
	if m.rapidCommit && m.typ == dhcpv6.MessageTypeSolicit {
		msg.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	}
	return msg.ToBytes()
}

// elapsedBytes encodes an Elapsed Time option: hundredths of a second,
// 0xffff at most (RFC 8415 §21.9).
func elapsedBytes(d time.Duration) []byte {
	cs := d / (10 * time.Millisecond)
	if cs < 0 {
		cs = 0
	}
	if cs > 0xffff {
		cs = 0xffff
	}
	return binary.BigEndian.AppendUint16(nil, uint16(cs))
}

// inMsg is a decoded Advertise or Reply.
type inMsg struct {
	typ         dhcpv6.MessageType
	xid         [3]byte
	clientID    DUID
	serverID    DUID
	preference  uint8
	rapidCommit bool
	status      Status // message level; Success when absent
	statusMsg   string
	solMaxRT    time.Duration // 0 when absent or out of range
	dns         []netip.Addr
	ias         []inIA
}

// inIA is one IA_PD of a server message.
type inIA struct {
	iaid      uint32
	t1, t2    time.Duration // Infinity for 0xffffffff
	status    Status        // Success when absent
	statusMsg string
	prefixes  []Prefix // masked; Updated is left zero
}

// ia returns the IA_PD with iaid, or nil.
func (m *inMsg) ia(iaid uint32) *inIA {
	for i := range m.ias {
		if m.ias[i].iaid == iaid {
			return &m.ias[i]
		}
	}
	return nil
}

var errNotServerMsg = errors.New("not an Advertise or Reply")

// decodeServerMsg decodes an Advertise or Reply. It rejects what RFC 8415
// §16 says a client discards: another message type, no Server ID, no Client
// ID. Options it does not use are kept opaque, so a malformed option the
// client never reads does not lose the message. Prefixes are masked; a prefix
// whose preferred lifetime exceeds its valid lifetime, or of length 0, is
// dropped (§21.22); an IA_PD with 0 < T2 < T1 is dropped (§21.21).
func decodeServerMsg(b []byte) (*inMsg, error) {
	if len(b) < 4 {
		return nil, errors.New("short DHCPv6 message")
	}
	typ := dhcpv6.MessageType(b[0])
	if typ != dhcpv6.MessageTypeAdvertise && typ != dhcpv6.MessageTypeReply {
		return nil, fmt.Errorf("%w: %s", errNotServerMsg, typ)
	}
	var opts dhcpv6.Options
	if err := opts.FromBytesWithParser(b[4:], parseTopOption); err != nil {
		return nil, fmt.Errorf("decode %s options: %w", typ, err)
	}
	m := &inMsg{typ: typ, status: StatusSuccess}
	copy(m.xid[:], b[1:4])
	for _, o := range opts {
		switch o.Code() {
		case dhcpv6.OptionClientID:
			if m.clientID == nil {
				m.clientID = DUID(o.ToBytes())
			}
		case dhcpv6.OptionServerID:
			if m.serverID == nil {
				m.serverID = DUID(o.ToBytes())
			}
		case dhcpv6.OptionPreference:
			if d := o.ToBytes(); len(d) == 1 {
				m.preference = d[0]
			}
		case dhcpv6.OptionRapidCommit:
			m.rapidCommit = true
		case dhcpv6.OptionStatusCode:
			if sc, ok := o.(*dhcpv6.OptStatusCode); ok {
				m.status, m.statusMsg = Status(sc.StatusCode), sc.StatusMessage
			}
		case optSolMaxRT:
			if d := o.ToBytes(); len(d) == 4 {
				if s := binary.BigEndian.Uint32(d); s >= 60 && s <= 86400 { // §21.24
					m.solMaxRT = time.Duration(s) * time.Second
				}
			}
		case dhcpv6.OptionDNSRecursiveNameServer:
			d := o.ToBytes()
			for i := 0; i+16 <= len(d); i += 16 {
				m.dns = append(m.dns, netip.AddrFrom16([16]byte(d[i:i+16])))
			}
		case dhcpv6.OptionIAPD:
			if ia, ok := o.(*dhcpv6.OptIAPD); ok {
				if in, ok := decodeIA(ia); ok {
					m.ias = append(m.ias, in)
				}
			}
		}
	}
	if len(m.serverID) == 0 {
		return nil, fmt.Errorf("%s without Server ID", typ)
	}
	if len(m.clientID) == 0 {
		return nil, fmt.Errorf("%s without Client ID", typ)
	}
	return m, nil
}

// parseTopOption parses the options the client reads and keeps every other
// one as raw bytes.
func parseTopOption(code dhcpv6.OptionCode, data []byte) (dhcpv6.Option, error) {
	switch code {
	case dhcpv6.OptionIAPD, dhcpv6.OptionStatusCode:
		return dhcpv6.ParseOption(code, data)
	}
	return &dhcpv6.OptionGeneric{OptionCode: code, OptionData: append([]byte(nil), data...)}, nil
}

func decodeIA(ia *dhcpv6.OptIAPD) (inIA, bool) {
	in := inIA{
		iaid:   binary.BigEndian.Uint32(ia.IaId[:]),
		t1:     wireDuration(ia.T1),
		t2:     wireDuration(ia.T2),
		status: StatusSuccess,
	}
	if in.t1 > 0 && in.t2 > 0 && in.t1 > in.t2 {
		return in, false
	}
	if sc := ia.Options.Status(); sc != nil {
		in.status, in.statusMsg = Status(sc.StatusCode), sc.StatusMessage
	}
	for _, p := range ia.Options.Prefixes() {
		if p.Prefix == nil {
			continue
		}
		ones, bits := p.Prefix.Mask.Size()
		ip, ok := netip.AddrFromSlice(p.Prefix.IP)
		if !ok || bits != 128 || ones == 0 || !ip.Is6() || ip.Is4In6() {
			continue
		}
		pref, valid := wireDuration(p.PreferredLifetime), wireDuration(p.ValidLifetime)
		if pref > valid {
			continue
		}
		in.prefixes = append(in.prefixes, Prefix{
			Prefix:    netip.PrefixFrom(ip, ones).Masked(),
			Preferred: pref,
			Valid:     valid,
		})
	}
	return in, true
}

// wireDuration maps the library's seconds to a Duration, 0xffffffff to
// Infinity.
func wireDuration(d time.Duration) time.Duration {
	if d >= infinitySeconds*time.Second {
		return Infinity
	}
	return d
}

// prefixToIPNet turns a prefix hint into the library's form.
func prefixToIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().As16()
	return &net.IPNet{IP: a[:], Mask: net.CIDRMask(p.Bits(), 128)}
}

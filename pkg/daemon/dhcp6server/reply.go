// Package dhcp6server is a DHCPv6 server for one interface (a bridge facing
// containers), on insomniacslk/dhcp's server6. It serves what IPAM already
// decided and never invents an address:
//
//   - Information-Request (stateless, RA O=1): the DNS servers and the
//     domain search list.
//   - Solicit, Request, Renew, Rebind, Release, Decline, Confirm (stateful,
//     RA M=1): the addresses Config.Lookup returns for the client's
//     link-layer address (one; two while a renumbering overlaps, the old
//     one deprecated), each with its lifetimes, in one IA_NA; rapid commit
//     when enabled and asked for. A client Lookup does not know gets
//     NoAddrsAvail.
//
// A client is identified by what the kernel says about the frame that
// carried its message (Origin: the Ethernet source and the bridge port it
// came in on), never by its DUID: a DUID is whatever the client chooses to
// write, so binding by it would let a container claim its neighbour's
// address by sending the neighbour's DUID-LL.
//
// Building replies (Respond) is pure and tested without sockets; Server
// puts it on a socket.
package dhcp6server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// Default address lifetimes.
const (
	DefaultPreferred = time.Hour
	DefaultValid     = 2 * time.Hour
)

// MaxLimitedT1 caps T1 (and T2 at 1.6 × it, the ratio of 0.5 and 0.8) of
// an IA holding a lease with its own valid lifetime: an address of a
// delegated prefix, which can be renumbered. The client asks again within
// it and so learns the successor address soon after a renumbering.
const MaxLimitedT1 = 30 * time.Second

// Lease is one address Lookup hands to a client, and its lifetimes.
type Lease struct {
	Addr netip.Addr
	// Preferred and Valid lifetimes: 0 means Config.Preferred and
	// Config.Valid (a Preferred left 0 is also capped to Valid). A Valid
	// of its own marks a lease whose lifetime runs out (a delegated
	// prefix's): the IA's T1 is then at most MaxLimitedT1.
	Preferred, Valid time.Duration
	// Deprecated hands the address out with preferred lifetime 0 (0 in
	// Preferred means the default): the old address of a renumbering,
	// kept valid while the client moves to the new one.
	Deprecated bool
}

// Config is what one interface serves.
type Config struct {
	// Interface is the name of the interface (the bridge) to serve.
	Interface string
	// DNS servers (OPTION_DNS_SERVERS); IPv4 entries are skipped.
	DNS []netip.Addr
	// Search is the domain search list (OPTION_DOMAIN_LIST).
	Search []string
	// Preferred and Valid lifetimes of the addresses whose Lease leaves
	// them 0; 0 means DefaultPreferred, DefaultValid. T1 and T2 are 0.5
	// and 0.8 of the shortest preferred lifetime of the IA's
	// non-deprecated leases (see MaxLimitedT1).
	Preferred, Valid time.Duration
	// RapidCommit answers a Solicit that asks for it with a Reply at once.
	RapidCommit bool
	// Lookup returns the addresses IPAM recorded for the attachment
	// behind the port and link-layer source of from (during a
	// renumbering: the old one deprecated and the new one); false or no
	// usable lease means unknown. nil serves Information-Requests only
	// (every address request gets NoAddrsAvail). Called concurrently, for
	// each message: lifetimes are those left at that time.
	Lookup func(from Origin) ([]Lease, bool)
}

// Origin is where a message came from, as the kernel saw it: nothing in it
// is taken from the DHCPv6 payload.
type Origin struct {
	// MAC is the Ethernet source address of the frame.
	MAC net.HardwareAddr
	// Port is the name of the bridge port the frame came in on; "" when
	// unknown (then no address is handed out).
	Port string
	// Addr is the IPv6 source address (the client's link-local).
	Addr netip.Addr
}

func (c Config) withDefaults() (Config, error) {
	if c.Interface == "" {
		return c, errors.New("dhcp6server: interface missing")
	}
	if c.Preferred == 0 {
		c.Preferred = DefaultPreferred
	}
	if c.Valid == 0 {
		c.Valid = max(DefaultValid, c.Preferred)
	}
	if c.Preferred < 0 || c.Valid < c.Preferred {
		return c, fmt.Errorf("dhcp6server: lifetimes preferred %s, valid %s: want 0 < preferred <= valid", c.Preferred, c.Valid)
	}
	var dns []netip.Addr
	for _, a := range c.DNS {
		if a.Is6() && !a.Is4In6() && !slices.Contains(dns, a.WithZone("")) {
			dns = append(dns, a.WithZone(""))
		}
	}
	c.DNS = dns
	return c, nil
}

// ErrDrop is returned by Respond for a message the server must not answer
// (RFC 8415 section 16: wrong or missing Server ID, missing Client ID, a
// message type servers do not take, a Confirm about an unknown client).
var ErrDrop = errors.New("dhcp6server: message dropped")

// Respond builds the answer of a server with DUID serverID and config cfg
// (defaults applied by New) to msg, received from src (the client's
// frame, port and address, see Origin).
func Respond(cfg Config, serverID dhcpv6.DUID, msg *dhcpv6.Message, from Origin) (*dhcpv6.Message, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return respond(c, serverID, msg, from)
}

func respond(c Config, serverID dhcpv6.DUID, msg *dhcpv6.Message, from Origin) (*dhcpv6.Message, error) {
	clientID := msg.Options.ClientID()
	sid := msg.Options.ServerID()
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeConfirm, dhcpv6.MessageTypeRebind:
		// RFC 8415 section 16.2, 16.5, 16.6: no Server ID.
		if clientID == nil || sid != nil {
			return nil, fmt.Errorf("%w: %s with client ID %v, server ID %v", ErrDrop, msg.Type(), clientID, sid)
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		if clientID == nil || sid == nil || !bytes.Equal(sid.ToBytes(), serverID.ToBytes()) {
			return nil, fmt.Errorf("%w: %s with client ID %v, server ID %v (ours %v)", ErrDrop, msg.Type(), clientID, sid, serverID)
		}
	case dhcpv6.MessageTypeInformationRequest:
		if sid != nil && !bytes.Equal(sid.ToBytes(), serverID.ToBytes()) {
			return nil, fmt.Errorf("%w: information-request for server %v", ErrDrop, sid)
		}
		reply := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: msg.TransactionID}
		if clientID != nil {
			reply.AddOption(dhcpv6.OptClientID(clientID))
		}
		reply.AddOption(dhcpv6.OptServerID(serverID))
		addOtherConfig(reply, c)
		return reply, nil
	default:
		return nil, fmt.Errorf("%w: message type %s", ErrDrop, msg.Type())
	}

	var leases []offer
	if len(from.MAC) == 6 && from.Port != "" && c.Lookup != nil {
		if got, ok := c.Lookup(from); ok {
			leases = offers(c, got)
		}
	}
	known := len(leases) > 0

	replyType := dhcpv6.MessageTypeReply
	if msg.Type() == dhcpv6.MessageTypeSolicit {
		replyType = dhcpv6.MessageTypeAdvertise
	}
	reply := &dhcpv6.Message{MessageType: replyType, TransactionID: msg.TransactionID}
	reply.AddOption(dhcpv6.OptClientID(clientID))
	reply.AddOption(dhcpv6.OptServerID(serverID))
	status := func(code iana.StatusCode, text string) *dhcpv6.OptStatusCode {
		return &dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: text}
	}

	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit:
		if !known {
			// RFC 8415 section 18.3.1: only a NoAddrsAvail status.
			reply.AddOption(status(iana.StatusNoAddrsAvail, "no address for this client"))
			return reply, nil
		}
		if c.RapidCommit && msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			reply.MessageType = dhcpv6.MessageTypeReply
			dhcpv6.WithRapidCommit(reply)
		}
		addIAs(reply, msg, leases)
	case dhcpv6.MessageTypeRequest:
		if !known {
			for _, ia := range msg.Options.IANA() {
				reply.AddOption(&dhcpv6.OptIANA{IaId: ia.IaId, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{status(iana.StatusNoAddrsAvail, "no address for this client")}}})
			}
			reply.AddOption(status(iana.StatusNoAddrsAvail, "no address for this client"))
			return reply, nil
		}
		addIAs(reply, msg, leases)
	case dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		if !known {
			// No binding: addresses the client holds are not ours to
			// extend (Rebind: invalid now, lifetimes 0).
			for _, ia := range msg.Options.IANA() {
				out := &dhcpv6.OptIANA{IaId: ia.IaId}
				if msg.Type() == dhcpv6.MessageTypeRebind && len(ia.Options.Addresses()) > 0 {
					for _, a := range ia.Options.Addresses() {
						out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr})
					}
				} else {
					out.Options.Add(status(iana.StatusNoBinding, "no binding for this client"))
				}
				reply.AddOption(out)
			}
			return reply, nil
		}
		addIAs(reply, msg, leases)
	case dhcpv6.MessageTypeRelease:
		// The address stays IPAM's: nothing to free here.
		reply.AddOption(status(iana.StatusSuccess, "released"))
		return reply, nil
	case dhcpv6.MessageTypeDecline:
		reply.AddOption(status(iana.StatusSuccess, "declined"))
		return reply, nil
	case dhcpv6.MessageTypeConfirm:
		if !known {
			return nil, fmt.Errorf("%w: confirm from unknown client %s on port %q", ErrDrop, from.MAC, from.Port)
		}
		held := 0
		for _, ia := range msg.Options.IANA() {
			for _, a := range ia.Options.Addresses() {
				held++
				if got, ok := netip.AddrFromSlice(a.IPv6Addr); !ok || !holds(leases, got.Unmap()) {
					reply.AddOption(status(iana.StatusNotOnLink, fmt.Sprintf("%s is not this client's address", a.IPv6Addr)))
					return reply, nil
				}
			}
		}
		if held == 0 {
			return nil, fmt.Errorf("%w: confirm without addresses", ErrDrop)
		}
		reply.AddOption(status(iana.StatusSuccess, "addresses on link"))
		return reply, nil
	}
	addOtherConfig(reply, c)
	return reply, nil
}

// offer is one address as it goes out.
type offer struct {
	addr             netip.Addr
	preferred, valid time.Duration // whole seconds
	deprecated       bool
	// limited: the lease has a valid lifetime of its own (MaxLimitedT1).
	limited bool
}

// offers is what Lookup returned with the defaults of c filled in: only
// IPv6 addresses with a valid lifetime left, each once (the first counts).
func offers(c Config, leases []Lease) []offer {
	var out []offer
	for _, l := range leases {
		o := offer{addr: l.Addr.WithZone(""), preferred: l.Preferred, valid: l.Valid, deprecated: l.Deprecated, limited: l.Valid > 0}
		if !o.addr.Is6() || o.addr.Is4In6() || o.valid < 0 || o.preferred < 0 || holds(out, o.addr) {
			continue
		}
		if o.valid == 0 {
			o.valid = c.Valid
		}
		if o.preferred == 0 {
			o.preferred = c.Preferred
		}
		o.valid = o.valid.Truncate(time.Second)
		o.preferred = min(o.preferred.Truncate(time.Second), o.valid)
		if o.deprecated {
			o.preferred = 0
		}
		if o.valid == 0 {
			continue // its lifetime is over: not the client's any more
		}
		out = append(out, o)
	}
	return out
}

func holds(offers []offer, a netip.Addr) bool {
	return slices.ContainsFunc(offers, func(o offer) bool { return o.addr == a })
}

// timers are T1 and T2 of an IA holding offers: 0.5 and 0.8 of the
// shortest preferred lifetime among the non-deprecated ones (of the
// shortest valid one when all are deprecated), at most MaxLimitedT1 and
// 1.6 × it when an offer's lease has its own valid lifetime.
func timers(offers []offer) (t1, t2 time.Duration) {
	base := time.Duration(-1)
	limited := false
	for _, o := range offers {
		limited = limited || o.limited
		if !o.deprecated && (base < 0 || o.preferred < base) {
			base = o.preferred
		}
	}
	if base < 0 {
		for _, o := range offers {
			if base < 0 || o.valid < base {
				base = o.valid
			}
		}
	}
	t1, t2 = base/2, base*4/5
	if limited {
		t1, t2 = min(t1, MaxLimitedT1), min(t2, MaxLimitedT1*8/5)
	}
	return t1.Truncate(time.Second), t2.Truncate(time.Second)
}

// addIAs answers every IA_NA of msg: the first gets the leases, each with
// its lifetimes (any other address it names comes back with lifetimes 0,
// RFC 8415 section 18.3.4); further IA_NAs get NoAddrsAvail (one IA per
// client). IA_TA and IA_PD are not served.
func addIAs(reply *dhcpv6.Message, msg *dhcpv6.Message, leases []offer) {
	for i, ia := range msg.Options.IANA() {
		out := &dhcpv6.OptIANA{IaId: ia.IaId}
		if i > 0 {
			out.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "one address per client"})
			reply.AddOption(out)
			continue
		}
		out.T1, out.T2 = timers(leases)
		for _, o := range leases {
			out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(o.addr.AsSlice()), PreferredLifetime: o.preferred, ValidLifetime: o.valid})
		}
		for _, a := range ia.Options.Addresses() {
			if got, ok := netip.AddrFromSlice(a.IPv6Addr); ok && !holds(leases, got.Unmap()) {
				out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr})
			}
		}
		reply.AddOption(out)
	}
	for _, pd := range msg.Options.IAPD() {
		reply.AddOption(&dhcpv6.OptIAPD{IaId: pd.IaId, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{
			&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: "no prefix delegation here"},
		}}})
	}
}

func addOtherConfig(reply *dhcpv6.Message, c Config) {
	if len(c.DNS) > 0 {
		ips := make([]net.IP, len(c.DNS))
		for i, a := range c.DNS {
			ips[i] = a.AsSlice()
		}
		dhcpv6.WithDNS(ips...)(reply)
	}
	if len(c.Search) > 0 {
		dhcpv6.WithDomainSearchList(c.Search...)(reply)
	}
}

// ClientMAC is the link-layer address the client that sent msg from src
// claims: the one in its DUID-LL or DUID-LLT (Ethernet), else the MAC
// encoded in an EUI-64 link-local src; nil when neither gives one. It is
// self-declared: for logs only, never to bind an address.
func ClientMAC(msg *dhcpv6.Message, src netip.Addr) net.HardwareAddr {
	switch d := msg.Options.ClientID().(type) {
	case *dhcpv6.DUIDLL:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return slices.Clone(d.LinkLayerAddr)
		}
	case *dhcpv6.DUIDLLT:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return slices.Clone(d.LinkLayerAddr)
		}
	}
	return macFromEUI64(src)
}

// macFromEUI64 inverts the modified EUI-64 interface ID of a link-local
// address (RFC 4291 appendix A): ff:fe in the middle, U/L bit flipped.
func macFromEUI64(a netip.Addr) net.HardwareAddr {
	if !a.Is6() || !a.IsLinkLocalUnicast() {
		return nil
	}
	b := a.As16()
	if b[11] != 0xff || b[12] != 0xfe {
		return nil
	}
	return net.HardwareAddr{b[8] ^ 0x02, b[9], b[10], b[13], b[14], b[15]}
}

// decodeRequest decodes a datagram received on the server port. Relayed
// messages and message types a client never sends are errors.
func decodeRequest(b []byte) (*dhcpv6.Message, error) {
	d, err := dhcpv6.FromBytes(b)
	if err != nil {
		return nil, err
	}
	m, ok := d.(*dhcpv6.Message)
	if !ok {
		return nil, errors.New("relayed DHCPv6 messages are not served")
	}
	switch m.Type() {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeConfirm,
		dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeRelease,
		dhcpv6.MessageTypeDecline, dhcpv6.MessageTypeInformationRequest:
		return m, nil
	}
	return nil, fmt.Errorf("message type %s is not a client message", m.Type())
}

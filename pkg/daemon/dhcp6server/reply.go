// Package dhcp6server is a DHCPv6 server for one interface (a bridge facing
// containers), on insomniacslk/dhcp's server6. It serves what IPAM already
// decided and never invents an address:
//
//   - Information-Request (stateless, RA O=1): the DNS servers and the
//     domain search list.
//   - Solicit, Request, Renew, Rebind, Release, Decline, Confirm (stateful,
//     RA M=1): the one address Config.Lookup returns for the client's
//     link-layer address, with the configured lifetimes; rapid commit when
//     enabled and asked for. A client Lookup does not know gets
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

// Config is what one interface serves.
type Config struct {
	// Interface is the name of the interface (the bridge) to serve.
	Interface string
	// DNS servers (OPTION_DNS_SERVERS); IPv4 entries are skipped.
	DNS []netip.Addr
	// Search is the domain search list (OPTION_DOMAIN_LIST).
	Search []string
	// Preferred and Valid lifetimes of the address; 0 means
	// DefaultPreferred, DefaultValid. T1 and T2 are 0.5 and 0.8 of
	// Preferred.
	Preferred, Valid time.Duration
	// RapidCommit answers a Solicit that asks for it with a Reply at once.
	RapidCommit bool
	// Lookup returns the address IPAM recorded for the attachment behind
	// the port and link-layer source of from; nil serves
	// Information-Requests only (every address request gets
	// NoAddrsAvail). Called concurrently.
	Lookup func(from Origin) (netip.Addr, bool)
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

	var addr netip.Addr
	known := false
	if len(from.MAC) == 6 && from.Port != "" && c.Lookup != nil {
		addr, known = c.Lookup(from)
		known = known && addr.Is6() && !addr.Is4In6()
	}

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
		addIAs(reply, c, msg, addr)
	case dhcpv6.MessageTypeRequest:
		if !known {
			for _, ia := range msg.Options.IANA() {
				reply.AddOption(&dhcpv6.OptIANA{IaId: ia.IaId, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{status(iana.StatusNoAddrsAvail, "no address for this client")}}})
			}
			reply.AddOption(status(iana.StatusNoAddrsAvail, "no address for this client"))
			return reply, nil
		}
		addIAs(reply, c, msg, addr)
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
		addIAs(reply, c, msg, addr)
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
				if got, ok := netip.AddrFromSlice(a.IPv6Addr); !ok || got.Unmap() != addr {
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

// addIAs answers every IA_NA of msg: the first gets addr, with lifetimes
// (any other address it names comes back with lifetimes 0, RFC 8415
// section 18.3.4); further IA_NAs get NoAddrsAvail (one address per
// client). IA_TA and IA_PD are not served.
func addIAs(reply *dhcpv6.Message, c Config, msg *dhcpv6.Message, addr netip.Addr) {
	t1, t2 := c.Preferred/2, c.Preferred*4/5
	for i, ia := range msg.Options.IANA() {
		out := &dhcpv6.OptIANA{IaId: ia.IaId}
		if i > 0 {
			out.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "one address per client"})
			reply.AddOption(out)
			continue
		}
		out.T1, out.T2 = t1, t2
		out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(addr.AsSlice()), PreferredLifetime: c.Preferred, ValidLifetime: c.Valid})
		for _, a := range ia.Options.Addresses() {
			if got, ok := netip.AddrFromSlice(a.IPv6Addr); ok && got.Unmap() != addr {
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

package ra

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
)

// solicitation is a Router Solicitation that passed the validity checks of
// RFC 4861 section 6.1.1.
type solicitation struct {
	src netip.Addr       // the soliciting host; unspecified when it has no address yet
	lla net.HardwareAddr // its source link-layer address option, if any
}

var errNotSolicitation = errors.New("not a router solicitation")

// parseSolicitation validates the ICMPv6 message b (as a raw ICMPv6 socket
// returns it, checksum already verified by the kernel) received from src
// with IPv6 hop limit hopLimit. Anything other than a valid Router
// Solicitation is an error: RFC 4861 says to discard it silently.
func parseSolicitation(b []byte, hopLimit int, src netip.Addr) (solicitation, error) {
	// Type, code, checksum and 4 reserved bytes.
	const rsLen = 8
	if len(b) < rsLen {
		return solicitation{}, fmt.Errorf("router solicitation of %d bytes, want >= %d", len(b), rsLen)
	}
	if b[0] != 133 { // ICMPv6 Router Solicitation
		return solicitation{}, errNotSolicitation
	}
	if b[1] != 0 {
		return solicitation{}, fmt.Errorf("router solicitation with ICMP code %d, want 0", b[1])
	}
	if hopLimit != ndp.HopLimit {
		return solicitation{}, fmt.Errorf("router solicitation with hop limit %d, want 255 (not from the link)", hopLimit)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		return solicitation{}, fmt.Errorf("router solicitation: %w", err)
	}
	rs, ok := m.(*ndp.RouterSolicitation)
	if !ok {
		return solicitation{}, errNotSolicitation
	}
	s := solicitation{src: src.WithZone("")}
	for _, o := range rs.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			s.lla = lla.Addr
		}
	}
	if s.src.IsUnspecified() && s.lla != nil {
		return solicitation{}, errors.New("router solicitation from the unspecified address with a source link-layer address option")
	}
	return s, nil
}

package ra

import (
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
)

// curHopLimit is the hop limit advertised to hosts (the usual 64).
const curHopLimit = 64

// Advertisement builds the router advertisement cfg describes (defaults
// applied, cfg validated as New does), sent by an interface whose MAC is
// src (nil: no source link-layer address option). Parse ndp.MarshalMessage
// of it to see the bytes on the wire.
func Advertisement(cfg Config, src net.HardwareAddr) (*ndp.RouterAdvertisement, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return build(c, src, nil, false, time.Now()), nil
}

// build makes the RA of a validated, defaulted config. Withdrawn prefixes
// (removed by an Update) are advertised with lifetimes 0 so hosts deprecate
// their addresses at once; final advertises router lifetime 0 (the server is
// stopping). Each prefix carries its lifetimes as of now (Prefix.lifetimes).
func build(c Config, src net.HardwareAddr, withdrawn []netip.Prefix, final bool, now time.Time) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit:      curHopLimit,
		ManagedConfiguration: c.Mode == ModeDHCPv6Stateful,
		OtherConfiguration:   c.Mode == ModeDHCPv6Stateless || c.Mode == ModeDHCPv6Stateful,
		RouterLifetime:       c.RouterLifetime,
	}
	if c.RouterLifetime < 0 || final {
		ra.RouterLifetime = 0
	}
	autonomous := c.Mode != ModeDHCPv6Stateful
	for _, p := range c.Prefixes {
		preferred, valid := p.lifetimes(now)
		ra.Options = append(ra.Options, &ndp.PrefixInformation{
			PrefixLength:                   uint8(p.Prefix.Bits()),
			OnLink:                         true,
			AutonomousAddressConfiguration: autonomous,
			ValidLifetime:                  valid,
			PreferredLifetime:              preferred,
			Prefix:                         p.Prefix.Addr(),
		})
	}
	for _, p := range withdrawn {
		ra.Options = append(ra.Options, &ndp.PrefixInformation{
			PrefixLength:                   uint8(p.Bits()),
			OnLink:                         true,
			AutonomousAddressConfiguration: autonomous,
			Prefix:                         p.Addr(),
		})
	}
	if c.MTU > 0 {
		ra.Options = append(ra.Options, ndp.NewMTU(uint32(c.MTU)))
	}
	// RFC 8106 section 5.1: the default lifetime of both DNS options is
	// 3 × MaxRtrAdvInterval, so two lost RAs do not expire them.
	dnsLifetime := min(3*c.MaxInterval, time.Duration(0xfffffffe)*time.Second)
	if len(c.DNS) > 0 {
		ra.Options = append(ra.Options, &ndp.RecursiveDNSServer{Lifetime: dnsLifetime, Servers: c.DNS})
	}
	if len(c.Search) > 0 {
		ra.Options = append(ra.Options, &ndp.DNSSearchList{Lifetime: dnsLifetime, DomainNames: c.Search})
	}
	if len(src) > 0 {
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: src})
	}
	return ra
}

// Package ra is a router-advertisement server for one interface (a bridge
// facing containers): periodic unsolicited RAs (RFC 4861 section 6.2.4, with
// a short initial burst), answers to Router Solicitations, the M/O flags and
// prefix information of an address mode, router lifetime, MTU, and the DNS
// servers and search list (RDNSS, DNSSL: RFC 8106). Stopping it sends a final
// RA with router lifetime 0 (RFC 4861 section 6.2.5).
//
// What goes into an RA is built by pure functions (Advertisement), separate
// from the socket loop (Server), so it is tested without root.
package ra

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// The address modes, as in bridge-v6's ipv6Mode (and OpenStack's
// ipv6_address_mode). The values are ipamapi's, the one place they live;
// here they are plain strings because the RA flags are derived from them.
const (
	// ModeSLAAC: the host forms its address from the prefix (PIO A=1);
	// M=0, O=0.
	ModeSLAAC = string(ipamapi.IPv6ModeSLAAC)
	// ModeDHCPv6Stateless: SLAAC address, other configuration (DNS) by
	// DHCPv6 Information-Request: A=1, M=0, O=1.
	ModeDHCPv6Stateless = string(ipamapi.IPv6ModeDHCPv6Stateless)
	// ModeDHCPv6Stateful: address and other configuration by DHCPv6:
	// M=1, O=1, A=0.
	ModeDHCPv6Stateful = string(ipamapi.IPv6ModeDHCPv6Stateful)
)

// Defaults (RFC 4861 section 6.2.1 and RFC 8106 section 5.1).
const (
	DefaultMaxInterval       = 600 * time.Second
	DefaultValidLifetime     = 30 * 24 * time.Hour // 2592000 s
	DefaultPreferredLifetime = 7 * 24 * time.Hour  // 604800 s
	// MinMaxInterval and MaxMaxInterval bound MaxInterval (RFC 4861: 4 s
	// to 1800 s).
	MinMaxInterval = 4 * time.Second
	MaxMaxInterval = 1800 * time.Second
	// MaxRouterLifetime is the largest router lifetime an RA carries.
	MaxRouterLifetime = 9000 * time.Second
)

// NoDefaultRouter as Config.RouterLifetime advertises router lifetime 0:
// the hosts take the prefixes and DNS but no default route from this router.
const NoDefaultRouter time.Duration = -1

// Config is what one interface advertises.
type Config struct {
	// Interface is the name of the interface (the bridge) to serve.
	Interface string
	// Mode is ModeSLAAC, ModeDHCPv6Stateless or ModeDHCPv6Stateful.
	Mode string
	// Prefixes are advertised in Prefix Information options, on-link
	// (L=1), autonomous (A=1) except in ModeDHCPv6Stateful, each with its
	// own lifetimes. They must be IPv6 and, in the SLAAC modes, /64 (what
	// SLAAC on Ethernet forms addresses in). Host bits are ignored; of two
	// entries for one prefix the first counts.
	Prefixes []Prefix
	// MTU, when > 0, is advertised in an MTU option (1280..65535).
	MTU int
	// DNS servers, advertised in an RDNSS option; IPv4 entries are
	// skipped (a dual-stack network's list may hold some).
	DNS []netip.Addr
	// Search domains, advertised in a DNSSL option.
	Search []string
	// RouterLifetime: 0 means 3 × MaxInterval (RFC 4861 default, 1800 s);
	// NoDefaultRouter advertises 0; else 1 s..9000 s, whole seconds.
	RouterLifetime time.Duration
	// MaxInterval between unsolicited RAs: 0 means DefaultMaxInterval;
	// else MinMaxInterval..MaxMaxInterval. The minimum is derived as
	// RFC 4861 does (0.33 × max, or 0.75 × max below 9 s).
	MaxInterval time.Duration
	// ValidLifetime and PreferredLifetime of the prefixes whose Prefix
	// entry leaves them 0: 0 here means the RFC 4861 defaults (30 days,
	// 7 days).
	ValidLifetime, PreferredLifetime time.Duration
	// NoFinalRA: stopping sends no final RA with router lifetime 0. For a
	// planned restart: the hosts keep their default route until the next
	// server's first RA instead of losing it in between.
	NoFinalRA bool
}

// Prefix is one advertised prefix and its lifetimes.
type Prefix struct {
	Prefix netip.Prefix
	// Preferred and Valid lifetimes: 0 means Config.PreferredLifetime and
	// Config.ValidLifetime (a Preferred left 0 is also capped to Valid).
	// Because 0 means "the default", a preferred lifetime of 0 is said
	// with Deprecated.
	Preferred, Valid time.Duration
	// Deprecated advertises preferred lifetime 0, whatever Preferred
	// says: hosts keep their addresses in the prefix (until the valid
	// lifetime ends) but pick them for no new connection. The old prefix
	// of a renumbering is advertised so during the overlap.
	Deprecated bool
	// PreferredUntil and ValidUntil, when not zero, cap what each RA
	// advertises to the time left until then (0 once past): the lifetimes
	// of a delegated prefix run out, and an RA repeating a fixed lifetime
	// would extend a host's address beyond them at every RA.
	PreferredUntil, ValidUntil time.Time
}

// Prefixes is ps with the Config's lifetimes, for Config.Prefixes.
func Prefixes(ps ...netip.Prefix) []Prefix {
	out := make([]Prefix, len(ps))
	for i, p := range ps {
		out[i] = Prefix{Prefix: p}
	}
	return out
}

// lifetimes are the preferred and valid lifetimes p advertises at now
// (p defaulted by withDefaults), whole seconds as on the wire.
func (p Prefix) lifetimes(now time.Time) (preferred, valid time.Duration) {
	preferred, valid = p.Preferred, p.Valid
	if !p.ValidUntil.IsZero() {
		valid = min(valid, max(p.ValidUntil.Sub(now), 0))
	}
	if !p.PreferredUntil.IsZero() {
		preferred = min(preferred, max(p.PreferredUntil.Sub(now), 0))
	}
	if p.Deprecated {
		preferred = 0
	}
	valid = valid.Truncate(time.Second)
	return min(preferred.Truncate(time.Second), valid), valid
}

// withDefaults returns c with zero values replaced by their defaults and
// the prefixes masked, or an error naming the bad field.
func (c Config) withDefaults() (Config, error) {
	if c.Interface == "" {
		return c, fmt.Errorf("ra: interface missing")
	}
	switch c.Mode {
	case ModeSLAAC, ModeDHCPv6Stateless, ModeDHCPv6Stateful:
	default:
		return c, fmt.Errorf("ra: mode %q: want %s, %s or %s", c.Mode, ModeSLAAC, ModeDHCPv6Stateless, ModeDHCPv6Stateful)
	}
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > 65535) {
		return c, fmt.Errorf("ra: mtu %d out of range (0 for none, or 1280..65535)", c.MTU)
	}
	var dns []netip.Addr
	for _, a := range c.DNS {
		if a.Is6() && !a.Is4In6() && !slices.Contains(dns, a.WithZone("")) {
			dns = append(dns, a.WithZone(""))
		}
	}
	c.DNS = dns
	for _, d := range c.Search {
		if err := validDomain(d); err != nil {
			return c, fmt.Errorf("ra: search domain %q: %v", d, err)
		}
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = DefaultMaxInterval
	}
	if c.MaxInterval < MinMaxInterval || c.MaxInterval > MaxMaxInterval {
		return c, fmt.Errorf("ra: max interval %s out of range (%s..%s)", c.MaxInterval, MinMaxInterval, MaxMaxInterval)
	}
	switch {
	case c.RouterLifetime == 0:
		c.RouterLifetime = min(3*c.MaxInterval, MaxRouterLifetime)
	case c.RouterLifetime == NoDefaultRouter:
	case c.RouterLifetime < time.Second || c.RouterLifetime > MaxRouterLifetime:
		return c, fmt.Errorf("ra: router lifetime %s out of range (1s..%s, or NoDefaultRouter)", c.RouterLifetime, MaxRouterLifetime)
	}
	if c.ValidLifetime == 0 {
		c.ValidLifetime = DefaultValidLifetime
	}
	if c.PreferredLifetime == 0 {
		c.PreferredLifetime = min(DefaultPreferredLifetime, c.ValidLifetime)
	}
	if c.ValidLifetime < 0 || c.PreferredLifetime < 0 || c.PreferredLifetime > c.ValidLifetime {
		return c, fmt.Errorf("ra: lifetimes preferred %s, valid %s: want 0 <= preferred <= valid", c.PreferredLifetime, c.ValidLifetime)
	}
	prefixes := make([]Prefix, 0, len(c.Prefixes))
	for _, p := range c.Prefixes {
		if !p.Prefix.IsValid() || !p.Prefix.Addr().Is6() || p.Prefix.Addr().Is4In6() {
			return c, fmt.Errorf("ra: prefix %s is not an IPv6 prefix", p.Prefix)
		}
		if c.Mode != ModeDHCPv6Stateful && p.Prefix.Bits() != 64 {
			return c, fmt.Errorf("ra: prefix %s: mode %s needs /64 prefixes (SLAAC forms 64-bit interface IDs)", p.Prefix, c.Mode)
		}
		p.Prefix = p.Prefix.Masked()
		if p.Valid == 0 {
			p.Valid = c.ValidLifetime
		}
		if p.Preferred == 0 {
			p.Preferred = min(c.PreferredLifetime, p.Valid)
		}
		if p.Valid < 0 || p.Preferred < 0 || p.Preferred > p.Valid {
			return c, fmt.Errorf("ra: prefix %s: lifetimes preferred %s, valid %s: want 0 <= preferred <= valid", p.Prefix, p.Preferred, p.Valid)
		}
		if !slices.ContainsFunc(prefixes, func(q Prefix) bool { return q.Prefix == p.Prefix }) {
			prefixes = append(prefixes, p)
		}
	}
	c.Prefixes = prefixes
	return c, nil
}

// minInterval is MinRtrAdvInterval derived from MaxRtrAdvInterval as
// RFC 4861 section 6.2.1 defaults it.
func minInterval(maxInterval time.Duration) time.Duration {
	if maxInterval >= 9*time.Second {
		return maxInterval * 33 / 100
	}
	return maxInterval * 3 / 4
}

// validDomain accepts what a DNSSL option can carry and a resolver can use:
// dot-separated labels of letters, digits, '-' and '_', 1..63 bytes each,
// at most 253 bytes in all; one trailing dot is allowed.
func validDomain(d string) error {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 {
		return fmt.Errorf("length %d, want 1..253", len(d))
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q: length %d, want 1..63", label, len(label))
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("label %q contains %q", label, r)
			}
		}
	}
	return nil
}

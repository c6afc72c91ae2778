package bgpspeaker

import (
	"fmt"
	"net/netip"
	"slices"
)

// Route is one prefix this node announces.
type Route struct {
	// Prefix is the announced prefix, without host bits.
	Prefix netip.Prefix `json:"prefix"`
	// Communities are added to Config.Communities for this prefix.
	Communities []string `json:"communities,omitempty"`
}

// announcement is a Route as it goes on the wire: validated, with the
// communities (global and its own) parsed, sorted and deduplicated.
type announcement struct {
	prefix      netip.Prefix
	communities []uint32
}

func (a announcement) equal(b announcement) bool {
	return a.prefix == b.prefix && slices.Equal(a.communities, b.communities)
}

// family returns the address family of the prefix.
func (a announcement) family() Family {
	if a.prefix.Addr().Is4() {
		return IPv4Unicast
	}
	return IPv6Unicast
}

// desiredSet validates routes against the config and turns them into the
// announcements SetRoutes must converge to. The same prefix twice is fine
// when both agree; different communities for one prefix are an error.
func desiredSet(cfg *Config, routes []Route) (map[netip.Prefix]announcement, error) {
	global, err := parseCommunities(cfg.Communities)
	if err != nil {
		return nil, fmt.Errorf("bgp: config communities: %w", err)
	}
	out := make(map[netip.Prefix]announcement, len(routes))
	for _, r := range routes {
		p := r.Prefix
		if !p.IsValid() {
			return nil, fmt.Errorf("bgp: route %q: invalid prefix", p)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("bgp: route %s: IPv4-mapped IPv6 prefix; use the IPv4 form", p)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("bgp: route %s: host bits set (did you mean %s?)", p, p.Masked())
		}
		a := announcement{prefix: p}
		if !cfg.hasFamily(a.family()) {
			return nil, fmt.Errorf("bgp: route %s: family %s is not enabled (bgp.families)", p, a.family())
		}
		own, err := parseCommunities(r.Communities)
		if err != nil {
			return nil, fmt.Errorf("bgp: route %s: %w", p, err)
		}
		a.communities = slices.Compact(slices.Sorted(slices.Values(append(own, global...))))
		if prev, dup := out[p]; dup && !prev.equal(a) {
			return nil, fmt.Errorf("bgp: route %s: listed twice with different communities", p)
		}
		out[p] = a
	}
	return out, nil
}

// diffRoutes returns what to announce (new or changed) and what to
// withdraw so that current becomes desired. Both come back sorted, so the
// order of UPDATEs is deterministic.
func diffRoutes(current, desired map[netip.Prefix]announcement) (announce []announcement, withdraw []netip.Prefix) {
	for p, want := range desired {
		if have, ok := current[p]; !ok || !have.equal(want) {
			announce = append(announce, want)
		}
	}
	for p := range current {
		if _, ok := desired[p]; !ok {
			withdraw = append(withdraw, p)
		}
	}
	slices.SortFunc(announce, func(a, b announcement) int { return comparePrefix(a.prefix, b.prefix) })
	slices.SortFunc(withdraw, comparePrefix)
	return announce, withdraw
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Package ipamconf parses and validates the network configuration an IPAM
// plugin of v6cni (ipam-v6) receives, and the ipam section ipamd allocates
// from. It is pure: no I/O, no etcd, so plugins and ipamd share it and both
// reject bad input with the same CNI error code and message.
package ipamconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultSocket is where ipamd listens unless ipam.socket says otherwise.
const DefaultSocket = "/run/v6cni/ipamd.sock"

// Default block sizes: a /64 per node is what SLAAC and most IPv6 tooling
// expect; a /24 per node is what Kubernetes node IPAM gives for IPv4.
const (
	DefaultBlockSize6 = 64
	DefaultBlockSize4 = 24
)

// Smallest blocks: a block must hold its gateway and at least one container.
// IPv6 also keeps the Subnet-Router anycast (all-zero interface ID) out;
// IPv4 keeps the network and broadcast addresses out.
const (
	maxBlockSize6 = 126
	maxBlockSize4 = 30
)

// Range is one subnet of a pool and the size of the blocks nodes claim from it.
type Range struct {
	Subnet    netip.Prefix `json:"subnet"`
	BlockSize int          `json:"blockSize"`
	// Exclude lists prefixes of the subnet no container ever gets.
	Exclude []netip.Prefix `json:"exclude,omitempty"`
	// Delegated marks a range taken from the delegated prefix instead of a
	// configured subnet ("delegated": true): Subnet and BlockSize are
	// filled in by ipamd at request time (ResolveDelegated), from the
	// SubnetID-th slice of the current delegated prefix.
	Delegated bool `json:"delegated,omitempty"`
	SubnetID  int  `json:"subnetId,omitempty"`
	// Source is where blocks of this range come from: SourcePool (the
	// cluster-wide ranges of the config) or SourcePD (the node's delegated
	// prefix, filled in by ipamd at request time).
	Source string `json:"-"`
	// excl are the exclusions merged into runs (exclude.go).
	excl []span
	// delegatedBlockSize is a delegated range's configured blockSize (0:
	// the PD layout's), kept apart from BlockSize, which resolving fills.
	delegatedBlockSize int
}

// Block sources.
const (
	SourcePool = "pool"
	SourcePD   = "pd"
)

// PD is the ipam section of pd-ipam: which /64 of the node's delegated
// prefix the network uses.
type PD struct {
	SubnetID int `json:"subnetId"`
}

// Excluded reports whether a is in one of the range's excluded prefixes, and
// which (for messages; searches use ExcludedThrough).
func (r Range) Excluded(a netip.Addr) (netip.Prefix, bool) {
	for _, e := range r.Exclude {
		if e.Contains(a) {
			return e, true
		}
	}
	return netip.Prefix{}, false
}

// Addressing modes: how the interface ID of a container's IPv6 address is
// chosen inside its node's block.
const (
	// Sequential takes the next free address after the block's cursor.
	Sequential = "sequential"
	// EUI64 derives the interface ID from the container interface's MAC
	// (RFC 4291 modified EUI-64), as SLAAC would; needs /64 blocks.
	EUI64 = "eui64"
	// Stable hashes network, container ID and ifname into the interface ID
	// (RFC 7217 style), so a re-created attachment gets the same address
	// when it is free.
	Stable = "stable"
)

// RangeSet is a list of ranges of one address family; a container gets one
// address from each range set.
type RangeSet []Range

// Is6 reports whether the range set is IPv6 (a delegated set always is).
func (rs RangeSet) Is6() bool { return len(rs) > 0 && (rs[0].Delegated || rs[0].Subnet.Addr().Is6()) }

// Route is a route the IPAM result carries. A zero GW means "via the gateway
// of the block the container's address of that family came from".
type Route struct {
	Dst netip.Prefix `json:"dst"`
	GW  netip.Addr   `json:"gw,omitzero"`
}

// IPAM is the validated ipam section.
type IPAM struct {
	Type   string     `json:"type"`
	Socket string     `json:"socket,omitempty"`
	Ranges []RangeSet `json:"ranges"`
	Routes []Route    `json:"routes,omitempty"`
	DNS    types.DNS  `json:"dns,omitzero"`
	// Addressing is Sequential (default), EUI64 or Stable.
	Addressing string `json:"addressing"`
	// PD is set for pd-ipam networks, whose one IPv6 range is a /64 of the
	// node's delegated prefix; Ranges is then empty until ipamd fills it.
	PD *PD `json:"pd,omitempty"`
	// Sticky keeps a pod's addresses for StickyGrace after DEL and gives
	// them back to the next ADD of the same pod name (K8S_POD_NAMESPACE/
	// K8S_POD_NAME) and interface: a re-created StatefulSet pod keeps its IP.
	Sticky      bool     `json:"sticky,omitempty"`
	StickyGrace Duration `json:"stickyGrace,omitzero"`
	// DuplicateQuarantine is how long an address that duplicate address
	// detection found in use by another host (bridge-v6 on a provider
	// network names it on the DEL of the failed ADD) stays out of use;
	// 0 releases it at once.
	DuplicateQuarantine Duration `json:"duplicateQuarantine,omitzero"`
	// BGPCommunities are attached to the BGP announcements of the
	// network's blocks ("65001:100" or a well-known name such as
	// "no-export").
	BGPCommunities []string `json:"bgpCommunities,omitempty"`
}

// DefaultStickyGrace is how long a sticky address waits for its pod.
const DefaultStickyGrace = 10 * time.Minute

// DefaultDuplicateQuarantine is how long a duplicate address is kept out
// of use.
const DefaultDuplicateQuarantine = 10 * time.Minute

// Duration is a time.Duration written as text ("10m") in JSON.
type Duration struct{ time.Duration }

// MarshalText writes the duration as Go writes it ("10m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// NetConf is the part of a network configuration IPAM cares about.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	IPAM       IPAM   `json:"ipam"`
}

// rawConf mirrors NetConf with strings where users write addresses, so that a
// bad value is reported with the field it came from instead of a bare
// "ParseAddr" message.
type rawConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	IPAM       *struct {
		Type        string       `json:"type"`
		Socket      string       `json:"socket"`
		Ranges      [][]rawRange `json:"ranges"`
		Addressing  string       `json:"addressing"`
		SubnetID    *int         `json:"subnetId"`
		Sticky      bool         `json:"sticky"`
		StickyGrace string       `json:"stickyGrace"`
		// DuplicateQuarantine is a duration; "0s" releases at once.
		DuplicateQuarantine *string  `json:"duplicateQuarantine"`
		BGPCommunities      []string `json:"bgpCommunities"`
		Routes              []struct {
			Dst string `json:"dst"`
			GW  string `json:"gw"`
		} `json:"routes"`
		DNS types.DNS `json:"dns"`
	} `json:"ipam"`
}

// networkName is what libcni accepts as a network name; it also keeps etcd
// keys built from it unambiguous.
// Bounds of ipam.ranges. A container gets one address per range set (one
// or two in practice); ipamd walks every range of a set to find a block.
// Thousands would make each ADD claim thousands of blocks in etcd.
const (
	maxRangeSets    = 16
	maxRangesPerSet = 256
)

var networkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// Parse decodes and validates a network configuration as it arrives on an
// IPAM plugin's stdin. Errors are *types.Error: code 6 for undecodable
// input, 7 for an invalid configuration, each naming the field and value.
func Parse(data []byte) (*NetConf, error) {
	var raw rawConf
	if len(data) > MaxConfigSize {
		return nil, CheckDocument("network config", data)
	}
	// Unmarshal, not a Decoder: it refuses trailing data after the object.
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, decodeError(err)
	}
	if err := CheckDocument("network config", data); err != nil {
		return nil, err
	}
	if raw.Name == "" {
		return nil, invalid("name: missing")
	}
	if len(raw.Name) > maxNameLen {
		return nil, invalid("name: %q… is %d bytes, longer than %d", raw.Name[:32], len(raw.Name), maxNameLen)
	}
	if !networkName.MatchString(raw.Name) {
		return nil, invalid("name: %q is not a valid network name (letters, digits, '_', '.', '-')", raw.Name)
	}
	if raw.IPAM == nil {
		return nil, invalid("ipam: missing")
	}
	nc := &NetConf{CNIVersion: raw.CNIVersion, Name: raw.Name}
	ic := &nc.IPAM
	ic.Type = raw.IPAM.Type
	ic.Socket = raw.IPAM.Socket
	if ic.Socket == "" {
		ic.Socket = DefaultSocket
	}
	ic.DNS = raw.IPAM.DNS

	if raw.IPAM.SubnetID != nil {
		// pd-ipam: the subnet comes from the node's delegated prefix.
		if len(raw.IPAM.Ranges) != 0 {
			return nil, invalid("ipam.ranges: not allowed with ipam.subnetId (a pd-ipam network's subnet is a /64 of the delegated prefix)")
		}
		if id := *raw.IPAM.SubnetID; id < 0 || id > 0xffff {
			return nil, invalid("ipam.subnetId: %d is not in 0..65535", id)
		}
		ic.PD = &PD{SubnetID: *raw.IPAM.SubnetID}
	} else if raw.IPAM.Type == "pd-ipam" && !hasDelegatedRange(raw.IPAM.Ranges) {
		return nil, invalid(`ipam.subnetId: missing: pd-ipam needs the /64 of the delegated prefix to use, e.g. "subnetId": 1`)
	} else if len(raw.IPAM.Ranges) == 0 {
		return nil, invalid(`ipam.ranges: missing: give at least one range set, e.g. [[{"subnet": "2001:db8::/48"}]]`)
	}
	if len(raw.IPAM.Ranges) > maxRangeSets {
		return nil, invalid("ipam.ranges: %d range sets, more than %d (each gives every container one address)", len(raw.IPAM.Ranges), maxRangeSets)
	}
	for i, rawSet := range raw.IPAM.Ranges {
		if len(rawSet) == 0 {
			return nil, invalid("ipam.ranges[%d]: empty range set", i)
		}
		if len(rawSet) > maxRangesPerSet {
			return nil, invalid("ipam.ranges[%d]: %d ranges, more than %d", i, len(rawSet), maxRangesPerSet)
		}
		var set RangeSet
		for j, rr := range rawSet {
			field := fmt.Sprintf("ipam.ranges[%d][%d]", i, j)
			if rr.Delegated || rr.SubnetID != nil {
				r, err := parseDelegated(field, rr, len(rawSet))
				if err != nil {
					return nil, err
				}
				set = append(set, r)
				continue
			}
			r, err := parseRange(field, rr.Subnet, rr.BlockSize)
			if err != nil {
				return nil, err
			}
			r.Source = SourcePool
			for k, ex := range rr.Exclude {
				e, err := netip.ParsePrefix(ex)
				if err != nil || e != e.Masked() {
					return nil, invalid("%s.exclude[%d]: %q is not a network prefix", field, k, ex)
				}
				if !r.Subnet.Contains(e.Addr()) || e.Bits() < r.Subnet.Bits() {
					return nil, invalid("%s.exclude[%d]: %s is not inside the subnet %s", field, k, e, r.Subnet)
				}
				if e == r.Subnet {
					// Nothing would be left to allocate: refuse it here rather
					// than as "pool exhausted" (11) on every ADD.
					return nil, invalid("%s.exclude[%d]: %s excludes the whole subnet", field, k, e)
				}
				r.Exclude = append(r.Exclude, e)
			}
			r.excl = mergeExcludes(r.Exclude)
			if _, ok := r.FirstUsableBlock(); !ok {
				return nil, invalid("%s.exclude: excludes every address a container could get in %s (blockSize %d)",
					field, r.Subnet, r.BlockSize)
			}
			if len(set) > 0 && set.Is6() != r.Subnet.Addr().Is6() {
				return nil, invalid("%s.subnet: %s mixes address families with %s in the same range set; put IPv4 and IPv6 in separate range sets",
					field, r.Subnet, set[0].Subnet)
			}
			set = append(set, r)
		}
		ic.Ranges = append(ic.Ranges, set)
	}
	if err := checkDelegatedSets(ic); err != nil {
		return nil, err
	}
	if err := checkOverlap(ic.Ranges); err != nil {
		return nil, err
	}
	for i, c := range raw.IPAM.BGPCommunities {
		if !validCommunity(c) {
			return nil, invalid("ipam.bgpCommunities[%d]: %q is neither ASN:VALUE (16-bit numbers) nor a well-known community (no-export, no-advertise, no-export-subconfed, blackhole, graceful-shutdown)", i, c)
		}
	}
	ic.BGPCommunities = raw.IPAM.BGPCommunities
	ic.Sticky = raw.IPAM.Sticky
	ic.StickyGrace.Duration = DefaultStickyGrace
	if raw.IPAM.StickyGrace != "" {
		d, err := time.ParseDuration(raw.IPAM.StickyGrace)
		if err != nil || d <= 0 {
			return nil, invalid("ipam.stickyGrace: %q is not a positive duration (e.g. \"10m\")", raw.IPAM.StickyGrace)
		}
		ic.StickyGrace.Duration = d
	}
	ic.DuplicateQuarantine.Duration = DefaultDuplicateQuarantine
	if q := raw.IPAM.DuplicateQuarantine; q != nil {
		d, err := time.ParseDuration(*q)
		if err != nil || d < 0 {
			return nil, invalid("ipam.duplicateQuarantine: %q is not a duration (e.g. \"10m\"; \"0s\" releases a duplicate at once)", *q)
		}
		ic.DuplicateQuarantine.Duration = d
	}
	switch ic.Addressing = raw.IPAM.Addressing; ic.Addressing {
	case "":
		ic.Addressing = Sequential
	case Sequential, Stable:
	case EUI64:
		for i, set := range ic.Ranges {
			for j, r := range set {
				if r.Delegated && r.delegatedBlockSize != 0 && r.delegatedBlockSize != 64 {
					return nil, invalid("ipam.ranges[%d][%d].blockSize: %d: addressing %q needs /64 blocks", i, j, r.delegatedBlockSize, EUI64)
				}
				if r.Subnet.Addr().Is6() && r.BlockSize != 64 {
					return nil, invalid("ipam.ranges[%d][%d].blockSize: %d: addressing %q needs /64 blocks", i, j, r.BlockSize, EUI64)
				}
			}
		}
	default:
		return nil, invalid("ipam.addressing: %q is not one of %s, %s, %s", ic.Addressing, Sequential, EUI64, Stable)
	}

	for i, rr := range raw.IPAM.Routes {
		field := fmt.Sprintf("ipam.routes[%d]", i)
		dst, err := netip.ParsePrefix(rr.Dst)
		if err != nil {
			return nil, invalid("%s.dst: %q is not a prefix", field, rr.Dst)
		}
		if dst != dst.Masked() {
			return nil, invalid("%s.dst: %q is not a network address (did you mean %s?)", field, rr.Dst, dst.Masked())
		}
		rt := Route{Dst: dst}
		if rr.GW != "" {
			gw, err := netip.ParseAddr(rr.GW)
			if err != nil || gw.Zone() != "" {
				return nil, invalid("%s.gw: %q is not an address", field, rr.GW)
			}
			if gw.Is4() != dst.Addr().Is4() {
				return nil, invalid("%s.gw: %s is not of the family of dst %s", field, gw, dst)
			}
			rt.GW = gw
		} else if !ic.hasFamily(dst.Addr().Is6()) && !(ic.PD != nil && dst.Addr().Is6()) {
			return nil, invalid("%s: %s has no gw and no range of its family gives one", field, dst)
		}
		ic.Routes = append(ic.Routes, rt)
	}
	for i, ns := range ic.DNS.Nameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			return nil, invalid("ipam.dns.nameservers[%d]: %q is not an address", i, ns)
		}
	}
	return nc, nil
}

func parseRange(field, subnet string, blockSize *int) (Range, error) {
	if subnet == "" {
		return Range{}, invalid("%s.subnet: missing", field)
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return Range{}, invalid("%s.subnet: %q is not a CIDR prefix", field, subnet)
	}
	if p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return Range{}, invalid("%s.subnet: %q: use a plain IPv4 or IPv6 prefix", field, subnet)
	}
	if p != p.Masked() {
		return Range{}, invalid("%s.subnet: %q is not a network address (did you mean %s?)", field, subnet, p.Masked())
	}
	if p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() || p.Addr().IsLoopback() {
		return Range{}, invalid("%s.subnet: %s is not a unicast range containers can use", field, p)
	}
	r := Range{Subnet: p}
	maxBS, def := maxBlockSize6, DefaultBlockSize6
	if p.Addr().Is4() {
		maxBS, def = maxBlockSize4, DefaultBlockSize4
	}
	if blockSize == nil {
		r.BlockSize = max(def, p.Bits())
	} else {
		r.BlockSize = *blockSize
	}
	if r.BlockSize < p.Bits() || r.BlockSize > maxBS {
		family := "IPv6"
		if p.Addr().Is4() {
			family = "IPv4"
		}
		return Range{}, invalid("%s.blockSize: %d does not fit the %s subnet %s (want %d..%d)",
			field, r.BlockSize, family, p, p.Bits(), maxBS)
	}
	return r, nil
}

func checkOverlap(sets []RangeSet) error {
	var all []netip.Prefix
	for _, set := range sets {
		for _, r := range set {
			if !r.Delegated {
				all = append(all, r.Subnet)
			}
		}
	}
	// Sorted by address (a containing prefix first), two prefixes overlap
	// only if one contains the other, and then some neighbours overlap
	// too: one pass over neighbours finds an overlap, in O(n log n) for
	// a config with thousands of ranges instead of O(n²).
	slices.SortFunc(all, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	for i := 1; i < len(all); i++ {
		if all[i-1].Overlaps(all[i]) {
			return invalid("ipam.ranges: %s overlaps %s", all[i-1], all[i])
		}
	}
	return nil
}

func (ic *IPAM) hasFamily(v6 bool) bool {
	for _, set := range ic.Ranges {
		if set.Is6() == v6 {
			return true
		}
	}
	return false
}

// PoolKey is the canonical text of the pool definition (range sets and block
// sizes). Two configurations of one network must have the same PoolKey.
func (ic *IPAM) PoolKey() string {
	if ic.PD != nil {
		return fmt.Sprintf("delegated prefix, subnetId %d", ic.PD.SubnetID)
	}
	var b strings.Builder
	for i, set := range ic.Ranges {
		if i > 0 {
			b.WriteString(" ; ")
		}
		for j, r := range set {
			if j > 0 {
				b.WriteString(", ")
			}
			if r.Delegated {
				b.WriteString(r.delegatedKey())
				continue
			}
			fmt.Fprintf(&b, "%s blockSize %d", r.Subnet, r.BlockSize)
		}
	}
	return b.String()
}

func invalid(format string, args ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, args...), "")
}

func decodeError(err error) *types.Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("decode network config: %s: want %s, got JSON %s", te.Field, te.Type, te.Value), "")
	}
	return types.NewError(types.ErrDecodingFailure, "decode network config: "+err.Error(), "")
}

// validCommunity accepts what the BGP speaker announces: RFC 1997
// "ASN:VALUE" with 16-bit parts, or a well-known community name.
func validCommunity(c string) bool {
	switch strings.ToLower(c) {
	case "no-export", "no-advertise", "no-export-subconfed", "blackhole", "graceful-shutdown":
		return true
	}
	a, b, ok := strings.Cut(c, ":")
	if !ok {
		return false
	}
	for _, part := range []string{a, b} {
		n, err := strconv.ParseUint(part, 10, 16)
		if err != nil || strconv.FormatUint(n, 10) != part {
			return false
		}
	}
	return true
}

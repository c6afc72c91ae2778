package ipamconf

import (
	"fmt"
	"net/netip"
)

// This file: range entries taken from the delegated prefix
// ("delegated": true) instead of a configured subnet, so one network can
// give a container a stable (ULA or pool) address and a delegated one.

// rawRange is one entry of ipam.ranges as written.
type rawRange struct {
	Subnet    string   `json:"subnet"`
	BlockSize *int     `json:"blockSize"`
	Exclude   []string `json:"exclude"`
	// Delegated takes the range from the delegated prefix; SubnetID says
	// which slice of it.
	Delegated bool `json:"delegated"`
	SubnetID  *int `json:"subnetId"`
}

// maxDelegatedBlockSize bounds a delegated range's blockSize: a block holds
// its gateway and containers (as for pool ranges, /126 at most).
const maxDelegatedBlockSize = maxBlockSize6

// parseDelegated validates a "delegated": true entry of a range set of
// setLen entries.
func parseDelegated(field string, rr rawRange, setLen int) (Range, error) {
	switch {
	case !rr.Delegated:
		return Range{}, invalid(`%s.subnetId: only with "delegated": true (a pool range has a subnet)`, field)
	case rr.Subnet != "":
		return Range{}, invalid(`%s.subnet: not allowed with "delegated": true (the subnet comes from the delegated prefix)`, field)
	case len(rr.Exclude) != 0:
		return Range{}, invalid(`%s.exclude: not allowed with "delegated": true`, field)
	case rr.SubnetID == nil:
		return Range{}, invalid(`%s.subnetId: missing: "delegated": true needs the slice of the delegated prefix to use, e.g. "subnetId": 1`, field)
	case *rr.SubnetID < 0 || *rr.SubnetID > 0xffff:
		return Range{}, invalid("%s.subnetId: %d is not in 0..65535", field, *rr.SubnetID)
	case setLen > 1:
		// A set falls back from range to range: "pool, else delegated"
		// would leave renumbering without one target per attachment.
		return Range{}, invalid("%s: a delegated range must be alone in its range set", field)
	}
	r := Range{Delegated: true, SubnetID: *rr.SubnetID, Source: SourcePD}
	if rr.BlockSize != nil {
		if bs := *rr.BlockSize; bs < 1 || bs > maxDelegatedBlockSize {
			return Range{}, invalid("%s.blockSize: %d is not in 1..%d", field, bs, maxDelegatedBlockSize)
		}
		r.delegatedBlockSize = *rr.BlockSize
	}
	return r, nil
}

// hasDelegatedRange reports whether raw ranges have a delegated entry.
func hasDelegatedRange(sets [][]rawRange) bool {
	for _, set := range sets {
		for _, rr := range set {
			if rr.Delegated {
				return true
			}
		}
	}
	return false
}

// checkDelegatedSets enforces one delegated range set per network (one
// renumbering target per attachment) and turns the explicit form of
// pd-ipam's shorthand — one set, one delegated entry without blockSize —
// into the shorthand, so both have the same PoolKey and code path.
func checkDelegatedSets(ic *IPAM) error {
	n := 0
	for i, set := range ic.Ranges {
		if set.IsDelegated() {
			if n++; n > 1 {
				return invalid("ipam.ranges[%d]: a second delegated range set; a network has at most one", i)
			}
		}
	}
	if len(ic.Ranges) == 1 && ic.Ranges[0].IsDelegated() && ic.Ranges[0][0].delegatedBlockSize == 0 {
		ic.PD = &PD{SubnetID: ic.Ranges[0][0].SubnetID}
		ic.Ranges = nil
	}
	return nil
}

// IsDelegated reports whether the range set is a delegated range (which is
// alone in its set).
func (rs RangeSet) IsDelegated() bool { return len(rs) == 1 && rs[0].Delegated }

// HasDelegated reports whether the network takes an address from the
// delegated prefix: pd-ipam's subnetId or a delegated range set.
func (ic *IPAM) HasDelegated() bool {
	if ic.PD != nil {
		return true
	}
	for _, set := range ic.Ranges {
		if set.IsDelegated() {
			return true
		}
	}
	return false
}

// DelegatedRange is the range pd-ipam's subnetId stands for.
func DelegatedRange(subnetID int) Range {
	return Range{Delegated: true, SubnetID: subnetID, Source: SourcePD}
}

// ResolveDelegated returns the delegated range r filled from sub, the
// slice of the current delegated prefix it uses: blocks of the configured
// blockSize, else of defaultBlockSize (the PD layout's). It stays marked
// Delegated, so resolving again (the next prefix) starts from the config.
func (r Range) ResolveDelegated(sub netip.Prefix, defaultBlockSize int) Range {
	r.Subnet = sub
	r.BlockSize = defaultBlockSize
	if r.delegatedBlockSize != 0 {
		r.BlockSize = r.delegatedBlockSize
	}
	r.Source = SourcePD
	r.Exclude, r.excl = nil, nil
	return r
}

// delegatedKey is a delegated range's text in PoolKey.
func (r Range) delegatedKey() string {
	if r.delegatedBlockSize != 0 {
		return fmt.Sprintf("delegated subnetId %d blockSize %d", r.SubnetID, r.delegatedBlockSize)
	}
	return fmt.Sprintf("delegated subnetId %d", r.SubnetID)
}

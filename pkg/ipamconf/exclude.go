package ipamconf

import (
	"net/netip"
	"slices"
	"sort"

	"github.com/v6cni/v6cni/pkg/ipmath"
)

// This file: the excluded addresses of a range as merged runs, so that
// searching a range costs a step per run of exclusions, never a step per
// address or per block. A /48 pool of /120 blocks whose first /64 is
// excluded has 2^56 excluded blocks: walking them one by one froze ipamd.

// span is a run of excluded addresses, lo..hi inclusive.
type span struct{ lo, hi netip.Addr }

// mergeExcludes turns prefixes (of one family) into sorted, disjoint runs
// with a gap between any two.
func mergeExcludes(ex []netip.Prefix) []span {
	if len(ex) == 0 {
		return nil
	}
	in := make([]span, 0, len(ex))
	for _, p := range ex {
		in = append(in, span{p.Masked().Addr(), ipmath.Last(p)})
	}
	slices.SortFunc(in, func(x, y span) int { return x.lo.Compare(y.lo) })
	out := in[:1]
	for _, s := range in[1:] {
		cur := &out[len(out)-1]
		if next := cur.hi.Next(); !next.IsValid() || s.lo.Compare(next) <= 0 {
			// Overlapping or adjacent (or cur runs to the end of the
			// address space): one run.
			if s.hi.Compare(cur.hi) > 0 {
				cur.hi = s.hi
			}
			continue
		}
		out = append(out, s)
	}
	return slices.Clip(out)
}

// spans are the range's merged exclusions, computed by Parse once per
// config; a Range built by hand gets them computed per call.
func (r Range) spans() []span {
	if r.excl == nil && len(r.Exclude) > 0 {
		return mergeExcludes(r.Exclude)
	}
	return r.excl
}

// ExcludedThrough reports whether a is excluded and, if it is, the last
// address of the run of exclusions holding it: a search may resume right
// after that address.
func (r Range) ExcludedThrough(a netip.Addr) (netip.Addr, bool) {
	ss := r.spans()
	i := sort.Search(len(ss), func(i int) bool { return ss[i].hi.Compare(a) >= 0 })
	if i < len(ss) && ss[i].lo.Compare(a) <= 0 {
		return ss[i].hi, true
	}
	return netip.Addr{}, false
}

// UsableBlock returns b, or the first block of the range's block size after
// b, that has an address a container may get (a host address of the block
// that no exclusion covers), and false when no such block is left. It
// jumps whole runs of exclusions: the cost is bounded by the number of
// exclusions, whatever the sizes.
func (r Range) UsableBlock(b netip.Prefix) (netip.Prefix, bool) {
	for r.Subnet.Contains(b.Addr()) {
		hi, excluded := r.ExcludedThrough(ipmath.FirstHost(b))
		if !excluded || hi.Compare(ipmath.LastHost(b)) < 0 {
			// The first host, or the one after the run, is free of
			// exclusions (runs are maximal).
			return b, true
		}
		next := hi.Next()
		if !next.IsValid() || !r.Subnet.Contains(next) {
			return netip.Prefix{}, false
		}
		nb := netip.PrefixFrom(next, b.Bits()).Masked()
		if nb == b {
			// The run ends on the block's last address (IPv4 broadcast).
			var ok bool
			if nb, ok = ipmath.NextBlock(b, r.Subnet); !ok {
				return netip.Prefix{}, false
			}
		}
		b = nb
	}
	return netip.Prefix{}, false
}

// FirstUsableBlock is the range's first block with an address a container
// may get, and false when the exclusions leave none.
func (r Range) FirstUsableBlock() (netip.Prefix, bool) {
	return r.UsableBlock(ipmath.FirstBlock(r.Subnet, r.BlockSize))
}

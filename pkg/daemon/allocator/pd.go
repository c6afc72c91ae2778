package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/ipmath"
)

// Delegated is a prefix the node holds by DHCPv6-PD and its lifetimes.
type Delegated struct {
	Prefix netip.Prefix
	// Preferred and Valid are when the lifetimes end (zero: infinite).
	Preferred, Valid time.Time
	// Updated is when the Reply that last carried the prefix arrived: the
	// newest one is the current prefix (see current).
	Updated time.Time
}

// usable reports whether new addresses may come from d at now.
func (d Delegated) usable(now time.Time) bool {
	return d.Preferred.IsZero() || now.Before(d.Preferred)
}

// valid reports whether d still exists at now.
func (d Delegated) valid(now time.Time) bool {
	return d.Valid.IsZero() || now.Before(d.Valid)
}

// PDSource is what the allocator knows of the node's delegated prefixes:
// ipamd's DHCPv6-PD client.
type PDSource interface {
	// Interface is the uplink the prefixes are requested on.
	Interface() string
	// Delegated lists the prefixes held now.
	Delegated() []Delegated
}

// SetPD gives the allocator the node's PD client; pd-ipam networks fail
// with a clear error until it is set.
func (a *Allocator) SetPD(src PDSource) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pd = src
}

// PDLayout is implemented by a PDSource whose delegation several nodes
// share (pdnet's cluster source): a network's slice of the delegated prefix
// is the subnetId-th /subnetLength, and nodes claim blocks of blockSize in
// it. A source without it (node mode) gives one /64 per network, claimed
// whole by the node: 64, 64.
type PDLayout interface {
	PDLayout() (subnetLength, blockSize int)
}

// layout is the PD source's layout (64, 64 without one).
func (a *Allocator) layout() (subnetLength, blockSize int) {
	if l, ok := a.pd.(PDLayout); ok {
		return l.PDLayout()
	}
	return 64, 64
}

// resolveDelegated fills the network's delegated range in place with its
// slice of the current delegated prefix (see PDLayout), leaving pool ranges
// alone; pd-ipam's subnetId is the one-set form. It fails with KindNoPrefix
// while no prefix is held (or it is deprecated), KindInvalid when the
// subnet ID does not fit the prefix or the slice overlaps one of the
// network's pool subnets.
func (a *Allocator) resolveDelegated(conf *ipamconf.NetConf) error {
	if conf.IPAM.PD != nil {
		conf.IPAM.Ranges = []ipamconf.RangeSet{{ipamconf.DelegatedRange(conf.IPAM.PD.SubnetID)}}
	}
	at := slices.IndexFunc(conf.IPAM.Ranges, ipamconf.RangeSet.IsDelegated)
	if at < 0 {
		return nil
	}
	if a.pd == nil {
		return newError(KindNoPrefix, "network %q uses pd-ipam (a delegated range), but this ipamd runs no DHCPv6-PD client (start it with --pd-interface)", conf.Name)
	}
	subnetLength, blockSize := a.layout()
	if subnetLength < 1 || subnetLength > 64 || blockSize < subnetLength || blockSize > 126 {
		return newError(KindInvalid, "delegated prefix layout: subnet length %d, block size %d (want subnet length ..64, block size subnet length..126)", subnetLength, blockSize)
	}
	now := time.Now()
	held := a.pd.Delegated()
	sortCurrentFirst(held, now)
	id := conf.IPAM.Ranges[at][0].SubnetID
	field := "ipam.subnetId"
	if conf.IPAM.PD == nil {
		field = fmt.Sprintf("ipam.ranges[%d][0].subnetId", at)
	}
	var deprecated []string
	for _, d := range held {
		if !d.valid(now) || d.Prefix.Bits() > subnetLength {
			continue
		}
		sub, ok := ipmath.Subnet(d.Prefix, subnetLength, uint64(id))
		if !ok {
			return newError(KindInvalid, "%s: %d does not fit the delegated prefix %s (0..%d)", field, id, d.Prefix, uint64(1)<<(subnetLength-d.Prefix.Bits())-1)
		}
		if !d.usable(now) {
			deprecated = append(deprecated, d.Prefix.String())
			continue
		}
		r := conf.IPAM.Ranges[at][0].ResolveDelegated(sub, blockSize)
		if r.BlockSize < sub.Bits() {
			return newError(KindInvalid, "ipam.ranges[%d][0].blockSize: %d does not fit the delegated slice %s", at, r.BlockSize, sub)
		}
		if conf.IPAM.Addressing == ipamconf.EUI64 && r.BlockSize != 64 {
			return newError(KindInvalid, "delegated blocks of network %q are /%d: addressing %q needs /64 blocks", conf.Name, r.BlockSize, ipamconf.EUI64)
		}
		for _, set := range conf.IPAM.Ranges {
			for _, pr := range set {
				if !pr.Delegated && pr.Subnet.Overlaps(sub) {
					return newError(KindInvalid, "network %q: the delegated prefix %s (%s %d: %s) overlaps the pool subnet %s of ipam.ranges", conf.Name, d.Prefix, field, id, sub, pr.Subnet).
						withDetails("use a pool subnet outside the delegated prefix")
				}
			}
		}
		conf.IPAM.Ranges[at][0] = r
		return nil
	}
	if len(deprecated) > 0 {
		return newError(KindNoPrefix, "delegated prefix %v on %s is past its preferred lifetime: no new addresses from it", deprecated, a.pd.Interface())
	}
	msg := fmt.Sprintf("waiting for a delegated prefix on %s", a.pd.Interface())
	if e, ok := a.pd.(interface{ Err() error }); ok && e.Err() != nil {
		msg += fmt.Sprintf(" (the DHCPv6-PD client stopped: %v)", e.Err())
	}
	return &Error{Kind: KindNoPrefix, Msg: msg}
}

// Current is the current prefix of held at now (see sortCurrentFirst), and
// false when no prefix is usable: what renumbering moves attachments to.
func Current(held []Delegated, now time.Time) (Delegated, bool) {
	held = slices.Clone(held)
	sortCurrentFirst(held, now)
	if len(held) == 0 || !held[0].valid(now) || !held[0].usable(now) {
		return Delegated{}, false
	}
	return held[0], true
}

// sortCurrentFirst orders held prefixes so that the current one — where new
// addresses come from — is first: usable prefixes before the others, among
// them the one of the newest Reply, ties broken by the longest preferred
// lifetime left (then by address, to stay deterministic). After a Rebind
// that brought a new prefix beside the old one, the new one is current
// whatever the addresses. The rest follow in address order.
func sortCurrentFirst(held []Delegated, now time.Time) {
	slices.SortStableFunc(held, func(x, y Delegated) int {
		xu, yu := x.valid(now) && x.usable(now), y.valid(now) && y.usable(now)
		switch {
		case xu && !yu:
			return -1
		case yu && !xu:
			return 1
		case xu && yu:
			if c := y.Updated.Compare(x.Updated); c != 0 {
				return c
			}
			if c := preferredCompare(y.Preferred, x.Preferred); c != 0 {
				return c
			}
		}
		return x.Prefix.Addr().Compare(y.Prefix.Addr())
	})
}

// preferredCompare orders preferred-lifetime ends, zero (infinite) last.
func preferredCompare(x, y time.Time) int {
	switch {
	case x.IsZero() && y.IsZero():
		return 0
	case x.IsZero():
		return 1
	case y.IsZero():
		return -1
	}
	return x.Compare(y)
}

// DropPrefix handles a delegated prefix whose valid lifetime ended: its
// blocks go and their addresses are released. An attachment renumbered to
// a successor (Renumber) just loses its old address; one without a
// successor is marked lost (CHECK fails, STATUS says 51). It returns the released blocks, whose
// gateways and announcements the caller removes.
func (a *Allocator) DropPrefix(ctx context.Context, prefix netip.Prefix) ([]store.Block, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var dropped []store.Block
	var errs []error
	for cidr, b := range a.blocks {
		if b.Source != ipamconf.SourcePD || !prefix.Overlaps(cidr) {
			continue
		}
		held, err := a.store.AddrsIn(ctx, cidr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		seen := map[store.AttachmentID]bool{}
		moved := 0
		for _, id := range held {
			if seen[id] {
				continue
			}
			seen[id] = true
			// Renumbered: the successor stays, the old address goes.
			replaced, err := a.store.DropReplaced(ctx, id, cidr)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if replaced {
				moved++
				continue
			}
			if err := a.store.MarkLost(ctx, id, cidr); err != nil {
				errs = append(errs, err)
			}
		}
		if err := a.store.ReleaseBlock(ctx, cidr); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(a.blocks, cidr)
		a.notify()
		// A warning only when attachments lost their address; a block whose
		// attachments all moved to the successor prefix is renumbering done.
		level := slog.LevelInfo
		if len(seen) > moved {
			level = slog.LevelWarn
		}
		a.log.Log(ctx, level, "delegated prefix expired: block dropped", "block", cidr, "network", b.Network,
			"attachments", len(seen), "renumbered", moved, "lost", len(seen)-moved)
		dropped = append(dropped, b.Block)
	}
	return dropped, errors.Join(errs...)
}

// lostIn counts this node's attachments of the network marked lost.
func (a *Allocator) lostIn(ctx context.Context, network string) (int, error) {
	hs, err := a.store.Handles(ctx, network)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hs {
		if h.Node == a.node && h.Lost {
			n++
		}
	}
	return n, nil
}

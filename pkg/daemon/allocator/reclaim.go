package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// This file: giving back what is no longer used — stale attachments (GC,
// netns gone), sticky addresses whose pod did not return, empty blocks.

// GC releases this node's attachments of the network that are not in valid,
// and keeps going past errors, returning them all.
func (a *Allocator) GC(ctx context.Context, network string, valid []store.AttachmentID) ([]store.Handle, error) {
	keep := make(map[store.AttachmentID]bool, len(valid))
	for _, id := range valid {
		keep[store.AttachmentID{Network: network, ContainerID: id.ContainerID, IfName: id.IfName}] = true
	}
	return a.releaseWhere(ctx, network, func(h store.Handle) bool { return !keep[h.AttachmentID] })
}

// releaseWhere releases this node's attachments of network (all networks
// if "") for which stale holds, as a DEL would, and keeps going past
// errors, returning them all.
func (a *Allocator) releaseWhere(ctx context.Context, network string, stale func(store.Handle) bool) ([]store.Handle, error) {
	handles, err := a.store.Handles(ctx, network)
	if err != nil {
		return nil, err
	}
	var released []store.Handle
	var errs []error
	for _, h := range handles {
		if h.Node != a.node || !stale(h) {
			continue
		}
		if _, err := a.Del(ctx, h.AttachmentID, 0); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, h)
	}
	return released, errors.Join(errs...)
}

// unstick gives the pod's kept addresses to its new attachment, when they
// are on this node and not expired.
func (a *Allocator) unstick(ctx context.Context, h store.Handle, conf *ipamconf.NetConf) (*Assignment, bool, error) {
	st, err := a.store.StickyFor(ctx, h.Network, h.Pod, h.IfName)
	if err != nil || st == nil {
		return nil, false, err
	}
	if st.Node != a.node || time.Now().After(st.Expires) || !a.stickyFits(st, conf) {
		// The pod came back but cannot use the record: its addresses are
		// in another node's blocks (blocks are per node), expired, or do
		// not fit the ranges. The pod gets new addresses, so the old ones
		// are released now rather than held for a pod that is back.
		if err := a.store.ReleaseSticky(ctx, *st); err != nil && !errors.Is(err, store.ErrExists) {
			return nil, false, err
		}
		if st.Node == a.node {
			a.mu.Lock()
			a.forget(&store.Handle{IPs: st.IPs})
			a.unkeep(st.IPs)
			a.mu.Unlock()
		}
		a.log.Info("sticky addresses released: not usable here", "pod", h.Pod, "network", h.Network, "recordNode", st.Node, "node", a.node)
		return nil, false, nil
	}
	h.IPs = st.IPs
	err = a.store.Unstick(ctx, *st, h)
	if errors.Is(err, store.ErrExists) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	a.mu.Lock()
	a.unkeep(st.IPs)
	a.mu.Unlock()
	a.log.Info("sticky addresses reused", "pod", h.Pod, "network", h.Network, "container", h.ContainerID)
	return assignment(&h, conf), true, nil
}

// stickyFits reports whether a record's addresses fit the network now: one
// per range set. A delegated range (pd-ipam's one range) is only filled in
// when the addresses are picked (resolveDelegated), so there the record's
// address must lie in a delegated prefix still usable for new attachments.
func (a *Allocator) stickyFits(st *store.Sticky, conf *ipamconf.NetConf) bool {
	if !conf.IPAM.HasDelegated() {
		return len(st.IPs) == len(conf.IPAM.Ranges)
	}
	sets := conf.IPAM.Ranges
	if conf.IPAM.PD != nil {
		sets = []ipamconf.RangeSet{{ipamconf.DelegatedRange(conf.IPAM.PD.SubnetID)}}
	}
	if len(st.IPs) != len(sets) {
		return false
	}
	a.mu.Lock()
	src := a.pd
	a.mu.Unlock()
	if src == nil {
		return false
	}
	now := time.Now()
	held := src.Delegated()
	for i, set := range sets {
		if !set.IsDelegated() {
			continue
		}
		if !slices.ContainsFunc(held, func(d Delegated) bool {
			return d.valid(now) && d.usable(now) && d.Prefix.Contains(st.IPs[i].Address.Addr())
		}) {
			return false
		}
	}
	return true
}

// ExpireSticky releases this node's sticky addresses whose pod did not come
// back in time.
func (a *Allocator) ExpireSticky(ctx context.Context) ([]store.Sticky, error) {
	all, err := a.store.Stickies(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var expired []store.Sticky
	var errs []error
	for _, st := range all {
		if st.Node != a.node || time.Now().Before(st.Expires) {
			continue
		}
		if err := a.store.ReleaseSticky(ctx, st); errors.Is(err, store.ErrExists) {
			// Replaced since read: its replacement released these
			// addresses, and the new record is not expired.
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		a.forget(&store.Handle{IPs: st.IPs})
		a.unkeep(st.IPs)
		expired = append(expired, st)
	}
	if err := a.forgetReleasedKept(ctx, all); err != nil {
		errs = append(errs, err)
	}
	return expired, errors.Join(errs...)
}

// unkeep drops addresses from a.kept; a.mu is held.
func (a *Allocator) unkeep(ips []store.IP) {
	for _, ip := range ips {
		delete(a.kept, ip.Address.Addr())
	}
}

// forgetReleasedKept lets the cache forget kept addresses that no sticky
// record lists any more and that etcd no longer holds: another node
// released (or replaced) their record. Safe against double use: while an
// address is in the cache no ADD on this node picks it, so one free in
// etcd is not in flight here. a.mu is held.
func (a *Allocator) forgetReleasedKept(ctx context.Context, records []store.Sticky) error {
	listed := map[netip.Addr]bool{}
	for _, st := range records {
		for _, ip := range st.IPs {
			listed[ip.Address.Addr()] = true
		}
	}
	for addr, ip := range a.kept {
		if listed[addr] {
			continue
		}
		held, err := a.store.AddrsIn(ctx, netip.PrefixFrom(addr, addr.BitLen()))
		if err != nil {
			return err
		}
		if _, ok := held[addr]; !ok {
			a.forget(&store.Handle{IPs: []store.IP{ip}})
			delete(a.kept, addr)
		}
	}
	return nil
}

// ReleaseEmptyBlocks gives back to the pool the blocks of this node that
// have been empty for grace, keeping the lowest block of each network and
// range (the node will need one again soon; the gateway stays stable).
//
// unconfigure (if not nil) removes what the node configured for a block
// (its gateway address on the bridge) and runs before the block is
// released, under the node lock: an ADD cannot re-claim the block until
// both are done, so its container's gateway, which bridge-v6 adds on ADD,
// is never removed after it was (re)added. A block whose unconfigure fails
// is kept for the next round.
func (a *Allocator) ReleaseEmptyBlocks(ctx context.Context, grace time.Duration, unconfigure func(netip.Prefix) error) ([]store.Block, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	type key struct {
		network string
		subnet  netip.Prefix
	}
	lowest := map[key]netip.Prefix{}
	for _, b := range a.blocks {
		k := key{b.Network, b.Subnet}
		if cur, ok := lowest[k]; !ok || b.CIDR.Addr().Less(cur.Addr()) {
			lowest[k] = b.CIDR
		}
	}
	var released []store.Block
	var errs []error
	for cidr, b := range a.blocks {
		if lowest[key{b.Network, b.Subnet}] == cidr || b.used == nil || len(b.used) > 0 ||
			b.emptySince.IsZero() || time.Since(b.emptySince) < grace {
			continue
		}
		if unconfigure != nil {
			if err := unconfigure(cidr); err != nil {
				errs = append(errs, fmt.Errorf("release block %s: %w", cidr, err))
				continue
			}
		}
		if err := a.store.ReleaseBlock(ctx, cidr); err != nil {
			// Still this node's: the next ADD in it puts the gateway
			// back (bridge-v6 adds it on every ADD).
			errs = append(errs, err)
			continue
		}
		delete(a.blocks, cidr)
		a.notify()
		a.log.Info("released empty block", "block", cidr, "network", b.Network, "node", a.node)
		released = append(released, b.Block)
	}
	err := errors.Join(errs...)
	a.signalFenced(err)
	return released, err
}

// Reclaim releases this node's attachments, of every network, whose network
// namespace no longer exists (the runtime never sent DEL: a crash, a
// reboot) and that are older than grace. It touches nothing it cannot prove
// stale: an attachment without a recorded netns is kept.
//
// Orphans (attachments that lost their addresses with a removal of the
// node) whose netns is gone are forgotten too: their DEL will not come.
func (a *Allocator) Reclaim(ctx context.Context, grace time.Duration, netnsExists func(string) bool) ([]store.Handle, error) {
	for _, h := range a.Orphans().Handles {
		if h.Netns != "" && !netnsExists(h.Netns) {
			a.dropOrphan(h.AttachmentID)
			a.log.Info("attachment that lost its addresses is gone (netns gone)", "attachment", h.AttachmentID, "pod", h.Pod, "node", a.node)
		}
	}
	return a.releaseWhere(ctx, "", func(h store.Handle) bool {
		return h.Netns != "" && time.Since(h.Created) >= grace && !netnsExists(h.Netns)
	})
}

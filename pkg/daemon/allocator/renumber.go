package allocator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// This file: renumbering this node's attachments from a delegated prefix
// to its successor, make-before-break (docs/design/pd-ha-renumbering.md
// §3.1–3.2). Renumber claims successor blocks and records a second address
// per attachment; the netns workers (pkg/daemon/renumber) put it in the
// containers; DropPrefix removes the old one at the old prefix's valid end.

// Move is one attachment's renumbering: what a netns worker needs to give
// the container its new address and deprecate the old one.
type Move struct {
	ID store.AttachmentID
	// Netns and IfName locate the container's interface; MAC is the one
	// recorded at ADD (nil if none was): the worker checks it before
	// touching a netns whose path may have been reused.
	Netns, IfName string
	MAC           net.HardwareAddr
	// Old and New are the addresses with their prefix lengths.
	Old, New               netip.Prefix
	OldGateway, NewGateway netip.Addr
	// OldValidUntil is when the old address goes (zero: not known).
	OldValidUntil time.Time
	// Mode is the attachment's ipv6Mode: static (bridge-v6 sets the
	// addresses), slaac, dhcpv6-stateless or dhcpv6-stateful.
	Mode string
}

// Renumber moves this node's attachments with an address in old to new:
//
//  1. each of this node's pd blocks in old gets a successor block at the
//     same offset in new (claimed as any block, source pd; when another
//     node has it, any free block of the slice), whose gateway goes on the
//     interface carrying the old block's gateway, and the BGP speaker is
//     told (BlocksChanged);
//  2. each attachment gets, in one fenced transaction, the new address
//     (successor block | the old interface ID; another free address of the
//     block if that one is taken), the old one marked deprecated until
//     old's valid end.
//
// It returns a Move per attachment renumbered from old, including those a
// previous call already recorded (the netns work is idempotent), so it can
// be called again after a restart or a failure. Errors of single blocks or
// attachments are joined; what succeeded is returned.
func (a *Allocator) Renumber(ctx context.Context, old, new netip.Prefix) ([]Move, error) {
	old, new = old.Masked(), new.Masked()
	if old.Overlaps(new) || !old.Addr().Is6() || !new.Addr().Is6() {
		return nil, fmt.Errorf("renumber %s to %s: not two disjoint IPv6 prefixes", old, new)
	}
	a.epochMu.RLock()
	defer a.epochMu.RUnlock()
	handles, err := a.store.Handles(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("renumber %s to %s: %w", old, new, err)
	}
	handles = slices.DeleteFunc(handles, func(h store.Handle) bool { return h.Node != a.node || h.Lost })
	validUntil := a.validUntil(old)

	succ, errs := a.successorBlocks(ctx, old, new, handles)
	var moves []Move
	for i := range handles {
		h := &handles[i]
		for _, ip := range h.IPs {
			addr := ip.Address.Addr()
			if !old.Contains(addr) || ip.Replaces.IsValid() {
				continue
			}
			if next, ok := h.Successor(addr); ok {
				moves = append(moves, moveOf(h, ip, next))
				continue
			}
			nb, ok := succ[ip.Block.Masked()]
			if !ok {
				continue // its block has no successor: an error said why
			}
			m, err := a.renumberOne(ctx, h, ip, nb, validUntil)
			if err != nil {
				errs = append(errs, a.noteFenced(err))
				continue
			}
			if m != nil {
				moves = append(moves, *m)
			}
		}
	}
	if len(moves) > 0 {
		a.log.Info("renumbered attachments", "from", old, "to", new, "attachments", len(moves), "node", a.node)
	}
	return moves, errors.Join(errs...)
}

// validUntil is when prefix p's valid lifetime ends, by the PD source
// (now if it no longer lists p: the server took it back).
func (a *Allocator) validUntil(p netip.Prefix) time.Time {
	a.mu.Lock()
	src := a.pd
	a.mu.Unlock()
	if src == nil {
		return time.Time{}
	}
	for _, d := range src.Delegated() {
		if d.Prefix.Masked() == p {
			return d.Valid
		}
	}
	return time.Now()
}

// successorBlocks maps each of this node's pd blocks in old to its
// successor block in new, claiming those it lacks. A successor recorded in
// a handle wins (a previous call's choice, possibly a fallback block);
// then the block at the same offset; then any free block of the slice.
// Offsets are tried for every block before any fallback is claimed, so a
// fallback never takes another block's offset.
func (a *Allocator) successorBlocks(ctx context.Context, old, new netip.Prefix, handles []store.Handle) (map[netip.Prefix]netip.Prefix, []error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var olds []*block
	for _, b := range a.blocks {
		if b.Source == ipamconf.SourcePD && old.Contains(b.CIDR.Addr()) {
			olds = append(olds, b)
		}
	}
	slices.SortFunc(olds, func(x, y *block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
	succ := map[netip.Prefix]netip.Prefix{}
	taken := map[netip.Prefix]bool{}
	for _, h := range handles {
		for _, ip := range h.IPs {
			if !ip.Replaces.IsValid() || !old.Contains(ip.Replaces) || a.blocks[ip.Block.Masked()] == nil {
				continue
			}
			for _, b := range olds {
				if b.CIDR.Contains(ip.Replaces) {
					succ[b.CIDR] = ip.Block.Masked()
					taken[ip.Block.Masked()] = true
				}
			}
		}
	}
	var errs []error
	var fallback []*block
	for _, b := range olds {
		if _, ok := succ[b.CIDR]; ok {
			continue
		}
		r, cidr, err := successorRange(b, old, new)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if mine := a.blocks[cidr]; mine != nil {
			if mine.Network != b.Network || taken[cidr] {
				fallback = append(fallback, b)
				continue
			}
			succ[b.CIDR], taken[cidr] = cidr, true
			continue
		}
		nb, err := a.claimBlockAt(ctx, b.Network, r, cidr)
		if errors.Is(err, store.ErrExists) {
			fallback = append(fallback, b)
			continue
		}
		if err != nil {
			errs = append(errs, a.noteFenced(err))
			continue
		}
		succ[b.CIDR], taken[nb.CIDR] = nb.CIDR, true
	}
	for _, b := range fallback {
		r, _, err := successorRange(b, old, new)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		nb, err := a.claimBlock(ctx, b.Network, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("successor of block %s in %s: %w", b.CIDR, r.Subnet, a.noteFenced(err)))
			continue
		}
		a.log.Info("successor block at its offset taken: another one claimed", "block", b.CIDR, "successor", nb.CIDR)
		succ[b.CIDR], taken[nb.CIDR] = nb.CIDR, true
	}
	for from, to := range succ {
		if a.gateways == nil {
			break
		}
		if err := a.gateways(from, to); err != nil {
			errs = append(errs, fmt.Errorf("gateway of successor block %s: %w", to, err))
		}
	}
	return succ, errs
}

// successorRange is the range a successor of block b is claimed from (b's
// slice of old moved to the same offset in new) and the block at b's
// offset in it.
func successorRange(b *block, old, new netip.Prefix) (ipamconf.Range, netip.Prefix, error) {
	sub, ok := rebasePrefix(b.Subnet, old, new)
	if !ok {
		return ipamconf.Range{}, netip.Prefix{}, fmt.Errorf("block %s: its slice %s of %s has no place in %s", b.CIDR, b.Subnet, old, new)
	}
	cidr, ok := rebasePrefix(b.CIDR, old, new)
	if !ok {
		return ipamconf.Range{}, netip.Prefix{}, fmt.Errorf("block %s has no place in %s", b.CIDR, new)
	}
	return ipamconf.Range{Subnet: sub, BlockSize: b.CIDR.Bits(), Source: ipamconf.SourcePD}, cidr, nil
}

// claimBlockAt claims exactly cidr of range r for this node (a.mu held);
// ErrExists when another node has it.
func (a *Allocator) claimBlockAt(ctx context.Context, network string, r ipamconf.Range, cidr netip.Prefix) (*block, error) {
	b := store.Block{
		CIDR: cidr, Node: a.node, Network: network, Subnet: r.Subnet,
		Source: sourceOf(r), Claimed: time.Now().UTC(),
	}
	if err := a.store.ClaimBlock(ctx, b); err != nil {
		return nil, err
	}
	a.log.Info("claimed block", "block", cidr, "network", network, "node", a.node, "for", "renumbering")
	a.notify()
	nb := a.newBlock(b)
	a.blocks[cidr] = nb
	return nb, nil
}

// maxRenumberTries bounds the new addresses tried for one attachment when
// etcd says the picked one is taken.
const maxRenumberTries = 8

// renumberOne records the successor of ip (an address of h) in block nb.
func (a *Allocator) renumberOne(ctx context.Context, h *store.Handle, ip store.IP, nb netip.Prefix, validUntil time.Time) (*Move, error) {
	want, _ := rebase(ip.Address.Addr(), ip.Block, nb)
	for try := 0; try < maxRenumberTries; try++ {
		next, err := a.reserveSuccessor(ctx, nb, want)
		if err != nil {
			return nil, fmt.Errorf("renumber %s: %w", h.AttachmentID, err)
		}
		stored, err := a.store.AddSuccessor(ctx, h.AttachmentID, a.node, ip.Address.Addr(), next, validUntil)
		var taken *store.AddrTakenError
		switch {
		case err == nil:
			got, _ := stored.Successor(ip.Address.Addr())
			if got.Address != next.Address {
				a.unreserve([]store.IP{next}) // recorded by an earlier call
			}
			oldIP := ip
			if i := slices.IndexFunc(stored.IPs, func(x store.IP) bool { return x.Address == ip.Address }); i >= 0 {
				oldIP = stored.IPs[i]
			}
			m := moveOf(stored, oldIP, got)
			return &m, nil
		case errors.As(err, &taken):
			a.mu.Lock()
			a.markUsed(taken.Addr)
			a.mu.Unlock()
			want = netip.Addr{} // its interface ID is not to be had
		case errors.Is(err, store.ErrGone):
			a.unreserve([]store.IP{next})
			return nil, nil // deleted meanwhile
		default:
			a.unreserve([]store.IP{next})
			return nil, err
		}
	}
	return nil, fmt.Errorf("renumber %s: no free address in %s after %d tries", h.AttachmentID, nb, maxRenumberTries)
}

// reserveSuccessor marks an address of block cidr used in the cache: want
// if free (the old interface ID), else the next free one.
func (a *Allocator) reserveSuccessor(ctx context.Context, cidr netip.Prefix, want netip.Addr) (store.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.blocks[cidr]
	if b == nil {
		return store.IP{}, fmt.Errorf("successor block %s is no longer this node's", cidr)
	}
	if err := a.loadUsed(ctx, b); err != nil {
		return store.IP{}, err
	}
	r := ipamconf.Range{Subnet: b.Subnet, BlockSize: b.CIDR.Bits(), Source: ipamconf.SourcePD}
	addr := want
	if !addr.IsValid() || !b.free(r, addr) {
		var ok bool
		var err error
		if addr, ok, err = b.nextSequential(r); err != nil || !ok {
			return store.IP{}, fmt.Errorf("successor block %s is full", cidr)
		}
	}
	b.take(addr)
	return ipIn(b, addr), nil
}

func moveOf(h *store.Handle, old, next store.IP) Move {
	m := Move{
		ID: h.AttachmentID, Netns: h.Netns, IfName: h.IfName,
		Old: old.Address, New: next.Address, OldGateway: old.Gateway, NewGateway: next.Gateway,
		OldValidUntil: old.ValidUntil, Mode: h.Mode,
	}
	if m.Mode == "" {
		m.Mode = "static"
	}
	if mac, err := net.ParseMAC(h.MAC); err == nil {
		m.MAC = mac
	}
	return m
}

// PendingRenumbers re-derives, at start, the renumberings a previous run
// (or another leader's Reply) left unfinished: every valid delegated
// prefix other than the current one that still holds blocks of this node
// is renumbered to the current prefix (Renumber is idempotent: moves
// already recorded come back for the netns workers, the others are
// recorded now).
func (a *Allocator) PendingRenumbers(ctx context.Context) ([]Move, error) {
	a.mu.Lock()
	src := a.pd
	var mine []netip.Prefix
	for _, b := range a.blocks {
		if b.Source == ipamconf.SourcePD {
			mine = append(mine, b.CIDR)
		}
	}
	a.mu.Unlock()
	if src == nil {
		return nil, nil
	}
	now := time.Now()
	held := src.Delegated()
	sortCurrentFirst(held, now)
	if len(held) == 0 || !held[0].valid(now) || !held[0].usable(now) {
		return nil, nil // nothing to move to
	}
	current := held[0].Prefix.Masked()
	var moves []Move
	var errs []error
	for _, d := range held[1:] {
		p := d.Prefix.Masked()
		if !d.valid(now) || p.Overlaps(current) || !slices.ContainsFunc(mine, func(b netip.Prefix) bool { return p.Contains(b.Addr()) }) {
			continue
		}
		m, err := a.Renumber(ctx, p, current)
		moves = append(moves, m...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return moves, errors.Join(errs...)
}

// rebasePrefix moves p (inside from) to the same offset inside to.
func rebasePrefix(p, from, to netip.Prefix) (netip.Prefix, bool) {
	if p.Bits() < to.Bits() || !from.Contains(p.Addr()) {
		return netip.Prefix{}, false
	}
	a, ok := rebase(p.Masked().Addr(), from, to)
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, p.Bits()), true
}

// rebase moves address a (inside from) to the same offset inside to: the
// bits of a past from's length, under to's network bits. False when the
// offset does not fit in to.
func rebase(a netip.Addr, from, to netip.Prefix) (netip.Addr, bool) {
	ah, al := words(a)
	fh, fl := hostMask(from.Bits())
	oh, ol := ah&fh, al&fl
	th, tl := hostMask(to.Bits())
	if oh&^th != 0 || ol&^tl != 0 {
		return netip.Addr{}, false
	}
	nh, nl := words(to.Masked().Addr())
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], nh|oh)
	binary.BigEndian.PutUint64(b[8:], nl|ol)
	return netip.AddrFrom16(b), true
}

func words(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// hostMask is the mask of the host bits of an IPv6 prefix of length bits.
func hostMask(bits int) (hi, lo uint64) {
	switch host := 128 - bits; {
	case host >= 128:
		return ^uint64(0), ^uint64(0)
	case host >= 64:
		return uint64(1)<<(host-64) - 1, ^uint64(0)
	default:
		return 0, uint64(1)<<host - 1
	}
}

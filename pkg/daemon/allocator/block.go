package allocator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/ipmath"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// This file: picking addresses inside this node's blocks and claiming
// new blocks.

// block is one of this node's blocks and what is taken in it.
type block struct {
	store.Block
	// used is loaded from etcd the first time the block is allocated from.
	used map[netip.Addr]struct{}
	// next is where the sequential search resumes: freed addresses are
	// reused only after the cursor wraps, so a stale neighbour entry of a
	// deleted container does not point at a new one at once.
	next netip.Addr
	// emptySince is when the block last became empty (zero while in use).
	emptySince time.Time
}

// pick finds a free address for the network in one range set: in a block
// this node owns, else in a block it claims now.
func (a *Allocator) pick(ctx context.Context, req *Request, set ipamconf.RangeSet) (store.IP, error) {
	network := req.ID.Network
	for _, r := range set {
		for _, b := range a.blocksOf(network, r) {
			addr, ok, err := a.freeIn(ctx, b, r, req)
			if err != nil {
				return store.IP{}, err
			}
			if ok {
				return ipIn(b, addr), nil
			}
		}
	}
	for _, r := range set {
		// A block claimed anew can be full at once: after a removal of
		// this node, the addresses its orphans still use count as taken.
		for {
			b, err := a.claimBlock(ctx, network, r)
			if errors.Is(err, errRangeFull) {
				break
			}
			if err != nil {
				return store.IP{}, err
			}
			addr, ok, err := a.freeIn(ctx, b, r, req)
			if err != nil {
				return store.IP{}, err
			}
			if ok {
				return ipIn(b, addr), nil
			}
			if uint64(len(b.used)) < hostCount(b.CIDR) {
				break // free addresses, none for this request (eui64)
			}
		}
	}
	return store.IP{}, newError(KindExhausted, "no address available in pool %s for network %q", subnetsOf(set), network)
}

func ipIn(b *block, addr netip.Addr) store.IP {
	return store.IP{
		Address: netip.PrefixFrom(addr, b.CIDR.Bits()),
		Gateway: ipmath.Gateway(b.CIDR),
		Block:   b.CIDR,
	}
}

// blocksOf lists this node's blocks of the network cut from range r, in
// address order so allocation is deterministic.
func (a *Allocator) blocksOf(network string, r ipamconf.Range) []*block {
	var out []*block
	for _, b := range a.blocks {
		if b.Network == network && b.CIDR.Bits() == r.BlockSize && r.Subnet.Contains(b.CIDR.Addr()) {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(x, y *block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
	return out
}

var errRangeFull = errors.New("no free block")

func sourceOf(r ipamconf.Range) string {
	if r.Source == "" {
		return ipamconf.SourcePool
	}
	return r.Source
}

// claimSpreadMax bounds how far past the first unclaimed block a claim
// that lost races jumps (in unclaimed blocks).
const claimSpreadMax = 1024

// claimBlock claims the first unclaimed block of range r for this node.
//
// Nodes that claim at the same time (a cluster starting) all see the same
// first unclaimed block: walking on in the same order after a lost race,
// they would move in a convoy where every step costs each of them an etcd
// write and only one wins (k claimers: k² writes; 1,000 nodes starting
// timed out in bench/clusterbench). So after a lost race a claim skips a
// random number of unclaimed blocks, within a window that doubles with
// every loss: without contention the first unclaimed block is taken as
// before; under contention the claimers scatter.
func (a *Allocator) claimBlock(ctx context.Context, network string, r ipamconf.Range) (*block, error) {
	claimed, err := a.claimedBlocks(ctx)
	if err != nil {
		return nil, err
	}
	spread, skip := 8, 0
	for {
		skipped := false
		for cand, ok := r.FirstUsableBlock(); ok; cand, ok = nextUsableBlock(r, cand) {
			if claimed[cand] {
				continue
			}
			if skip > 0 {
				skip, skipped = skip-1, true
				continue
			}
			// A lost race costs an etcd round trip: stop at the deadline.
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("claim a block of %s: %w", r.Subnet, err)
			}
			b := store.Block{
				CIDR: cand, Node: a.node, Network: network, Subnet: r.Subnet,
				Source: sourceOf(r), Claimed: time.Now().UTC(),
			}
			err := a.store.ClaimBlock(ctx, b)
			if errors.Is(err, store.ErrExists) {
				// Another node won it: scatter (see above).
				claimed[cand] = true
				skip, spread = rand.IntN(spread), min(2*spread, claimSpreadMax)
				continue
			}
			if err != nil {
				return nil, err
			}
			a.log.Info("claimed block", "block", cand, "network", network, "node", a.node)
			a.notify()
			nb := a.newBlock(b)
			a.blocks[cand] = nb
			return nb, nil
		}
		// Blocks skipped and none won after them: walk again from the
		// first unclaimed one. Every walk tries at least one block and
		// marks it lost in claimed, so the walks end.
		if !skipped {
			break
		}
		skip = 0
	}
	return nil, errRangeFull
}

// claimedBlocks is the set of blocks claimed by any node.
func (a *Allocator) claimedBlocks(ctx context.Context) (map[netip.Prefix]bool, error) {
	all, err := a.store.Blocks(ctx)
	if err != nil {
		return nil, err
	}
	claimed := make(map[netip.Prefix]bool, len(all))
	for _, b := range all {
		claimed[b.CIDR] = true
	}
	return claimed, nil
}

// firstUnclaimed is the first usable block of r no node has claimed. The
// search takes a step per claimed block and per run of exclusions: both
// are few, whatever the size of the range.
func firstUnclaimed(r ipamconf.Range, claimed map[netip.Prefix]bool) (netip.Prefix, bool) {
	cand, ok := r.FirstUsableBlock()
	for ok && claimed[cand] {
		cand, ok = nextUsableBlock(r, cand)
	}
	return cand, ok
}

// nextUsableBlock is the first block after b with an address a container
// may get.
func nextUsableBlock(r ipamconf.Range, b netip.Prefix) (netip.Prefix, bool) {
	next, ok := ipmath.NextBlock(b, r.Subnet)
	if !ok {
		return netip.Prefix{}, false
	}
	return r.UsableBlock(next)
}

func (a *Allocator) loadUsed(ctx context.Context, b *block) error {
	if b.used != nil {
		return nil
	}
	held, err := a.store.AddrsIn(ctx, b.CIDR)
	if err != nil {
		return err
	}
	b.used = make(map[netip.Addr]struct{}, len(held))
	for addr := range held {
		b.used[addr] = struct{}{}
	}
	if len(b.used) == 0 {
		b.emptySince = time.Now()
	}
	return nil
}

// free reports whether a container may get c in block b of range r now.
func (b *block) free(r ipamconf.Range, c netip.Addr) bool {
	if !ipmath.IsHost(b.CIDR, c) {
		return false
	}
	if _, taken := b.used[c]; taken {
		return false
	}
	_, excluded := r.ExcludedThrough(c)
	return !excluded
}

// maxStableTries bounds the rehashes of stable addressing before it falls
// back to the sequential search.
const maxStableTries = 16

// freeIn finds a free address of b (of range r) for the request, by the
// network's addressing mode.
func (a *Allocator) freeIn(ctx context.Context, b *block, r ipamconf.Range, req *Request) (netip.Addr, bool, error) {
	if err := a.loadUsed(ctx, b); err != nil {
		return netip.Addr{}, false, err
	}
	if uint64(len(b.used)) >= hostCount(b.CIDR) {
		return netip.Addr{}, false, nil
	}
	switch req.Conf.IPAM.Addressing {
	case ipamconf.EUI64:
		if b.CIDR.Addr().Is6() {
			if len(req.MAC) != 6 {
				return netip.Addr{}, false, newError(KindInvalid, "addressing %q: no container MAC known for %s", ipamconf.EUI64, req.ID)
			}
			c := macaddr.EUI64(b.CIDR, req.MAC)
			if !b.free(r, c) {
				return netip.Addr{}, false, newError(KindTaken, "EUI-64 address %s of MAC %s is taken in block %s", c, req.MAC, b.CIDR).
					withDetails("another attachment has the same MAC")
			}
			return c, true, nil
		}
	case ipamconf.Stable:
		for i := range maxStableTries {
			c := ipmath.Stable(b.CIDR, fmt.Sprintf("%s|%d", req.ID, i))
			if b.free(r, c) {
				return c, true, nil
			}
		}
	}
	return b.nextSequential(r)
}

// nextSequential finds the next free address after the block's cursor,
// jumping over excluded prefixes.
func (b *block) nextSequential(r ipamconf.Range) (netip.Addr, bool, error) {
	first, last := ipmath.FirstHost(b.CIDR), ipmath.LastHost(b.CIDR)
	c := b.next
	if !ipmath.IsHost(b.CIDR, c) {
		c = first
	}
	advance := func(c netip.Addr) netip.Addr {
		if c == last {
			return first
		}
		return c.Next()
	}
	// Each step visits a new address or jumps a run of exclusions: past
	// this many steps every address has been seen.
	for range len(b.used) + 2*len(r.Exclude) + 2 {
		if end, ok := r.ExcludedThrough(c); ok {
			if !b.CIDR.Contains(end) || end.Compare(last) >= 0 {
				c = first
			} else {
				c = end.Next()
			}
			continue
		}
		if b.free(r, c) {
			b.next = advance(c)
			return c, true, nil
		}
		c = advance(c)
	}
	return netip.Addr{}, false, nil
}

// hostCount is the number of container addresses of a block, saturated.
func hostCount(b netip.Prefix) uint64 {
	hostBits := b.Addr().BitLen() - b.Bits()
	if hostBits >= 63 {
		return 1 << 63
	}
	n := uint64(1)<<hostBits - 2 // the all-zero address and the gateway
	if b.Addr().Is4() {
		n-- // broadcast
	}
	return n
}

// markUsed records an address another writer took, in whichever of this
// node's blocks holds it (a search: this is the rare path).
func (a *Allocator) markUsed(addr netip.Addr) {
	for _, b := range a.blocks {
		if b.CIDR.Contains(addr) {
			b.take(addr)
			return
		}
	}
}

// take records addr as used in b.
func (b *block) take(addr netip.Addr) {
	if b.used != nil {
		b.used[addr] = struct{}{}
	}
	b.emptySince = time.Time{}
}

func (a *Allocator) forget(h *store.Handle) {
	for _, ip := range h.IPs {
		if b := a.blocks[ip.Block]; b != nil && b.used != nil {
			delete(b.used, ip.Address.Addr())
			if len(b.used) == 0 {
				b.emptySince = time.Now()
			}
		}
	}
}

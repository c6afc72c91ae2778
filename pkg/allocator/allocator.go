// Package allocator is ipamd's IPAM policy for one node: it registers a
// network's pool on first use, claims blocks of the pool for this node, picks
// addresses inside this node's blocks and records them with their attachment.
// All durable state is in etcd through package store; the allocator keeps a
// cache of this node's blocks (rebuilt at start) so the hot path is one etcd
// transaction per ADD and touches only keys this node owns.
package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/ipmath"
	"github.com/v6cni/v6cni/pkg/store"
)

// maxAllocateTries bounds the retries when etcd says a picked address is
// taken after all (another writer raced us): each retry learns the address.
const maxAllocateTries = 16

// Allocator allocates addresses for the attachments of one node.
type Allocator struct {
	store *store.Store
	node  string
	log   *slog.Logger

	// mu serialises allocations on this node: one etcd round trip each, so
	// this costs far less than the kernel work of an attachment, and it keeps
	// the cursor logic simple and the cache exact.
	mu sync.Mutex
	// pools caches the definitions this ipamd has seen registered.
	pools map[string]string
	// blocks are this node's blocks.
	blocks map[netip.Prefix]*block
}

// block is one of this node's blocks and what is taken in it.
type block struct {
	store.Block
	// used is loaded from etcd the first time the block is allocated from.
	used map[netip.Addr]struct{}
	// next is where the sequential search resumes: freed addresses are
	// reused only after the cursor wraps, so a stale neighbour entry of a
	// deleted container does not point at a new one at once.
	next netip.Addr
}

// New returns an allocator for node and loads the node's blocks.
func New(ctx context.Context, st *store.Store, node string, log *slog.Logger) (*Allocator, error) {
	a := &Allocator{
		store:  st,
		node:   node,
		log:    log,
		pools:  make(map[string]string),
		blocks: make(map[netip.Prefix]*block),
	}
	all, err := st.Blocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("load blocks of node %s: %w", node, err)
	}
	for _, b := range all {
		if b.Node == node {
			a.blocks[b.CIDR] = &block{Block: b}
		}
	}
	return a, nil
}

// Node is the name of the node this allocator allocates for.
func (a *Allocator) Node() string { return a.node }

// Add returns the addresses of the attachment, allocating them the first
// time. A repeated ADD of the same attachment gets the same addresses.
func (a *Allocator) Add(ctx context.Context, id store.AttachmentID, conf *ipamconf.NetConf) (*current.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if err := a.ensurePool(ctx, conf); err != nil {
		return nil, err
	}
	if h, err := a.store.Handle(ctx, id); err != nil {
		return nil, err
	} else if h != nil {
		return Result(h, conf), nil
	}

	h := store.Handle{AttachmentID: id, Node: a.node, Created: time.Now().UTC()}
	for try := 0; ; try++ {
		h.IPs = h.IPs[:0]
		for _, set := range conf.IPAM.Ranges {
			ip, err := a.pick(ctx, id.Network, set)
			if err != nil {
				return nil, err
			}
			h.IPs = append(h.IPs, ip)
		}
		err := a.store.Allocate(ctx, h)
		if err == nil {
			break
		}
		var taken *store.AddrTakenError
		switch {
		case errors.As(err, &taken) && try < maxAllocateTries:
			a.markUsed(taken.Addr)
			continue
		case errors.Is(err, store.ErrExists):
			// The same attachment was allocated meanwhile (another ipamd
			// on this etcd): its answer is the answer.
			other, gerr := a.store.Handle(ctx, id)
			if gerr != nil || other == nil {
				return nil, fmt.Errorf("%w (and reading it back: %v)", err, gerr)
			}
			return Result(other, conf), nil
		default:
			return nil, err
		}
	}
	for _, ip := range h.IPs {
		a.markUsed(ip.Address.Addr())
	}
	return Result(&h, conf), nil
}

// Del releases the attachment's addresses. An unknown attachment is not an
// error: DEL must be repeatable.
func (a *Allocator) Del(ctx context.Context, id store.AttachmentID) (*store.Handle, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, err := a.store.Handle(ctx, id)
	if err != nil || h == nil {
		return nil, err
	}
	if err := a.store.Release(ctx, *h); err != nil {
		return nil, err
	}
	a.forget(h)
	return h, nil
}

// Check verifies that the attachment still holds its addresses.
func (a *Allocator) Check(ctx context.Context, id store.AttachmentID) error {
	h, err := a.store.Handle(ctx, id)
	if err != nil {
		return err
	}
	if h == nil {
		return types.NewError(types.ErrUnknownContainer,
			fmt.Sprintf("no addresses are allocated to %s", id), "")
	}
	for _, ip := range h.IPs {
		holders, err := a.store.AddrsIn(ctx, netip.PrefixFrom(ip.Address.Addr(), ip.Address.Addr().BitLen()))
		if err != nil {
			return err
		}
		if holder, ok := holders[ip.Address.Addr()]; !ok || holder != id {
			return types.NewError(types.ErrUnknownContainer,
				fmt.Sprintf("address %s of %s is not reserved for it", ip.Address.Addr(), id), "")
		}
	}
	return nil
}

// Status reports whether an ADD on the network could be served now.
func (a *Allocator) Status(ctx context.Context, conf *ipamconf.NetConf) error {
	if err := a.store.Ping(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("etcd unavailable: %v", err), "")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.ensurePool(ctx, conf); err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return types.NewError(types.ErrPluginNotAvailable, te.Msg, te.Details)
		}
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	return nil
}

// GC releases this node's attachments of the network that are not in valid,
// and keeps going past errors, returning them all.
func (a *Allocator) GC(ctx context.Context, network string, valid []store.AttachmentID) (released []store.Handle, err error) {
	keep := make(map[store.AttachmentID]bool, len(valid))
	for _, id := range valid {
		keep[store.AttachmentID{Network: network, ContainerID: id.ContainerID, IfName: id.IfName}] = true
	}
	handles, err := a.store.Handles(ctx, network)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, h := range handles {
		if h.Node != a.node || keep[h.AttachmentID] {
			continue
		}
		if _, err := a.Del(ctx, h.AttachmentID); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, h)
	}
	return released, errors.Join(errs...)
}

// ensurePool registers the network's pool on first use and refuses a
// definition that differs from the registered one.
func (a *Allocator) ensurePool(ctx context.Context, conf *ipamconf.NetConf) error {
	def := conf.IPAM.PoolKey()
	if a.pools[conf.Name] == def {
		return nil
	}
	p := store.Pool{Network: conf.Name, Definition: def}
	for _, set := range conf.IPAM.Ranges {
		for _, r := range set {
			p.Subnets = append(p.Subnets, r.Subnet)
		}
	}
	got, err := a.store.RegisterPool(ctx, p)
	var overlap *store.OverlapError
	if errors.As(err, &overlap) {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("network %q: ipam.ranges: %s", conf.Name, overlap), "")
	}
	if err != nil {
		return err
	}
	if got.Definition != def {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("network %q: ipam.ranges [%s] differ from the pool registered for it [%s]",
				conf.Name, def, got.Definition),
			"a network's pool cannot change while in use; use a new network name")
	}
	a.pools[conf.Name] = def
	return nil
}

// pick finds a free address for the network in one range set: in a block
// this node owns, else in a block it claims now.
func (a *Allocator) pick(ctx context.Context, network string, set ipamconf.RangeSet) (store.IP, error) {
	for _, r := range set {
		for _, b := range a.blocksOf(network, r) {
			addr, ok, err := a.freeIn(ctx, b)
			if err != nil {
				return store.IP{}, err
			}
			if ok {
				return ipIn(b, addr), nil
			}
		}
	}
	for _, r := range set {
		b, err := a.claimBlock(ctx, network, r)
		if errors.Is(err, errRangeFull) {
			continue
		}
		if err != nil {
			return store.IP{}, err
		}
		addr, ok, err := a.freeIn(ctx, b)
		if err != nil {
			return store.IP{}, err
		}
		if ok {
			return ipIn(b, addr), nil
		}
	}
	subnets := make([]string, 0, len(set))
	for _, r := range set {
		subnets = append(subnets, r.Subnet.String())
	}
	return store.IP{}, types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("no address available in pool %s for network %q", strings.Join(subnets, ", "), network), "")
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

// claimBlock claims the first unclaimed block of range r for this node.
func (a *Allocator) claimBlock(ctx context.Context, network string, r ipamconf.Range) (*block, error) {
	all, err := a.store.Blocks(ctx)
	if err != nil {
		return nil, err
	}
	claimed := make(map[netip.Prefix]bool, len(all))
	for _, b := range all {
		claimed[b.CIDR] = true
	}
	for cand, ok := ipmath.FirstBlock(r.Subnet, r.BlockSize), true; ok; cand, ok = ipmath.NextBlock(cand, r.Subnet) {
		if claimed[cand] {
			continue
		}
		b := store.Block{
			CIDR: cand, Node: a.node, Network: network, Subnet: r.Subnet,
			Source: "pool", Claimed: time.Now().UTC(),
		}
		err := a.store.ClaimBlock(ctx, b)
		if errors.Is(err, store.ErrExists) {
			continue // another node won it
		}
		if err != nil {
			return nil, err
		}
		a.log.Info("claimed block", "block", cand, "network", network, "node", a.node)
		nb := &block{Block: b, used: map[netip.Addr]struct{}{}}
		a.blocks[cand] = nb
		return nb, nil
	}
	return nil, errRangeFull
}

// freeIn finds the next free address of b after its cursor.
func (a *Allocator) freeIn(ctx context.Context, b *block) (netip.Addr, bool, error) {
	if b.used == nil {
		held, err := a.store.AddrsIn(ctx, b.CIDR)
		if err != nil {
			return netip.Addr{}, false, err
		}
		b.used = make(map[netip.Addr]struct{}, len(held))
		for addr := range held {
			b.used[addr] = struct{}{}
		}
	}
	if uint64(len(b.used)) >= hostCount(b.CIDR) {
		return netip.Addr{}, false, nil
	}
	first, last := ipmath.FirstHost(b.CIDR), ipmath.LastHost(b.CIDR)
	c := b.next
	if !ipmath.IsHost(b.CIDR, c) {
		c = first
	}
	// At most len(used)+1 candidates: one of them is free.
	for range len(b.used) + 1 {
		if _, taken := b.used[c]; !taken {
			if c == last {
				b.next = first
			} else {
				b.next = c.Next()
			}
			return c, true, nil
		}
		if c == last {
			c = first
		} else {
			c = c.Next()
		}
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

func (a *Allocator) markUsed(addr netip.Addr) {
	for _, b := range a.blocks {
		if b.CIDR.Contains(addr) {
			if b.used != nil {
				b.used[addr] = struct{}{}
			}
			return
		}
	}
}

func (a *Allocator) forget(h *store.Handle) {
	for _, ip := range h.IPs {
		if b := a.blocks[ip.Block]; b != nil && b.used != nil {
			delete(b.used, ip.Address.Addr())
		}
	}
}

// Result is the CNI result of a handle: its addresses, the configured routes
// (a route without gw goes via the block gateway of its family) and DNS.
func Result(h *store.Handle, conf *ipamconf.NetConf) *current.Result {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: conf.IPAM.DNS}
	gw := map[bool]netip.Addr{}
	for _, ip := range h.IPs {
		addr := ip.Address.Addr()
		r.IPs = append(r.IPs, &current.IPConfig{
			Address: net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(ip.Address.Bits(), addr.BitLen())},
			Gateway: ip.Gateway.AsSlice(),
		})
		if _, ok := gw[addr.Is4()]; !ok {
			gw[addr.Is4()] = ip.Gateway
		}
	}
	for _, rt := range conf.IPAM.Routes {
		via := rt.GW
		if !via.IsValid() {
			via = gw[rt.Dst.Addr().Is4()]
		}
		route := &types.Route{Dst: net.IPNet{IP: rt.Dst.Addr().AsSlice(), Mask: net.CIDRMask(rt.Dst.Bits(), rt.Dst.Addr().BitLen())}}
		if via.IsValid() {
			route.GW = via.AsSlice()
		}
		r.Routes = append(r.Routes, route)
	}
	return r
}

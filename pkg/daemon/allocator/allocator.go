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
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/v6cni/v6cni/internal/crashpoint"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/ipmath"
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
	mu nodeLock
	// pools caches the definitions this ipamd has seen registered, and
	// poolSizes the number of addresses of each (for metrics).
	pools     map[string]string
	poolSizes map[string]float64
	// communities are each network's BGP communities.
	communities map[string][]string
	// blocks are this node's blocks.
	blocks map[netip.Prefix]*block
	// pd is the node's DHCPv6-PD client, for pd-ipam networks.
	pd PDSource
	// changed gets a token whenever the node's set of blocks changes.
	changed chan struct{}
	// kept are the addresses of this node's blocks that this ipamd kept
	// for sticky records. Another node can release such a record (the pod
	// came back there); ExpireSticky then finds the addresses free in etcd
	// and lets the cache forget them, or they would never be picked again.
	kept map[netip.Addr]store.IP
	// epochMu is held (read) by each ADD and DEL across its etcd writes and
	// (write) by Fence, so no write made for a dropped block can land
	// after the store moved to a new epoch.
	epochMu sync.RWMutex
	// fence remembers what a removal of the node took (fence.go); mu.
	fence fenceState
	// fencedCh gets a token when a write was refused with store.ErrFenced.
	fencedCh chan struct{}
	// gateways puts a successor block's gateway where the old block's is
	// (renumber.go); tests replace it.
	gateways func(oldBlock, newBlock netip.Prefix) error
}

// New returns an allocator for node and loads the node's blocks.
func New(ctx context.Context, st *store.Store, node string, log *slog.Logger) (*Allocator, error) {
	a := &Allocator{
		store:       st,
		node:        node,
		log:         log,
		pools:       make(map[string]string),
		poolSizes:   make(map[string]float64),
		communities: make(map[string][]string),
		blocks:      make(map[netip.Prefix]*block),
		changed:     make(chan struct{}, 1),
		mu:          newNodeLock(),
		kept:        make(map[netip.Addr]store.IP),
		fencedCh:    make(chan struct{}, 1),
		gateways:    addGatewayBeside,
	}
	all, err := st.Blocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("load blocks of node %s: %w", node, err)
	}
	for _, b := range all {
		if b.Node == node {
			nb := &block{Block: b}
			if err := a.loadUsed(ctx, nb); err != nil {
				return nil, fmt.Errorf("load addresses of block %s: %w", b.CIDR, err)
			}
			a.blocks[b.CIDR] = nb
		}
	}
	pools, err := st.Pools(ctx)
	if err != nil {
		return nil, fmt.Errorf("load pools: %w", err)
	}
	for _, p := range pools {
		a.poolSizes[p.Network] = size(p.Subnets)
		a.communities[p.Network] = p.Communities
	}
	return a, nil
}

func size(subnets []netip.Prefix) float64 {
	var n float64
	for _, s := range subnets {
		n += math.Exp2(float64(s.Addr().BitLen() - s.Bits()))
	}
	return n
}

// Usage lists this node's blocks and the addresses in use in each.
func (a *Allocator) Usage() []ipammetrics.Usage {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ipammetrics.Usage, 0, len(a.blocks))
	for _, b := range a.blocks {
		out = append(out, ipammetrics.Usage{Network: b.Network, Block: b.CIDR.String(), InUse: len(b.used)})
	}
	return out
}

// PoolSizes lists the size of every pool this ipamd knows.
func (a *Allocator) PoolSizes() []ipammetrics.PoolSize {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ipammetrics.PoolSize, 0, len(a.poolSizes))
	for n, sz := range a.poolSizes {
		out = append(out, ipammetrics.PoolSize{Network: n, Size: sz})
	}
	return out
}

// BlocksChanged signals (coalesced) that the node's set of blocks changed:
// a block was claimed, released or dropped. The BGP speaker listens here.
func (a *Allocator) BlocksChanged() <-chan struct{} { return a.changed }

func (a *Allocator) notify() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Blocks lists the node's blocks (pool and delegated), in address order.
func (a *Allocator) Blocks() []store.Block {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]store.Block, 0, len(a.blocks))
	for _, b := range a.blocks {
		out = append(out, b.Block)
	}
	slices.SortFunc(out, func(x, y store.Block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
	return out
}

// Node is the name of the node this allocator allocates for.
func (a *Allocator) Node() string { return a.node }

// Request is one ADD.
type Request struct {
	ID    store.AttachmentID
	Netns string
	Conf  *ipamconf.NetConf
	// Args carries the requested addresses and the pod name.
	Args ipamconf.Args
	// MAC is the container interface's MAC, for eui64 addressing and for
	// DHCPv6 to recognise the client.
	MAC net.HardwareAddr
	// Bridge and Mode are bridge-v6's bridge and ipv6Mode, for attachments
	// that configure themselves (Mode not "" or "static").
	Bridge, Mode string
}

// Add returns the addresses of the attachment, allocating them the first
// time. A repeated ADD of the same attachment gets the same addresses.
//
// The common case costs one etcd transaction, and the node lock is held
// only while addresses are picked in the cache, not across etcd round
// trips: concurrent ADDs commit in parallel and etcd batches their fsyncs.
// A repeated ADD is found by that transaction (the handle exists) or, when
// picking fails first, by reading the handle.
//
// A failure the allocator decides is an *Error (see Kind); any other comes
// from the store or from ctx.
func (a *Allocator) Add(ctx context.Context, req Request) (*Assignment, error) {
	a.epochMu.RLock()
	defer a.epochMu.RUnlock()
	if o, ok := a.orphanOf(req.ID); ok {
		// Added again before the removal's sweep deleted its old handle:
		// that handle's addresses are not this node's, so it must not be
		// answered as a repeated ADD. The sweep follows the fencing.
		h, err := a.store.Handle(ctx, req.ID)
		if err != nil {
			return nil, err
		}
		if h != nil && sameHandle(h, &o) {
			return nil, newError(KindFenced, "attachment %s lost its addresses with the removal of node %s; its old record is being released", req.ID, a.node).
				withDetails("retry")
		}
	}
	asg, err := a.add(ctx, req)
	if err != nil {
		return nil, a.noteFenced(err)
	}
	if _, ok := a.orphanOf(req.ID); ok {
		// Added again: the attachment has addresses of this epoch now.
		a.dropOrphan(req.ID)
	}
	return asg, nil
}

func (a *Allocator) add(ctx context.Context, req Request) (*Assignment, error) {
	conf, id := req.Conf, req.ID
	h := store.Handle{AttachmentID: id, Node: a.node, Netns: req.Netns, Created: time.Now().UTC()}
	if req.Mode != "" && req.Mode != "static" {
		h.Bridge, h.Mode, h.MAC = req.Bridge, req.Mode, req.MAC.String()
	} else if len(req.MAC) > 0 {
		// Renumbering checks it before touching the netns, whose
		// /proc/<pid>/ns/net path may name another container by then.
		h.MAC = req.MAC.String()
	}
	if req.Args.PodNamespace != "" && req.Args.PodName != "" {
		h.Pod = req.Args.PodNamespace + "/" + req.Args.PodName
	}
	if conf.IPAM.Sticky && h.Pod != "" && len(req.Args.IPs) == 0 {
		if existing, err := a.store.Handle(ctx, id); err != nil || existing != nil {
			if err != nil {
				return nil, err
			}
			return a.repeated(existing, conf)
		}
		if res, ok, err := a.unstick(ctx, h, conf); err != nil || ok {
			return res, err
		}
	}
	for try := 0; ; try++ {
		ips, err := a.reserveAll(ctx, &req)
		if err != nil {
			// Nothing to pick (no prefix, pool full, address in use) can
			// still be a repeated ADD: its answer stands.
			if existing, herr := a.store.Handle(ctx, id); herr == nil && existing != nil {
				return a.repeated(existing, conf)
			}
			return nil, err
		}
		h.IPs = ips
		crashpoint.Hit("add:after-reserve")
		err = a.store.Allocate(ctx, h)
		if err == nil {
			crashpoint.Hit("add:after-allocate")
			return assignment(&h, conf), nil
		}
		a.unreserve(ips)
		var taken *store.AddrTakenError
		switch {
		case errors.Is(err, store.ErrExists):
			// A repeated ADD, or the same attachment allocated meanwhile:
			// the stored answer is the answer.
			existing, gerr := a.store.Handle(ctx, id)
			if gerr != nil || existing == nil {
				return nil, fmt.Errorf("%w (and reading it back: %v)", err, gerr)
			}
			return a.repeated(existing, conf)
		case errors.As(err, &taken) && slices.Contains(req.Args.IPs, taken.Addr):
			return nil, newError(KindTaken, "requested address %s is in use", taken.Addr)
		case errors.As(err, &taken) && try < maxAllocateTries:
			// Another writer has it (the cache was behind): learn and retry.
			a.mu.Lock()
			a.markUsed(taken.Addr)
			a.mu.Unlock()
		default:
			return nil, err
		}
	}
}

// repeated answers an ADD whose attachment already has a handle: the stored
// addresses, if the attachment is this node's. Another node's attachment
// with the same network, container ID and interface (two nodes see the
// same container ID) has addresses of that node's blocks, which this node
// cannot route: the ADD fails instead of sharing them.
func (a *Allocator) repeated(h *store.Handle, conf *ipamconf.NetConf) (*Assignment, error) {
	if h.Node != a.node {
		return nil, foreignError(h, a.node)
	}
	return assignment(h, conf), nil
}

// foreignError is the failure for an attachment of another node: the
// call's identity (network, container ID, interface) conflicts with an
// attachment the cluster already has, and retrying cannot help.
func foreignError(h *store.Handle, node string) error {
	e := newError(KindForeign, "attachment %s belongs to node %s, not to this node %s", h.AttachmentID, h.Node, node).
		withDetails("two nodes use the same container ID on one network; delete the container on the other node or use a unique ID")
	e.Owner = h.Node
	return e
}

// reserveAll picks one address per range set and marks them used in the
// cache, so concurrent ADDs pick others while this one commits.
func (a *Allocator) reserveAll(ctx context.Context, req *Request) ([]store.IP, error) {
	if err := a.mu.LockCtx(ctx); err != nil {
		return nil, err
	}
	defer a.mu.Unlock()
	conf := req.Conf
	if err := a.ensurePool(ctx, conf); err != nil {
		return nil, err
	}
	if err := a.resolveDelegated(conf); err != nil {
		return nil, err
	}
	if err := checkRequested(conf, req.Args.IPs); err != nil {
		return nil, err
	}
	ips := make([]store.IP, 0, len(conf.IPAM.Ranges))
	for _, set := range conf.IPAM.Ranges {
		var ip store.IP
		var err error
		if want, ok := requestedIn(set, req.Args.IPs); ok {
			ip, err = a.reserve(ctx, req.ID.Network, set, want)
		} else {
			ip, err = a.pick(ctx, req, set)
		}
		if err != nil {
			a.forget(&store.Handle{IPs: ips})
			return nil, err
		}
		// pick and reserve found (or claimed) ip.Block: no search.
		a.blocks[ip.Block].take(ip.Address.Addr())
		ips = append(ips, ip)
	}
	return ips, nil
}

// unreserve gives back addresses reserveAll took but etcd did not commit.
func (a *Allocator) unreserve(ips []store.IP) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forget(&store.Handle{IPs: ips})
	// Put the cursor back, so a repeated ADD does not skip an address.
	for _, ip := range ips {
		if b := a.blocks[ip.Block]; b != nil && b.next == ip.Address.Addr().Next() {
			b.next = ip.Address.Addr()
		}
	}
}

// checkRequested refuses requested addresses of a family the network has
// no range for.
func checkRequested(conf *ipamconf.NetConf, ips []netip.Addr) error {
	for _, ip := range ips {
		if _, ok := requestedFamily(conf, ip); !ok {
			return newError(KindInvalid, "requested address %s: network %q has no range of its family", ip, conf.Name)
		}
	}
	return nil
}

func requestedFamily(conf *ipamconf.NetConf, ip netip.Addr) (ipamconf.RangeSet, bool) {
	for _, set := range conf.IPAM.Ranges {
		if set.Is6() == ip.Is6() {
			return set, true
		}
	}
	return nil, false
}

// requestedIn is the requested address for a range set, if any: the first
// set of the address's family gets it.
func requestedIn(set ipamconf.RangeSet, ips []netip.Addr) (netip.Addr, bool) {
	for _, ip := range ips {
		if ip.Is6() == set.Is6() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// reserve takes exactly want, if it is a container address of the pool and
// its block is (or can become) this node's.
func (a *Allocator) reserve(ctx context.Context, network string, set ipamconf.RangeSet, want netip.Addr) (store.IP, error) {
	var r ipamconf.Range
	found := false
	for _, cand := range set {
		if cand.Subnet.Contains(want) {
			r, found = cand, true
			break
		}
	}
	if !found {
		return store.IP{}, newError(KindInvalid, "requested address %s is not in the pool of network %q", want, network)
	}
	if e, ok := r.Excluded(want); ok {
		return store.IP{}, newError(KindInvalid, "requested address %s is excluded (%s) in network %q", want, e, network)
	}
	cidr := netip.PrefixFrom(want, r.BlockSize).Masked()
	if !ipmath.IsHost(cidr, want) {
		return store.IP{}, newError(KindInvalid, "requested address %s is the gateway or a reserved address of block %s", want, cidr)
	}
	b := a.blocks[cidr]
	if b == nil {
		nb := store.Block{CIDR: cidr, Node: a.node, Network: network, Subnet: r.Subnet, Source: sourceOf(r), Claimed: time.Now().UTC()}
		err := a.store.ClaimBlock(ctx, nb)
		if errors.Is(err, store.ErrExists) {
			return store.IP{}, newError(KindTaken, "requested address %s is in block %s, which another node owns", want, cidr).
				withDetails("a container can only get addresses of its own node's blocks")
		}
		if err != nil {
			return store.IP{}, err
		}
		a.log.Info("claimed block", "block", cidr, "network", network, "node", a.node, "for", want)
		a.notify()
		b = a.newBlock(nb)
		a.blocks[cidr] = b
	}
	if err := a.loadUsed(ctx, b); err != nil {
		return store.IP{}, err
	}
	if _, taken := b.used[want]; taken {
		return store.IP{}, newError(KindTaken, "requested address %s is in use", want)
	}
	return ipIn(b, want), nil
}

// Del releases the attachment's addresses. An unknown attachment is not an
// error: DEL must be repeatable. With keep > 0 and a pod name on the
// attachment, the addresses are kept for that pod for keep instead.
func (a *Allocator) Del(ctx context.Context, id store.AttachmentID, keep time.Duration) (*store.Handle, error) {
	a.epochMu.RLock()
	defer a.epochMu.RUnlock()
	h, err := a.del(ctx, id, keep)
	return h, a.noteFenced(err)
}

func (a *Allocator) del(ctx context.Context, id store.AttachmentID, keep time.Duration) (*store.Handle, error) {
	// No node lock across etcd: the cache forgets the addresses only after
	// etcd released them, so nothing can pick them too early.
	h, err := a.store.Handle(ctx, id)
	if err != nil {
		return nil, err
	}
	if o, ok := a.orphanOf(id); ok {
		a.dropOrphan(id)
		if h == nil || sameHandle(h, &o) {
			// Its addresses went with the node's removal (the removal's
			// sweep releases a leftover handle): nothing to release here.
			a.log.Info("DEL of an attachment that lost its addresses with the node's removal: nothing to release",
				"attachment", id, "pod", o.Pod, "node", a.node)
			return nil, nil
		}
	}
	if h == nil {
		return nil, nil
	}
	if h.Node != a.node {
		// Another node's live attachment with the same ID: DEL stays
		// idempotent for the runtime, but it is not this node's to free.
		a.log.Warn("DEL of another node's attachment: left alone", "attachment", id, "owner", h.Node, "node", a.node)
		return nil, nil
	}
	crashpoint.Hit("del:after-handle")
	if keep > 0 && h.Pod != "" {
		_, replaced, err := a.store.Stick(ctx, *h, time.Now().Add(keep).UTC())
		if errors.Is(err, store.ErrGone) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		if replaced != nil && replaced.Node == a.node {
			a.forget(&store.Handle{IPs: replaced.IPs})
			a.unkeep(replaced.IPs)
		}
		for _, ip := range h.IPs {
			a.kept[ip.Address.Addr()] = ip
		}
		a.mu.Unlock()
		return h, nil
	}
	if err := a.store.Release(ctx, *h); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.forget(h)
	a.mu.Unlock()
	return h, nil
}

// Check verifies that the attachment still holds its addresses.
func (a *Allocator) Check(ctx context.Context, id store.AttachmentID) error {
	h, err := a.store.Handle(ctx, id)
	if err != nil {
		return err
	}
	if o, ok := a.orphanOf(id); ok && (h == nil || sameHandle(h, &o)) {
		a.fence.mu.Lock()
		reason := a.fence.reason
		a.fence.mu.Unlock()
		return newError(KindNotFound, "the addresses of %s were lost: %s", id, reason).
			withDetails("delete and re-create the container")
	}
	if h == nil {
		return newError(KindNotFound, "no addresses are allocated to %s", id)
	}
	if h.Node != a.node {
		return foreignError(h, a.node)
	}
	if h.Lost {
		return newError(KindNotFound, "the addresses of %s were lost with their delegated prefix", id).
			withDetails("delete and re-create the container")
	}
	for _, ip := range h.IPs {
		holders, err := a.store.AddrsIn(ctx, netip.PrefixFrom(ip.Address.Addr(), ip.Address.Addr().BitLen()))
		if err != nil {
			return err
		}
		if holder, ok := holders[ip.Address.Addr()]; !ok || holder != id {
			return newError(KindNotFound, "address %s of %s is not reserved for it", ip.Address.Addr(), id)
		}
	}
	return nil
}

// Status reports whether an ADD on the network could be served now: nil,
// or an *Error of KindUnavailable saying why not (re-stating the failure an
// ADD would meet), or of KindDegraded when containers lost their addresses.
func (a *Allocator) Status(ctx context.Context, conf *ipamconf.NetConf) error {
	if err := a.store.Ping(ctx); err != nil {
		return unavailable(err, "etcd unavailable: %v", err)
	}
	if err := a.mu.LockCtx(ctx); err != nil {
		return unavailable(err, "%s", err)
	}
	defer a.mu.Unlock()
	if err := a.orphanStatus(); err != nil {
		return err
	}
	if conf.IPAM.HasDelegated() {
		lost, err := a.lostIn(ctx, conf.Name)
		if err != nil {
			return unavailable(err, "etcd: %v", err)
		}
		if lost > 0 {
			return newError(KindDegraded,
				"network %q: %d container(s) lost their addresses with an expired delegated prefix", conf.Name, lost)
		}
		if err := a.resolveDelegated(conf); err != nil {
			return restate(err)
		}
	}
	if err := a.ensurePool(ctx, conf); err != nil {
		return restate(err)
	}
	for _, set := range conf.IPAM.Ranges {
		ok, err := a.hasRoom(ctx, conf.Name, set)
		if err != nil {
			return unavailable(err, "etcd: %v", err)
		}
		if !ok {
			return newError(KindUnavailable, "no address available in pool %s for network %q", subnetsOf(set), conf.Name)
		}
	}
	return nil
}

// unavailable is STATUS's verdict for a failure of the store or the lock.
func unavailable(cause error, format string, args ...any) error {
	e := newError(KindUnavailable, format, args...)
	e.Err = cause
	return e
}

// restate is STATUS's verdict for the failure an ADD would meet: the same
// message and details, as KindUnavailable.
func restate(err error) error {
	var ae *Error
	if errors.As(err, &ae) {
		return &Error{Kind: KindUnavailable, Msg: ae.Msg, Details: ae.Details, Err: err}
	}
	return unavailable(err, "%s", err)
}

// hasRoom reports whether an ADD could get an address of the range set: a
// block of this node has one, or a block of the pool is unclaimed.
func (a *Allocator) hasRoom(ctx context.Context, network string, set ipamconf.RangeSet) (bool, error) {
	for _, r := range set {
		for _, b := range a.blocksOf(network, r) {
			if err := a.loadUsed(ctx, b); err != nil {
				return false, err
			}
			if uint64(len(b.used)) < hostCount(b.CIDR) {
				return true, nil
			}
		}
	}
	claimed, err := a.claimedBlocks(ctx)
	if err != nil {
		return false, err
	}
	for _, r := range set {
		if _, ok := firstUnclaimed(r, claimed); ok {
			return true, nil
		}
	}
	return false, nil
}

func subnetsOf(set ipamconf.RangeSet) string {
	subnets := make([]string, 0, len(set))
	for _, r := range set {
		subnets = append(subnets, r.Subnet.String())
	}
	return strings.Join(subnets, ", ")
}

// ensurePool registers the network's pool on first use and refuses a
// definition that differs from the registered one.
func (a *Allocator) ensurePool(ctx context.Context, conf *ipamconf.NetConf) error {
	def := conf.IPAM.PoolKey()
	if a.pools[conf.Name] == def {
		return a.ensureCommunities(ctx, conf)
	}
	p := store.Pool{Network: conf.Name, Definition: def, Communities: conf.IPAM.BGPCommunities}
	for _, set := range conf.IPAM.Ranges {
		for _, r := range set {
			// A delegated range's subnet changes with the prefix: it is
			// not the network's to register.
			if !r.Delegated {
				p.Subnets = append(p.Subnets, r.Subnet)
			}
		}
	}
	got, err := a.store.RegisterPool(ctx, p)
	var overlap *store.OverlapError
	if errors.As(err, &overlap) {
		return newError(KindInvalid, "network %q: ipam.ranges: %s", conf.Name, overlap)
	}
	if err != nil {
		return err
	}
	if got.Definition != def {
		return newError(KindInvalid, "network %q: ipam.ranges [%s] differ from the pool registered for it [%s]",
			conf.Name, def, got.Definition).
			withDetails("a network's pool cannot change while in use; use a new network name")
	}
	a.pools[conf.Name] = def
	a.poolSizes[conf.Name] = size(p.Subnets)
	if got.Definition == def && slices.Equal(got.Communities, p.Communities) {
		a.communities[conf.Name] = got.Communities
	}
	return a.ensureCommunities(ctx, conf)
}

// ensureCommunities follows a change of the network's bgpCommunities: the
// pool record holds them (for every node) and the announcements change.
func (a *Allocator) ensureCommunities(ctx context.Context, conf *ipamconf.NetConf) error {
	want := conf.IPAM.BGPCommunities
	if cur, ok := a.communities[conf.Name]; ok && slices.Equal(cur, want) {
		return nil
	}
	if err := a.store.SetPoolCommunities(ctx, conf.Name, want); err != nil {
		return err
	}
	a.communities[conf.Name] = want
	a.notify()
	return nil
}

// Communities are the BGP communities of the network's announcements.
func (a *Allocator) Communities(network string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.communities[network]
}

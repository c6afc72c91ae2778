// Package store is v6cni's key space in etcd and the transactions on it. It
// knows keys and values, not policy: which block to claim or which address
// to pick is the allocator's business. Every write that must be exclusive is
// one etcd transaction guarded by CreateRevision == 0, so two nodes (or two
// ipamd processes) can never own the same block or address, and an address
// is never written without its attachment handle.
//
// Key space (values are JSON):
//
//	/v6cni/pools/<network>                            Pool
//	/v6cni/blocks/<cidr>                              Block
//	/v6cni/addrs/<sortable address>                   AttachmentID (the holder)
//	/v6cni/handles/<network>/<containerID>/<ifname>   Handle
//	/v6cni/nodes/<node>                               Node (the registration; its CreateRevision is the epoch)
//	/v6cni/alive/<node>                               Alive (under the ipamd's lease: liveness)
//	/v6cni/removed/<node>                             Removed (tombstone left by a node's removal)
//	/v6cni/sticky/<network>/<pod ns>/<pod>/<ifname>   Sticky (addresses kept for a pod)
//	/v6cni/quarantine/<sortable address>               Quarantined (an address DAD found in use, kept out of use)
//	/v6cni/pd/<node>/<iaid>                           the node's DHCPv6-PD binding
//	/v6cni/pdcluster/<segment>/identity               PDIdentity of a cluster delegation (pdcluster.go)
//	/v6cni/pdcluster/<segment>/binding                the segment's PD binding, written by its leader
//	/v6cni/election/<name>/<lease>                    etcd election candidates (pd/<segment>, dead-node-release)
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/ipmath"
)

// Prefix is the root of every key v6cni writes.
const Prefix = "/v6cni/"

const (
	poolsPrefix   = Prefix + "pools/"
	blocksPrefix  = Prefix + "blocks/"
	addrsPrefix   = Prefix + "addrs/"
	handlesPrefix = Prefix + "handles/"
	nodesPrefix   = Prefix + "nodes/"
	alivePrefix   = Prefix + "alive/"
	removedPrefix = Prefix + "removed/"
	stickyPrefix  = Prefix + "sticky/"
	pdPrefix      = Prefix + "pd/"
)

// ErrExists is returned when a create-if-absent write finds its key taken.
var ErrExists = errors.New("already exists")

// Pool is a network's registered pool definition.
type Pool struct {
	Network string `json:"network"`
	// Definition is the canonical text of the range sets (ipamconf PoolKey).
	Definition string `json:"definition"`
	// Subnets are all the range subnets, to detect overlap with other networks.
	Subnets []netip.Prefix `json:"subnets"`
	// Communities go with the BGP announcements of the pool's blocks.
	Communities []string `json:"communities,omitempty"`
}

// Block is a range of a pool owned by one node.
type Block struct {
	CIDR    netip.Prefix `json:"cidr"`
	Node    string       `json:"node"`
	Network string       `json:"network"`
	// Subnet is the pool range the block was cut from.
	Subnet netip.Prefix `json:"subnet"`
	// Source is where the block comes from: "pool" (cluster-wide ranges).
	Source  string    `json:"source"`
	Claimed time.Time `json:"claimed"`
}

// AttachmentID names one attachment: what a CNI runtime calls the
// (network, CNI_CONTAINERID, CNI_IFNAME) triple.
type AttachmentID struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (id AttachmentID) String() string {
	return id.Network + "/" + id.ContainerID + "/" + id.IfName
}

// IP is one address of an attachment.
type IP struct {
	// Address carries the block's prefix length (what the container gets).
	Address netip.Prefix `json:"address"`
	Gateway netip.Addr   `json:"gateway"`
	Block   netip.Prefix `json:"block"`
	// Deprecated marks an address being renumbered away from: its
	// delegated prefix is no longer current, a successor entry (Replaces)
	// holds the new address, and it goes at ValidUntil (the old prefix's
	// valid end). A repeated ADD no longer returns it.
	Deprecated bool      `json:"deprecated,omitempty"`
	ValidUntil time.Time `json:"validUntil,omitzero"`
	// Replaces is, on a successor entry, the address it renumbers.
	Replaces netip.Addr `json:"replaces,omitzero"`
}

// Handle is an attachment and the addresses it holds.
type Handle struct {
	AttachmentID
	Node string `json:"node"`
	// Netns is CNI_NETNS of the ADD: when it is gone, the attachment is
	// provably stale.
	Netns string `json:"netns,omitempty"`
	// Pod is "namespace/name" from CNI_ARGS, for sticky addresses.
	Pod string `json:"pod,omitempty"`
	// Lost marks an attachment whose addresses vanished with their
	// delegated prefix: the container still has them, nothing routes them.
	Lost bool `json:"lost,omitempty"`
	// MAC, Bridge and Mode are set for attachments that configure
	// themselves (bridge-v6 ipv6Mode slaac or dhcpv6-*): ipamd serves RAs
	// and DHCPv6 on Bridge, and DHCPv6 recognises the client by MAC.
	MAC     string    `json:"mac,omitempty"`
	Bridge  string    `json:"bridge,omitempty"`
	Mode    string    `json:"mode,omitempty"`
	IPs     []IP      `json:"ips"`
	Created time.Time `json:"created"`
}

// Store reads and writes v6cni's keys through an etcd client.
type Store struct {
	cli *clientv3.Client
	// fence, when set, binds the store to one node's registration: the
	// writes by which the node takes something commit only while the
	// registration has the fence's epoch (see Fenced).
	fence *fence
}

// New returns a Store using cli.
func New(cli *clientv3.Client) *Store { return &Store{cli: cli} }

// PoolKey, BlockKey, AddrKey and HandleKey build keys; exported for tests
// and the CLI.
func PoolKey(network string) string { return poolsPrefix + network }

// BlockKey is the key of a block.
func BlockKey(p netip.Prefix) string { return blocksPrefix + p.Masked().String() }

// AddrKey is the key of an address. Its text sorts like the address, so the
// addresses of a block are one range read: IPv6 in full hexadecimal form,
// IPv4 with three digits per byte (under its own "v4/" sub-prefix).
func AddrKey(a netip.Addr) string {
	if a.Is4() {
		b := a.As4()
		return fmt.Sprintf("%sv4/%03d.%03d.%03d.%03d", addrsPrefix, b[0], b[1], b[2], b[3])
	}
	return addrsPrefix + "v6/" + a.StringExpanded()
}

// HandleKey is the key of an attachment's handle.
func HandleKey(id AttachmentID) string {
	return handlesPrefix + id.Network + "/" + id.ContainerID + "/" + id.IfName
}

// Ping checks that etcd answers a linearizable read.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.cli.Get(ctx, PoolKey("\x00ping"), clientv3.WithCountOnly())
	return err
}

// RegisterPool stores p if no pool of that network exists and no other
// network's pool overlaps it, in one transaction. It returns the pool that
// is registered for the network (p, or the earlier one, which the caller
// compares) and, when another network overlaps, an error naming it.
func (s *Store) RegisterPool(ctx context.Context, p Pool) (Pool, error) {
	for {
		resp, err := s.cli.Get(ctx, poolsPrefix, clientv3.WithPrefix())
		if err != nil {
			return Pool{}, fmt.Errorf("read pools: %w", err)
		}
		for _, kv := range resp.Kvs {
			var other Pool
			if err := json.Unmarshal(kv.Value, &other); err != nil {
				return Pool{}, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
			if other.Network == p.Network {
				return other, nil
			}
			for _, a := range p.Subnets {
				for _, b := range other.Subnets {
					if a.Overlaps(b) {
						return Pool{}, &OverlapError{Subnet: a, Other: b, Network: other.Network}
					}
				}
			}
		}
		val, err := json.Marshal(p)
		if err != nil {
			return Pool{}, err
		}
		// Nothing under pools/ may have changed since the read: that is what
		// makes the overlap check and the create one atomic step.
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(poolsPrefix).WithPrefix(), "<", resp.Header.Revision+1)).
			Then(clientv3.OpPut(PoolKey(p.Network), string(val))).
			Commit()
		if err != nil {
			return Pool{}, fmt.Errorf("register pool %s: %w", p.Network, err)
		}
		if txn.Succeeded {
			return p, nil
		}
		// Another pool was registered meanwhile: look again.
	}
}

// SetPoolCommunities changes the BGP communities of a registered pool.
func (s *Store) SetPoolCommunities(ctx context.Context, network string, communities []string) error {
	resp, err := s.cli.Get(ctx, PoolKey(network))
	if err != nil {
		return fmt.Errorf("read pool %s: %w", network, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("pool %s: not registered", network)
	}
	var p Pool
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return fmt.Errorf("decode pool %s: %w", network, err)
	}
	p.Communities = communities
	val, err := json.Marshal(p)
	if err != nil {
		return err
	}
	// Only over the version read: a concurrent change wins, and the next
	// ADD with this config tries again.
	if _, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(PoolKey(network)), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(PoolKey(network), string(val))).Commit(); err != nil {
		return fmt.Errorf("set communities of pool %s: %w", network, err)
	}
	return nil
}

// OverlapError says a pool overlaps another network's pool.
type OverlapError struct {
	Subnet, Other netip.Prefix
	Network       string
}

func (e *OverlapError) Error() string {
	return fmt.Sprintf("%s overlaps %s of network %q", e.Subnet, e.Other, e.Network)
}

// Pools returns every registered pool.
func (s *Store) Pools(ctx context.Context) ([]Pool, error) {
	return list[Pool](ctx, s.cli, poolsPrefix)
}

// Blocks returns every claimed block, of every node.
func (s *Store) Blocks(ctx context.Context) ([]Block, error) {
	return list[Block](ctx, s.cli, blocksPrefix)
}

// ClaimBlock writes b if the block is unclaimed; ErrExists if it is not.
func (s *Store) ClaimBlock(ctx context.Context, b Block) error {
	val, err := json.Marshal(b)
	if err != nil {
		return err
	}
	key := BlockKey(b.CIDR)
	g := s.guard()
	txn, err := s.cli.Txn(ctx).
		If(g.cmps(clientv3.Compare(clientv3.CreateRevision(key), "=", 0))...).
		Then(clientv3.OpPut(key, string(val))).
		Else(g.elses()...).
		Commit()
	if err != nil {
		return fmt.Errorf("claim block %s: %w", b.CIDR, err)
	}
	if !txn.Succeeded {
		if err := g.check(txn); err != nil {
			return fmt.Errorf("claim block %s: %w", b.CIDR, err)
		}
		return fmt.Errorf("claim block %s: %w", b.CIDR, ErrExists)
	}
	return nil
}

// AddrsIn returns the taken addresses of a block and who holds each.
func (s *Store) AddrsIn(ctx context.Context, block netip.Prefix) (map[netip.Addr]AttachmentID, error) {
	first := block.Masked().Addr()
	last := ipmath.Last(block)
	resp, err := s.cli.Get(ctx, AddrKey(first), clientv3.WithRange(AddrKey(last)+"\x00"))
	if err != nil {
		return nil, fmt.Errorf("read addresses of block %s: %w", block, err)
	}
	out := make(map[netip.Addr]AttachmentID, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		a, err := parseAddrKey(string(kv.Key))
		if err != nil {
			return nil, err
		}
		var id AttachmentID
		if err := json.Unmarshal(kv.Value, &id); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out[a] = id
	}
	return out, nil
}

// Handle returns the handle of an attachment, or nil if it has none.
func (s *Store) Handle(ctx context.Context, id AttachmentID) (*Handle, error) {
	resp, err := s.cli.Get(ctx, HandleKey(id))
	if err != nil {
		return nil, fmt.Errorf("read handle %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var h Handle
	if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
		return nil, fmt.Errorf("decode handle %s: %w", id, err)
	}
	return &h, nil
}

// Handles returns the handles of a network (all networks if network is "").
func (s *Store) Handles(ctx context.Context, network string) ([]Handle, error) {
	p := handlesPrefix
	if network != "" {
		p += network + "/"
	}
	return list[Handle](ctx, s.cli, p)
}

// AddrTakenError says which address of an allocation was already taken.
type AddrTakenError struct{ Addr netip.Addr }

func (e *AddrTakenError) Error() string { return fmt.Sprintf("address %s already taken", e.Addr) }

// Allocate writes the handle and each of its addresses in one transaction,
// each key only if absent. If the handle already exists the error wraps
// ErrExists; if an address is taken it is an *AddrTakenError.
func (s *Store) Allocate(ctx context.Context, h Handle) error {
	hval, err := json.Marshal(h)
	if err != nil {
		return err
	}
	idval, err := json.Marshal(h.AttachmentID)
	if err != nil {
		return err
	}
	hkey := HandleKey(h.AttachmentID)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(hkey), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(hkey, string(hval))}
	// On failure, read back what exists so the error can name it.
	fails := []clientv3.Op{clientv3.OpGet(hkey, clientv3.WithCountOnly())}
	for _, ip := range h.IPs {
		k := AddrKey(ip.Address.Addr())
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		ops = append(ops, clientv3.OpPut(k, string(idval)))
		fails = append(fails, clientv3.OpGet(k, clientv3.WithCountOnly()))
	}
	g := s.guard()
	txn, err := s.cli.Txn(ctx).If(g.cmps(cmps...)...).Then(ops...).Else(g.elses(fails...)...).Commit()
	if err != nil {
		return fmt.Errorf("allocate %s: %w", h.AttachmentID, err)
	}
	if txn.Succeeded {
		return nil
	}
	if err := g.check(txn); err != nil {
		return fmt.Errorf("allocate %s: %w", h.AttachmentID, err)
	}
	if txn.Responses[0].GetResponseRange().Count > 0 {
		return fmt.Errorf("allocate %s: handle %w", h.AttachmentID, ErrExists)
	}
	for i, ip := range h.IPs {
		if txn.Responses[i+1].GetResponseRange().Count > 0 {
			return &AddrTakenError{Addr: ip.Address.Addr()}
		}
	}
	return fmt.Errorf("allocate %s: transaction failed", h.AttachmentID)
}

// Release deletes a handle and the addresses it holds, in one transaction.
// An address now held by another attachment is left alone.
func (s *Store) Release(ctx context.Context, h Handle) error {
	idval, err := json.Marshal(h.AttachmentID)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpDelete(HandleKey(h.AttachmentID))}
	for _, ip := range h.IPs {
		k := AddrKey(ip.Address.Addr())
		// A nested txn deletes the address only if this attachment holds it.
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(idval))},
			[]clientv3.Op{clientv3.OpDelete(k)}, nil))
	}
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("release %s: %w", h.AttachmentID, err)
	}
	return nil
}

func list[T any](ctx context.Context, cli *clientv3.Client, prefix string) ([]T, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", prefix, err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func parseAddrKey(key string) (netip.Addr, error) {
	rest, ok := strings.CutPrefix(key, addrsPrefix)
	if !ok {
		return netip.Addr{}, fmt.Errorf("bad address key %q", key)
	}
	if v4, ok := strings.CutPrefix(rest, "v4/"); ok {
		var b [4]byte
		if _, err := fmt.Sscanf(v4, "%03d.%03d.%03d.%03d", &b[0], &b[1], &b[2], &b[3]); err != nil {
			return netip.Addr{}, fmt.Errorf("bad address key %q: %w", key, err)
		}
		return netip.AddrFrom4(b), nil
	}
	v6, ok := strings.CutPrefix(rest, "v6/")
	if !ok {
		return netip.Addr{}, fmt.Errorf("bad address key %q", key)
	}
	a, err := netip.ParseAddr(v6)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("bad address key %q: %w", key, err)
	}
	return a, nil
}

// ReleaseBlock deletes a block, only if no address in it is taken (one
// transaction: an ADD racing the release either lands first and keeps the
// block, or finds it gone and claims another).
//
// A fenced store releases only while its node's registration has its
// epoch (else the error wraps ErrFenced): a node removed behind its back
// still has the block in its cache, but the removal released it and
// another node may own it now.
func (s *Store) ReleaseBlock(ctx context.Context, b netip.Prefix) error {
	first, last := AddrKey(b.Masked().Addr()), AddrKey(ipmath.Last(b))+"\x00"
	g := s.guard()
	txn, err := s.cli.Txn(ctx).
		If(g.cmps(clientv3.Compare(clientv3.CreateRevision(first).WithRange(last), "=", 0))...).
		Then(clientv3.OpDelete(BlockKey(b))).
		Else(g.elses()...).
		Commit()
	if err != nil {
		return fmt.Errorf("release block %s: %w", b, err)
	}
	if !txn.Succeeded {
		if err := g.check(txn); err != nil {
			return fmt.Errorf("release block %s: %w", b, err)
		}
		return fmt.Errorf("release block %s: addresses in use", b)
	}
	return nil
}

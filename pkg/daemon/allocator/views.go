package allocator

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipmath"
)

// This file: read-only views of the cluster's IPAM state, for ipamd's
// admin verbs and the CLI. They read etcd (not the node's cache), so they
// show every node's part.

// PoolView is a registered pool and the blocks of it, cluster-wide.
type PoolView struct {
	Network string
	// Definition is the pool's canonical definition (ipam.ranges).
	Definition string
	// Blocks are the pool's claimed blocks, in the order etcd lists them.
	Blocks []BlockView
}

// BlockView is one claimed block and the addresses held in it.
type BlockView struct {
	CIDR    netip.Prefix
	Node    string
	Gateway netip.Addr
	// Addrs are in address order.
	Addrs []HeldAddr
}

// HeldAddr is an allocated address and the attachment holding it.
type HeldAddr struct {
	Addr netip.Addr
	ID   store.AttachmentID
}

// Pools lists every registered pool with its blocks and their addresses.
func (a *Allocator) Pools(ctx context.Context) ([]PoolView, error) {
	pools, err := a.store.Pools(ctx)
	if err != nil {
		return nil, err
	}
	blocks, err := a.store.Blocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PoolView, 0, len(pools))
	for _, p := range pools {
		pv := PoolView{Network: p.Network, Definition: p.Definition}
		for _, b := range blocks {
			if b.Network != p.Network {
				continue
			}
			held, err := a.store.AddrsIn(ctx, b.CIDR)
			if err != nil {
				return nil, err
			}
			bv := BlockView{CIDR: b.CIDR, Node: b.Node, Gateway: ipmath.Gateway(b.CIDR), Addrs: make([]HeldAddr, 0, len(held))}
			for addr, id := range held {
				bv.Addrs = append(bv.Addrs, HeldAddr{Addr: addr, ID: id})
			}
			slices.SortFunc(bv.Addrs, func(x, y HeldAddr) int { return x.Addr.Compare(y.Addr) })
			pv.Blocks = append(pv.Blocks, bv)
		}
		out = append(out, pv)
	}
	return out, nil
}

// Attachments lists the attachments (handles) of the network, of every
// node; all networks when network is "".
func (a *Allocator) Attachments(ctx context.Context, network string) ([]store.Handle, error) {
	return a.store.Handles(ctx, network)
}

// Audit is the outcome of checking the cluster's key space.
type Audit struct {
	// Revision is the etcd revision the records were read at.
	Revision int64
	// Counts of what was checked.
	Blocks, Addrs, Handles, Stickies int
	// Problems are the broken invariants (store.Check), none when sound.
	Problems []store.Problem
}

// Audit reads the whole key space at one revision and checks every
// invariant the allocator's transactions are meant to keep.
func (a *Allocator) Audit(ctx context.Context) (*Audit, error) {
	snap, err := a.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return &Audit{
		Revision: snap.Revision, Blocks: len(snap.Blocks), Addrs: len(snap.Addrs),
		Handles: len(snap.Handles), Stickies: len(snap.Stickies), Problems: store.Check(snap),
	}, nil
}

// NetnsExists reports whether a network namespace path still exists, for
// Reclaim. Only a clear "does not exist" in a directory that does exist
// counts as gone: any other error keeps the attachment, as Reclaim touches
// nothing it cannot prove stale. The directory matters because ipamd may
// not see the runtime's netns directory at all (a container that does not
// mount it, containerd's netns_mounts_under_state_dir): every path in it
// would look gone, and every live attachment would be released.
func NetnsExists(path string) bool {
	_, err := os.Stat(path)
	if !errors.Is(err, os.ErrNotExist) {
		return true
	}
	fi, err := os.Stat(filepath.Dir(path))
	return err != nil || !fi.IsDir()
}

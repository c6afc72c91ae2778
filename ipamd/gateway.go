package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipmath"
)

// removeGateway deletes the gateway address of a released block from
// whichever host interface (a bridge-v6 bridge) carries it: once the block
// may go to another node, this node must stop claiming its prefix.
func removeGateway(block netip.Prefix) error {
	gw := ipmath.Gateway(block)
	family := unix.AF_INET6
	if gw.Is4() {
		family = unix.AF_INET
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return fmt.Errorf("list addresses to remove gateway %s: %w", gw, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != gw {
			continue
		}
		if ones, _ := a.Mask.Size(); ones != block.Bits() {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return fmt.Errorf("remove gateway %s: link %d: %w", gw, a.LinkIndex, err)
		}
		if err := netlink.AddrDel(l, &a); err != nil {
			return fmt.Errorf("remove gateway %s from %s: %w", gw, l.Attrs().Name, err)
		}
	}
	return nil
}

// afterBlocksReleased, if set (tests), runs when releaseEmptyBlocks has
// released the blocks: where an ADD can re-claim one of them.
var afterBlocksReleased func()

// releaseEmptyBlocks gives back the node's blocks empty for grace, with
// their gateway addresses, and returns them.
func releaseEmptyBlocks(ctx context.Context, alloc *allocator.Allocator, grace time.Duration, log *slog.Logger) []store.Block {
	// The gateway goes before the block, under the allocator's lock: an
	// ADD re-claiming the block after that re-adds it, and nothing removes
	// it again.
	blocks, err := alloc.ReleaseEmptyBlocks(ctx, grace, removeGateway)
	if err != nil && ctx.Err() == nil {
		log.Warn("release of empty blocks", "error", err)
	}
	if afterBlocksReleased != nil {
		afterBlocksReleased()
	}
	return blocks
}

package bridgesvc

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
	"github.com/v6cni/v6cni/pkg/link"
)

// afterBlocksReleased, if set (tests), runs when ReleaseEmptyBlocks has
// released the blocks: where an ADD can re-claim one of them.
var afterBlocksReleased func()

// ReleaseEmptyBlocks gives back the node's blocks empty for grace, with
// their gateway addresses (bridge-v6 put them on the bridges at ADD), and
// returns them. A failure is logged (the next round retries).
func ReleaseEmptyBlocks(ctx context.Context, alloc *allocator.Allocator, grace time.Duration, log *slog.Logger) []store.Block {
	// The gateway goes before the block, under the allocator's lock: an
	// ADD re-claiming the block after that re-adds it, and nothing removes
	// it again.
	blocks, err := alloc.ReleaseEmptyBlocks(ctx, grace, link.RemoveGateway)
	if err != nil && ctx.Err() == nil {
		log.Warn("release of empty blocks", "error", err)
	}
	if afterBlocksReleased != nil {
		afterBlocksReleased()
	}
	return blocks
}

// gatewayLifetimes sets the lifetimes of a block's gateway address:
// DeprecateGateway and RestoreGateway, recorders in tests without a netns.
type gatewayLifetimes struct {
	deprecate func(block netip.Prefix, validUntil time.Time) error
	restore   func(block netip.Prefix) error
}

// followGateways (s.mu held) puts the gateway address of each delegated
// block of b that became deprecated to preferred 0 with its remaining
// valid lifetime (the kernel removes it at the end even if ipamd is
// down), and back to permanent if the block is preferred again (a Reply
// extended it). served is the new state, b.served the previous one.
func (s *Services) followGateways(b *bridgeService, served map[netip.Prefix]servedBlock) {
	for blk, cur := range served {
		was := b.served[blk]
		var err error
		switch {
		case !cur.delegated || cur.ended:
			continue
		case cur.deprecated && (!was.deprecated || was.lt != cur.lt):
			if err = s.gateways.deprecate(blk, cur.lt.validUntil); err == nil {
				s.log.Info("gateway of a deprecated delegated block: preferred 0", "bridge", b.bridge, "block", blk, "validUntil", cur.lt.validUntil)
			}
		case !cur.deprecated && was.deprecated:
			err = s.gateways.restore(blk)
		}
		if err != nil {
			s.log.Warn("gateway lifetimes", "bridge", b.bridge, "block", blk, "error", err)
		}
	}
}

// DeprecateGateway sets the gateway address of block (ipmath.Gateway with
// the block's prefix length, wherever AddGatewayAddrs put it in the calling
// thread's namespace) to preferred lifetime 0 and valid until validUntil
// (zero: forever): during a renumbering's overlap the host picks it as a
// source for nothing new, and the kernel removes it at the old prefix's
// valid end. No such address is fine.
func DeprecateGateway(block netip.Prefix, validUntil time.Time) error {
	valid := infiniteLifetime
	if !validUntil.IsZero() {
		valid = max(int(time.Until(validUntil)/time.Second), 1)
	}
	return setGatewayLifetimes(block, 0, valid)
}

// RestoreGateway makes the gateway address of block permanent again
// (preferred and valid forever), as AddGatewayAddrs adds it.
func RestoreGateway(block netip.Prefix) error {
	return setGatewayLifetimes(block, infiniteLifetime, infiniteLifetime)
}

// infiniteLifetime is the kernel's INFINITY_LIFE_TIME (0xffffffff).
const infiniteLifetime = int(^uint32(0))

func setGatewayLifetimes(block netip.Prefix, preferred, valid int) error {
	gw := ipmath.Gateway(block)
	if !gw.Is6() {
		return nil
	}
	addrs, err := netlink.AddrList(nil, unix.AF_INET6)
	if err != nil {
		return fmt.Errorf("list addresses for gateway %s: %w", gw, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ones, _ := a.Mask.Size(); !ok || ip.Unmap() != gw || ones != block.Bits() {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return fmt.Errorf("gateway %s: link %d: %w", gw, a.LinkIndex, err)
		}
		// Flags as AddGatewayAddrs sets them; the kernel takes only the
		// ones a replace may change.
		na := &netlink.Addr{IPNet: a.IPNet, Flags: unix.IFA_F_NODAD, PreferedLft: preferred, ValidLft: valid}
		if err := netlink.AddrReplace(l, na); err != nil {
			return fmt.Errorf("set lifetimes of gateway %s on %s: %w", gw, l.Attrs().Name, err)
		}
	}
	return nil
}

// Package nodecheck is `ipamd check` as a node's ipamd runs it: Run puts
// the checks of the whole key space (store.Check, store.CheckNodes) and
// this node's own into one report. The node's own checks (Check) are what
// only the node itself can do: compare what etcd records of this node with
// its kernel. They report, as store.Problem values naming this node:
//
//   - "netns-gone": an attachment of this node whose network namespace
//     (the handle's Netns) no longer exists (`ipamd gc` releases it);
//   - "gateway-no-block": a bridge (or a VLAN interface on a bridge)
//     carrying the gateway address of a prefix of a v6cni range (a pool's
//     subnet, a block's range) that is not one of this node's blocks:
//     another node's block, or none (a block released while its gateway
//     stayed). The node then answers for addresses it does not own;
//   - "gateway-missing": a block of this node with attachments on a bridge
//     that does not carry the block's gateway, so its containers have no
//     router.
//
// bridge-v6 puts gateways on bridges only with isGateway (the default).
// Which bridge an attachment is on is recorded only for self-configuring
// attachments (the handle's Bridge); so a block's gateway is expected only
// in a network where the node's bridges carry at least one gateway of the
// network's blocks: on the attachment's bridge when recorded, on any bridge
// otherwise.
package nodecheck

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipmath"
	"github.com/v6cni/v6cni/pkg/link"
)

// ProblemKinds are the kinds Check reports.
var ProblemKinds = []string{"netns-gone", "gateway-no-block", "gateway-missing"}

// Host is what the checks read from the node's kernel.
type Host interface {
	// NetnsExists reports whether a network namespace path still exists.
	NetnsExists(path string) bool
	// BridgeAddrs lists the global addresses of the bridges and of the
	// VLAN interfaces on bridges.
	BridgeAddrs() ([]link.BridgeAddr, error)
}

// Kernel is the Host of the calling thread's network namespace.
type Kernel struct {
	// Exists, when set, replaces allocator.NetnsExists (ipamd passes the
	// function its GC uses, so check and gc agree on what is gone).
	Exists func(path string) bool
}

// NetnsExists is allocator.NetnsExists: what `ipamd gc` releases by.
func (k Kernel) NetnsExists(path string) bool {
	if k.Exists != nil {
		return k.Exists(path)
	}
	return allocator.NetnsExists(path)
}

// BridgeAddrs is link.BridgeAddrs.
func (Kernel) BridgeAddrs() ([]link.BridgeAddr, error) { return link.BridgeAddrs() }

// Check compares the records of node in snap with host, and returns the
// problems sorted as store.Check sorts them.
func Check(snap *store.Snapshot, node string, host Host) ([]store.Problem, error) {
	addrs, err := host.BridgeAddrs()
	if err != nil {
		return nil, fmt.Errorf("read the bridges' addresses: %w", err)
	}
	var out []store.Problem
	add := func(kind, key, format string, args ...any) {
		out = append(out, store.Problem{Kind: kind, Key: key, Node: node, Msg: fmt.Sprintf(format, args...)})
	}

	for _, h := range snap.Handles {
		if h.Node == node && h.Netns != "" && !h.Lost && !host.NetnsExists(h.Netns) {
			add("netns-gone", store.HandleKey(h.AttachmentID), "attachment %s: netns %s is gone (`ipamd gc` releases it)", h.AttachmentID, h.Netns)
		}
	}

	// This node's blocks, and the ranges whose gateways are v6cni's.
	mine := map[netip.Prefix]store.Block{}
	owner := map[netip.Prefix]string{}
	var ranges []netip.Prefix
	for _, p := range snap.Pools {
		ranges = append(ranges, p.Subnets...)
	}
	for _, b := range snap.Blocks {
		owner[b.CIDR.Masked()] = b.Node
		ranges = append(ranges, b.CIDR.Masked())
		if b.Subnet.IsValid() {
			ranges = append(ranges, b.Subnet.Masked())
		}
		if b.Node == node {
			mine[b.CIDR.Masked()] = b
		}
	}
	inRange := func(p netip.Prefix) bool {
		return slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Bits() <= p.Bits() && r.Contains(p.Addr()) })
	}

	// Gateways on bridges: whose are they?
	onBridge := map[string]map[netip.Prefix]bool{} // bridge → gateway addresses
	onAny := map[netip.Prefix][]string{}           // gateway address → links
	for _, ba := range addrs {
		block := ba.Addr.Masked()
		if ba.Addr.Addr() != ipmath.Gateway(block) || !inRange(ba.Addr) {
			continue
		}
		if onBridge[ba.Bridge] == nil {
			onBridge[ba.Bridge] = map[netip.Prefix]bool{}
		}
		onBridge[ba.Bridge][ba.Addr] = true
		onAny[ba.Addr] = append(onAny[ba.Addr], ba.Link)
		if _, ok := mine[block]; ok {
			continue
		}
		where := "bridge " + ba.Bridge
		if ba.Link != ba.Bridge {
			where = fmt.Sprintf("VLAN interface %s of bridge %s", ba.Link, ba.Bridge)
		}
		whose := "no block claims it"
		if o, ok := owner[block]; ok {
			whose = fmt.Sprintf("the block is node %s's", o)
		}
		add("gateway-no-block", store.BlockKey(block), "%s carries gateway %s, but %s is not a block of node %s: %s",
			where, ba.Addr, block, node, whose)
	}

	// Networks whose gateways this node's bridges carry: isGateway is on.
	gatewayNets := map[string]bool{}
	for gw := range onAny {
		if b, ok := mine[gw.Masked()]; ok {
			gatewayNets[b.Network] = true
		}
	}
	type missing struct {
		block  netip.Prefix
		bridge string
	}
	seen := map[missing]bool{}
	for _, h := range snap.Handles {
		if h.Node != node || h.Lost {
			continue
		}
		for _, ip := range h.IPs {
			b, ok := mine[ip.Block.Masked()]
			if !ok || !gatewayNets[b.Network] {
				continue
			}
			gw := netip.PrefixFrom(ipmath.Gateway(b.CIDR), b.CIDR.Bits())
			m := missing{b.CIDR.Masked(), h.Bridge}
			if seen[m] {
				continue
			}
			switch {
			case h.Bridge != "" && !onBridge[h.Bridge][gw]:
				add("gateway-missing", store.BlockKey(b.CIDR), "bridge %s has attachments in block %s (%s) but not its gateway %s",
					h.Bridge, b.CIDR, h.AttachmentID, gw)
			case h.Bridge == "" && len(onAny[gw]) == 0:
				add("gateway-missing", store.BlockKey(b.CIDR), "no bridge carries gateway %s of block %s, which has attachments (%s), while the bridges carry other gateways of network %s",
					gw, b.CIDR, h.AttachmentID, b.Network)
			default:
				continue
			}
			seen[m] = true
		}
	}
	store.SortProblems(out)
	return out, nil
}

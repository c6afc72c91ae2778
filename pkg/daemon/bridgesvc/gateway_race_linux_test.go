package bridgesvc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// TestReleasedBlockReclaimedKeepsGateway: an empty block is released while
// an ADD on this node takes an address in it again (claiming the block
// anew; bridge-v6 puts its gateway on the bridge, present already). The
// new container's gateway must stay on the bridge.
func TestReleasedBlockReclaimedKeepsGateway(t *testing.T) {
	linktest.RequireRoot(t)
	ctx := context.Background()
	st := store.New(etcdtest.Client(t))
	netns := linktest.NewNS(t)
	brName := linktest.Name("gwr")
	linktest.Bridge(t, netns, brName)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	alloc, err := allocator.New(ctx, st, "node1", log)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := ipamconf.Parse([]byte(`{"cniVersion":"1.1.0","name":"gwr","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:61::/48"}]]}}`))
	if err != nil {
		t.Fatal(err)
	}
	reclaimed := netip.MustParsePrefix("2001:db8:61:1::/64")
	gateway := netip.MustParsePrefix("2001:db8:61:1::1/64")
	linktest.Do(t, netns, func() error {
		br, err := netlink.LinkByName(brName)
		if err != nil {
			return err
		}
		// bridge-v6's part of an ADD: the block's gateway on the bridge.
		addGateway := func(p netip.Prefix) error {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(br, a); err != nil && !errors.Is(err, unix.EEXIST) {
				return err
			}
			return nil
		}
		add := func(cid string, want string) error {
			req := allocator.Request{ID: store.AttachmentID{Network: "gwr", ContainerID: cid, IfName: "eth0"}, Conf: conf,
				Args: ipamconf.Args{IPs: []netip.Addr{netip.MustParseAddr(want)}}}
			res, err := alloc.Add(ctx, req)
			if err != nil {
				return err
			}
			return addGateway(netip.PrefixFrom(res.IPs[0].Gateway, 64))
		}
		// The lowest block stays (it is never released); the second one
		// empties and goes back.
		if err := add("c1", "2001:db8:61::5"); err != nil {
			return err
		}
		if err := add("c2", "2001:db8:61:1::5"); err != nil {
			return err
		}
		if _, err := alloc.Del(ctx, store.AttachmentID{Network: "gwr", ContainerID: "c2", IfName: "eth0"}, 0); err != nil {
			return err
		}
		afterBlocksReleased = func() {
			afterBlocksReleased = nil
			if err := add("c3", "2001:db8:61:1::6"); err != nil {
				t.Errorf("ADD re-claiming the released block: %v", err)
			}
		}
		t.Cleanup(func() { afterBlocksReleased = nil })
		released := ReleaseEmptyBlocks(ctx, alloc, 0, log)
		if len(released) != 1 || released[0].CIDR != reclaimed {
			t.Errorf("released %+v, want %s", released, reclaimed)
		}
		blocks := alloc.Blocks()
		owned := false
		for _, b := range blocks {
			owned = owned || b.CIDR == reclaimed
		}
		if !owned {
			t.Fatalf("the ADD did not re-claim %s: node's blocks %+v", reclaimed, blocks)
		}
		addrs, err := netlink.AddrList(br, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, ok := netip.AddrFromSlice(a.IP); ok && netip.PrefixFrom(p, 64) == gateway {
				return nil
			}
		}
		t.Errorf("gateway %s of the re-claimed block %s (container c3 uses it) is gone from the bridge: %v", gateway, reclaimed, addrs)
		return nil
	})
}

package allocator

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/link"
)

// TestAddGatewayBeside: the successor block's gateway goes on the bridge
// that carries the old block's gateway, and nowhere when none does.
func TestAddGatewayBeside(t *testing.T) {
	linktest.RequireRoot(t)
	netns := linktest.NewNS(t)
	br := linktest.Name("rnbr")
	linktest.Bridge(t, netns, br)
	pp := netip.MustParsePrefix
	linktest.Do(t, netns, func() error {
		l, err := netlink.LinkByName(br)
		if err != nil {
			return err
		}
		if err := link.AddGatewayAddrs(l, []netip.Prefix{pp("2001:db8:aa00:1::1/64")}, false); err != nil {
			return err
		}
		if err := addGatewayBeside(pp("2001:db8:aa00:1::/64"), pp("2001:db8:bb00:1::/64")); err != nil {
			return err
		}
		// Again: already there is fine.
		if err := addGatewayBeside(pp("2001:db8:aa00:1::/64"), pp("2001:db8:bb00:1::/64")); err != nil {
			return err
		}
		// No interface carries the gateway of this one: nothing added.
		if err := addGatewayBeside(pp("2001:db8:aa00:2::/64"), pp("2001:db8:bb00:2::/64")); err != nil {
			return err
		}
		addrs, err := link.BridgeAddrs()
		if err != nil {
			return err
		}
		got := map[netip.Prefix]string{}
		for _, a := range addrs {
			got[a.Addr] = a.Link
		}
		if got[pp("2001:db8:bb00:1::1/64")] != br {
			return fmt.Errorf("successor gateway not on %s: %v", br, got)
		}
		if _, ok := got[pp("2001:db8:bb00:2::1/64")]; ok {
			return fmt.Errorf("gateway added without an old one: %v", got)
		}
		return nil
	})
}

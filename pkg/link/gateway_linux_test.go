package link

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRemoveGateway: releasing a block removes its gateway address (and only
// it) from the bridge that carries it. Runs in its own netns; needs root.
func TestRemoveGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestRemoveGateway needs root (CAP_NET_ADMIN) to create a netns")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Close(); testutils.UnmountNS(netns) })

	err = netns.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "v6gwtest"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		for _, a := range []string{"2001:db8:5:1::1/64", "2001:db8:5:2::1/64", "10.12.0.1/24"} {
			p := netip.MustParsePrefix(a)
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(br, addr); err != nil {
				return err
			}
		}
		for _, b := range []string{"2001:db8:5:1::/64", "10.12.0.0/24"} {
			if err := RemoveGateway(netip.MustParsePrefix(b)); err != nil {
				return err
			}
		}
		left, err := netlink.AddrList(br, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var got []string
		for _, a := range left {
			if a.IP.IsGlobalUnicast() {
				got = append(got, a.IPNet.String())
			}
		}
		if len(got) != 1 || got[0] != "2001:db8:5:2::1/64" {
			t.Errorf("addresses left on the bridge = %v, want only 2001:db8:5:2::1/64", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

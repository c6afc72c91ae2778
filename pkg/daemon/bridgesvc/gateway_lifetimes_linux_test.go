package bridgesvc

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/link"
)

// TestGatewayLifetimes: the gateway of the old block of a renumbering goes
// preferred 0 with its valid time left (still IFA_F_NODAD: replacing it
// must not start DAD), and back to permanent when the block is preferred
// again; another block's gateway is untouched.
func TestGatewayLifetimes(t *testing.T) {
	linktest.RequireRoot(t)
	netns := linktest.NewNS(t)
	brName := linktest.Name("gwl")
	linktest.Bridge(t, netns, brName)
	oldBlk := netip.MustParsePrefix("2001:db8:71:1::/64")
	linktest.Do(t, netns, func() error {
		br, err := netlink.LinkByName(brName)
		if err != nil {
			return err
		}
		if err := link.AddGatewayAddrs(br, []netip.Prefix{netip.MustParsePrefix("2001:db8:71:1::1/64"), netip.MustParsePrefix("2001:db8:72:1::1/64")}, false); err != nil {
			return err
		}
		state := func(gw string) netlink.Addr {
			t.Helper()
			addrs, err := netlink.AddrList(br, netlink.FAMILY_V6)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range addrs {
				if a.IP.Equal(net.ParseIP(gw)) {
					return a
				}
			}
			t.Fatalf("gateway %s gone from the bridge: %v", gw, addrs)
			return netlink.Addr{}
		}
		if err := DeprecateGateway(oldBlk, time.Now().Add(90*time.Second)); err != nil {
			return err
		}
		a := state("2001:db8:71:1::1")
		if a.PreferedLft != 0 || a.ValidLft > 90 || a.ValidLft < 80 || a.Flags&unix.IFA_F_DEPRECATED == 0 || a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_PERMANENT != 0 {
			t.Errorf("deprecated gateway: preferred %d valid %d flags %#x, want 0, about 90, deprecated|nodad", a.PreferedLft, a.ValidLft, a.Flags)
		}
		if o := state("2001:db8:72:1::1"); o.Flags&unix.IFA_F_PERMANENT == 0 || o.Flags&unix.IFA_F_DEPRECATED != 0 {
			t.Errorf("other gateway touched: flags %#x", o.Flags)
		}
		if err := RestoreGateway(oldBlk); err != nil {
			return err
		}
		a = state("2001:db8:71:1::1")
		if a.Flags&unix.IFA_F_PERMANENT == 0 || a.Flags&unix.IFA_F_DEPRECATED != 0 || a.Flags&unix.IFA_F_NODAD == 0 || uint32(a.ValidLft) != ^uint32(0) {
			t.Errorf("restored gateway: preferred %d valid %d flags %#x, want permanent|nodad, forever", a.PreferedLft, a.ValidLft, a.Flags)
		}
		// No such gateway: fine.
		return DeprecateGateway(netip.MustParsePrefix("2001:db8:73::/64"), time.Time{})
	})
}

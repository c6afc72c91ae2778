package link

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

// uplinkLab is a host netns with an uplink (a veth whose peer stays in
// the same netns, up) carrying what a node's eth1 carries: a static
// address, an address with lifetimes (as SLAAC makes), a static route,
// an RA route, RA sysctls other than the defaults.
func uplinkLab(t *testing.T) (host ns.NetNS, uplink string) {
	t.Helper()
	host = newNS(t)
	ProviderLockDir = t.TempDir()
	uplink = linktest.Name("upl")
	linktest.Do(t, host, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: uplink, HardwareAddr: net.HardwareAddr{2, 0, 0x5e, 0, 0, 1}}, PeerName: uplink + "p"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		for _, kv := range [][2]string{{"accept_dad", "0"}, {"accept_ra", "2"}, {"router_solicitations", "7"}, {"use_tempaddr", "1"}} {
			if _, err := sysctl.Sysctl("net/ipv6/conf/"+uplink+"/"+kv[0], kv[1]); err != nil {
				return err
			}
		}
		for _, n := range []string{uplink, uplink + "p"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName(uplink)
		static, _ := netlink.ParseAddr("2001:db8:22::100/64")
		static.Flags = unix.IFA_F_NODAD
		slaac, _ := netlink.ParseAddr("2001:db8:23::5/64")
		slaac.Flags, slaac.ValidLft, slaac.PreferedLft = unix.IFA_F_NODAD, 3000, 2000
		for _, a := range []*netlink.Addr{static, slaac} {
			if err := netlink.AddrAdd(l, a); err != nil {
				return err
			}
		}
		_, beyond, _ := net.ParseCIDR("2001:db8:99::/48")
		_, ra, _ := net.ParseCIDR("2001:db8:98::/48")
		for _, r := range []*netlink.Route{
			{LinkIndex: l.Attrs().Index, Dst: beyond, Gw: net.ParseIP("2001:db8:22::1")},
			{LinkIndex: l.Attrs().Index, Dst: ra, Gw: net.ParseIP("fe80::1"), Protocol: unix.RTPROT_RA},
		} {
			if err := netlink.RouteAdd(r); err != nil {
				return err
			}
		}
		return nil
	})
	return host, uplink
}

func TestEnsureProviderUplink(t *testing.T) {
	host, uplink := uplinkLab(t)
	name := linktest.Name("v6tpb")
	linktest.Do(t, host, func() error {
		br, err := EnsureBridge(name, 0)
		if err != nil {
			return err
		}
		// Twice: the second finds it set up and changes nothing.
		for range 2 {
			if _, err := EnsureProviderUplink(br, uplink, 0, uplink); err != nil {
				return err
			}
		}
		up, _ := netlink.LinkByName(uplink)
		brl, _ := netlink.LinkByName(name)
		if up.Attrs().MasterIndex != brl.Attrs().Index {
			t.Errorf("uplink master %d, want the bridge %d", up.Attrs().MasterIndex, brl.Attrs().Index)
		}
		if brl.Attrs().HardwareAddr.String() != up.Attrs().HardwareAddr.String() {
			t.Errorf("bridge MAC %s, want the uplink's %s", brl.Attrs().HardwareAddr, up.Attrs().HardwareAddr)
		}
		addrs, _ := netlink.AddrList(brl, netlink.FAMILY_V6)
		got := map[string]netlink.Addr{}
		for _, a := range addrs {
			got[a.IPNet.String()] = a
		}
		if _, ok := got["2001:db8:22::100/64"]; !ok {
			t.Errorf("static address not moved: %v", addrs)
		}
		if a, ok := got["2001:db8:23::5/64"]; !ok || a.ValidLft > 3000 || a.ValidLft < 2900 || a.PreferedLft > 2000 {
			t.Errorf("address with lifetimes not moved with them: %+v", a)
		}
		upAddrs, _ := netlink.AddrList(up, netlink.FAMILY_V6)
		for _, a := range upAddrs {
			if !a.IP.IsLinkLocalUnicast() {
				t.Errorf("uplink keeps %s", a.IPNet)
			}
		}
		routes, _ := netlink.RouteList(brl, netlink.FAMILY_V6)
		var dsts []string
		for _, r := range routes {
			if r.Dst != nil {
				dsts = append(dsts, r.Dst.String())
			}
		}
		joined := strings.Join(dsts, " ")
		if !strings.Contains(joined, "2001:db8:99::/48") {
			t.Errorf("static route not moved: %s", joined)
		}
		// The RA route: on the bridge with the metric after its own, an
		// expiry (it had none: MovedRARouteHold's).
		ras, err := raRoutesOf(brl.Attrs().Index)
		if err != nil {
			return err
		}
		if len(ras) != 1 || ras[0].dst.String() != "2001:db8:98::/48" || ras[0].gw.String() != "fe80::1" ||
			ras[0].priority != 1025 || ras[0].expires <= 0 || ras[0].expires > MovedRARouteHold {
			t.Errorf("RA routes on the bridge %v, want 2001:db8:98::/48 via fe80::1 metric 1025 with an expiry of at most %s", ras, MovedRARouteHold)
		}
		requireNoGlobalRoute(t, up)
		for key, want := range map[string]string{
			"net/ipv6/conf/" + name + "/accept_ra":              "2",
			"net/ipv6/conf/" + name + "/router_solicitations":   "7",
			"net/ipv6/conf/" + name + "/use_tempaddr":           "1",
			"net/ipv6/conf/" + uplink + "/accept_ra":            "0",
			"net/ipv6/conf/" + uplink + "/autoconf":             "0",
			"net/ipv6/conf/" + uplink + "/router_solicitations": "7",
		} {
			if v, err := sysctl.Sysctl(key); err != nil || v != want {
				t.Errorf("%s = %q (%v), want %s", key, v, err, want)
			}
		}
		return CheckProviderUplink(br, uplink)
	})
}

func TestEnsureProviderUplinkConcurrent(t *testing.T) {
	host, uplink := uplinkLab(t)
	name := linktest.Name("v6tpb")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			errs[i] = host.Do(func(ns.NetNS) error {
				br, err := EnsureBridge(name, 0)
				if err != nil {
					return err
				}
				_, err = EnsureProviderUplink(br, uplink, 0, uplink)
				return err
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD %d: %v", i, err)
		}
	}
	linktest.Do(t, host, func() error {
		// One of them copied the sysctls before the uplink's were
		// cleared: the bridge has the uplink's, not 0.
		if v, _ := sysctl.Sysctl("net/ipv6/conf/" + name + "/accept_ra"); v != "2" {
			t.Errorf("bridge accept_ra = %s, want the uplink's 2", v)
		}
		br, err := BridgeByName(name)
		if err != nil {
			return err
		}
		return CheckProviderUplink(br, uplink)
	})
}

func TestEnsureProviderUplinkErrors(t *testing.T) {
	host, uplink := uplinkLab(t)
	linktest.Do(t, host, func() error {
		br, err := EnsureBridge(linktest.Name("v6tpb"), 0)
		if err != nil {
			return err
		}
		if _, err := EnsureProviderUplink(br, "nosuch0", 0, "nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("missing master: %v", err)
		}
		other, err := EnsureBridge(linktest.Name("v6tpo"), 0)
		if err != nil {
			return err
		}
		up, _ := netlink.LinkByName(uplink)
		if err := netlink.LinkSetMasterByIndex(up, other.Index); err != nil {
			return err
		}
		if _, err := EnsureProviderUplink(br, uplink, 0, uplink); err == nil || !strings.Contains(err.Error(), "already a port") {
			t.Errorf("uplink of another bridge: %v", err)
		}
		if err := CheckProviderUplink(br, uplink); err == nil || !strings.Contains(err.Error(), "not a port of bridge") {
			t.Errorf("CHECK of an uplink of another bridge: %v", err)
		}
		return nil
	})
}

// requireNoGlobalRoute fails unless the uplink up keeps only routes of
// its link-local address (fe80::/64, the local table's), in every table.
func requireNoGlobalRoute(t *testing.T, up netlink.Link) {
	t.Helper()
	routes, err := uplinkRoutes(up)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if uplinkGlobal(r) {
			t.Errorf("uplink %s keeps route %s (table %d, proto %d)", up.Attrs().Name, r, r.Table, r.Protocol)
		}
	}
}

// TestEnsureProviderUplinkRA moves an uplink whose address and default
// route came from a real router's RAs (radvd in a peer netns): no global
// route stays on the uplink (the RA prefix's on-link route stayed with
// the SLAAC address), the bridge holds the default route via the router
// at once, with an expiry, and the bridge then learns it from the next RA
// and processes the rest of that RA (its SLAAC address's lifetimes are
// renewed), and once the moved route expired exactly one default route
// via the router is left, the learned one.
func TestEnsureProviderUplinkRA(t *testing.T) {
	radvd := linktest.RequireCommand(t, "radvd", "radvd")
	host, router := newNS(t), newNS(t)
	ProviderLockDir = t.TempDir()
	hold := MovedRARouteHold
	MovedRARouteHold = 6 * time.Second
	t.Cleanup(func() { MovedRARouteHold = hold })
	uplink, seg := linktest.Name("upl"), linktest.Name("seg")
	prefix := netip.MustParsePrefix("2001:db8:22::/64")
	linktest.Do(t, host, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: uplink}, PeerName: seg}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		p, err := netlink.LinkByName(seg)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(p, int(router.Fd())); err != nil {
			return err
		}
		// Expired routes are collected every second, not 30.
		for _, kv := range [][2]string{{"net/ipv6/conf/" + uplink + "/accept_ra", "1"}, {"net/ipv6/conf/" + uplink + "/autoconf", "1"},
			{"net/ipv6/conf/" + uplink + "/accept_dad", "0"}, {"net/ipv6/route/gc_interval", "1"}} {
			if _, err := sysctl.Sysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		l, err := netlink.LinkByName(uplink)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	linktest.Do(t, router, func() error {
		l, err := netlink.LinkByName(seg)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("2001:db8:22::1/64")
		a.Flags = unix.IFA_F_NODAD
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	dir := t.TempDir()
	conf := fmt.Sprintf(`interface %s {
  AdvSendAdvert on;
  MinRtrAdvInterval 3;
  MaxRtrAdvInterval 4;
  AdvDefaultLifetime 30;
  prefix %s { AdvOnLink on; AdvAutonomous on; AdvValidLifetime 86400; AdvPreferredLifetime 14400; };
};
`, seg, prefix)
	if err := os.WriteFile(filepath.Join(dir, "radvd.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	linktest.Start(t, router, radvd, "-n", "-m", "stderr", "-C", filepath.Join(dir, "radvd.conf"), "-p", filepath.Join(dir, "radvd.pid"))

	var routerLL netip.Addr
	linktest.Do(t, router, func() error {
		l, err := netlink.LinkByName(seg)
		if err != nil {
			return err
		}
		linktest.Eventually(t, 10*time.Second, 50*time.Millisecond, "router link-local address", func() (bool, string) {
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
			for _, a := range addrs {
				if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
					routerLL = AddrFromIP(a.IP)
					return true, ""
				}
			}
			return false, fmt.Sprint(addrs, err)
		})
		return nil
	})

	name := linktest.Name("v6tpb")
	linktest.Do(t, host, func() error {
		up, err := netlink.LinkByName(uplink)
		if err != nil {
			return err
		}
		var slaac netip.Addr
		linktest.Eventually(t, 30*time.Second, 50*time.Millisecond, "SLAAC address and default route on the uplink", func() (bool, string) {
			gw, err := defaultRouter(up)
			addrs, _ := netlink.AddrList(up, netlink.FAMILY_V6)
			for _, a := range addrs {
				if prefix.Contains(AddrFromIP(a.IP)) {
					slaac = AddrFromIP(a.IP)
				}
			}
			return gw == routerLL && slaac.IsValid(), fmt.Sprint(gw, err, addrs)
		})
		// The uplink stops renewing its address, which then has short
		// lifetimes: the bridge renewing them shows that it processed the
		// prefix of an RA (the kernel does that after the default route:
		// an RA it fails to add the default route of is dropped). The
		// bridge takes accept_ra_pinfo from the uplink: set back below.
		if _, err := sysctl.Sysctl("net/ipv6/conf/"+uplink+"/accept_ra_pinfo", "0"); err != nil {
			return err
		}
		if err := netlink.AddrReplace(up, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(slaac, 64)), Flags: unix.IFA_F_NODAD | unix.IFA_F_MANAGETEMPADDR,
			ValidLft: 600, PreferedLft: 500}); err != nil {
			return err
		}
		linktest.Eventually(t, 10*time.Second, 50*time.Millisecond, "the uplink's default route from an RA after the lifetimes' change", func() (bool, string) {
			ras, err := raRoutesOf(up.Attrs().Index)
			return err == nil && len(ras) == 1 && ras[0].expires > 25*time.Second, fmt.Sprint(ras, err)
		})

		br, err := EnsureBridge(name, 0)
		if err != nil {
			return err
		}
		if _, err := EnsureProviderUplink(br, uplink, 0, uplink); err != nil {
			return err
		}
		// At once: the default route via the router on the bridge, with
		// an expiry, and nothing global left on the uplink.
		ras, err := raRoutesOf(br.Index)
		if err != nil {
			return err
		}
		// (The bridge may have learned its own already: it solicits an
		// RA when the uplink gives it carrier, which radvd answers at
		// once.)
		moved := slices.IndexFunc(ras, func(r raRoute) bool { return r.priority == 1025 })
		if moved < 0 || ras[moved].dst.Bits() != 0 || ras[moved].gw != routerLL || ras[moved].expires <= 0 || ras[moved].expires > MovedRARouteHold ||
			slices.ContainsFunc(ras, func(r raRoute) bool { return r.priority != 1025 && r.priority != 1024 }) {
			t.Errorf("RA routes on the bridge right after the move: %v, want the default route via %s, metric 1025, expiring within %s (and the learned one, metric 1024)", ras, routerLL, MovedRARouteHold)
		}
		requireNoGlobalRoute(t, up)
		// The node's traffic to the segment and beyond leaves by the
		// bridge.
		for _, dst := range []string{"2001:db8:22::1", "2001:db8:99::1"} {
			rs, err := netlink.RouteGet(net.ParseIP(dst))
			if err != nil || len(rs) != 1 || rs[0].LinkIndex != br.Index {
				t.Errorf("route to %s: %v %v, want out of the bridge (index %d)", dst, rs, err, br.Index)
			}
		}
		if _, err := sysctl.Sysctl("net/ipv6/conf/"+name+"/accept_ra_pinfo", "1"); err != nil {
			return err
		}

		// The next RA: the kernel's own default route beside the moved
		// one, the address renewed.
		linktest.Eventually(t, 15*time.Second, 50*time.Millisecond, "the bridge's default route learned from an RA", func() (bool, string) {
			ras, err := raRoutesOf(br.Index)
			return err == nil && slices.ContainsFunc(ras, func(r raRoute) bool { return r.priority == 1024 && r.gw == routerLL }), fmt.Sprint(ras, err)
		})
		linktest.Eventually(t, 10*time.Second, 50*time.Millisecond, "the bridge's SLAAC address renewed by an RA", func() (bool, string) {
			addrs, err := netlink.AddrList(br, netlink.FAMILY_V6)
			for _, a := range addrs {
				if AddrFromIP(a.IP) == slaac {
					return a.ValidLft > 3600, fmt.Sprintf("valid %d preferred %d", a.ValidLft, a.PreferedLft)
				}
			}
			return false, fmt.Sprint("address gone: ", addrs, err)
		})
		// The moved route expires: the learned one is left alone.
		linktest.Eventually(t, 20*time.Second, 100*time.Millisecond, "one default route on the bridge", func() (bool, string) {
			ras, err := raRoutesOf(br.Index)
			return err == nil && len(ras) == 1 && ras[0].priority == 1024 && ras[0].gw == routerLL && ras[0].expires > 0, fmt.Sprint(ras, err)
		})
		requireNoGlobalRoute(t, up)
		return nil
	})
}

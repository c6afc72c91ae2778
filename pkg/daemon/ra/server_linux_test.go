package ra

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// slaacSysctls make the container end a SLAAC host with EUI-64 addresses.
var slaacSysctls = map[string]string{"accept_ra": "1", "autoconf": "1", "addr_gen_mode": "0", "forwarding": "0"}

// TestSLAACWithKernelAndRdisc6 serves a bridge in a lab namespace and lets
// a real kernel configure itself from it: exactly the EUI-64 address of its
// MAC, the default route via the bridge; rdisc6 shows every field. An
// Update moves the host to a new prefix; Stop withdraws the default route.
func TestSLAACWithKernelAndRdisc6(t *testing.T) {
	linktest.RequireRoot(t)
	linktest.RequireCommand(t, "rdisc6", "ndisc6")
	router, cont := linktest.NewNS(t), linktest.NewNS(t)
	bridge := linktest.Name("rabr")
	linktest.Bridge(t, router, bridge)

	prefix := netip.MustParsePrefix("2001:db8:1:2::/64")
	cfg := Config{
		Interface: bridge, Mode: ModeSLAAC, Prefixes: Prefixes(prefix), MTU: 1400,
		DNS: []netip.Addr{netip.MustParseAddr("2001:db8:cafe:a::e")}, Search: []string{"example.com", "svc.example.com"},
		RouterLifetime: 600 * time.Second,
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait := linktest.Go(t, router, func() error { return s.Run(ctx) })
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			_ = wait()
		}
	})
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("RA server not ready within 10s")
	}

	mac := net.HardwareAddr{0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc}
	linktest.Attach(t, router, bridge, linktest.Name("rah"), cont, "eth0", mac, slaacSysctls)

	want := macaddr.EUI64(prefix, mac)
	waitAddrs(t, cont, "eth0", []netip.Addr{want}, prefix)
	routerLL := linkLocal(t, router, bridge)
	waitDefaultRoute(t, cont, routerLL, true)

	out, err := linktest.Run(t, cont, 20*time.Second, "rdisc6", "-1", "-n", "-r", "3", "-w", "2000", "eth0")
	if err != nil {
		t.Fatalf("rdisc6: %v\n%s", err, out)
	}
	for _, w := range []string{
		"Stateful address conf.    :           No",
		"Stateful other conf.      :           No",
		"Router lifetime           :          600",
		"Prefix                   : 2001:db8:1:2::/64",
		"On-link                 :          Yes",
		"Autonomous address conf.:          Yes",
		"Valid time              :      2592000",
		"Pref. time              :       604800",
		"MTU                      :         1400",
		"Recursive DNS server     : 2001:db8:cafe:a::e",
		"DNS search list          : example.com",
		"svc.example.com",
		"from " + routerLL.String(),
	} {
		if !strings.Contains(squeeze(out), squeeze(w)) {
			t.Errorf("rdisc6 output lacks %q:\n%s", w, out)
		}
	}

	// A new prefix: the host forms the address in it; the old one is
	// advertised with lifetimes 0, so the host deprecates its address.
	next := netip.MustParsePrefix("2001:db8:1:3::/64")
	cfg.Prefixes = Prefixes(next)
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, cont, "eth0", []netip.Addr{macaddr.EUI64(next, mac)}, next)

	cancel()
	if err := wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	stopped = true
	waitDefaultRoute(t, cont, routerLL, false)
}

// TestModesWithRdisc6 checks the M/O/A flags each mode advertises, as a
// real client reads them.
func TestModesWithRdisc6(t *testing.T) {
	linktest.RequireRoot(t)
	linktest.RequireCommand(t, "rdisc6", "ndisc6")
	for _, tc := range []struct{ mode, m, o, a string }{
		{ModeDHCPv6Stateless, "No", "Yes", "Yes"},
		{ModeDHCPv6Stateful, "Yes", "Yes", "No"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			router, cont := linktest.NewNS(t), linktest.NewNS(t)
			bridge := linktest.Name("rabr")
			linktest.Bridge(t, router, bridge)
			s, err := New(Config{Interface: bridge, Mode: tc.mode, Prefixes: Prefixes(netip.MustParsePrefix("2001:db8:5::/64"))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			wait := linktest.Go(t, router, func() error { return s.Run(ctx) })
			t.Cleanup(func() { cancel(); _ = wait() })
			linktest.Attach(t, router, bridge, linktest.Name("rah"), cont, "eth0", net.HardwareAddr{2, 0, 0, 1, 2, 3}, nil)
			<-s.Ready()
			out, err := linktest.Run(t, cont, 20*time.Second, "rdisc6", "-1", "-n", "-r", "3", "-w", "2000", "eth0")
			if err != nil {
				t.Fatalf("rdisc6: %v\n%s", err, out)
			}
			for _, w := range []string{
				"Stateful address conf. : " + tc.m,
				"Stateful other conf. : " + tc.o,
				"Autonomous address conf.: " + tc.a,
				"On-link : Yes",
			} {
				if !strings.Contains(squeeze(out), w) {
					t.Errorf("rdisc6 output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// squeeze collapses runs of spaces, so expectations do not depend on
// rdisc6's column widths.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }

func linkLocal(t *testing.T, netns ns.NetNS, ifname string) netip.Addr {
	t.Helper()
	var addrs []net.Addr
	linktest.Do(t, netns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		addrs, err = ifi.Addrs()
		return err
	})
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
			return p.Addr()
		}
	}
	t.Fatalf("%s has no link-local address", ifname)
	return netip.Addr{}
}

// waitAddrs waits (bounded) until the global, non-deprecated IPv6
// addresses of ifname in cont are exactly want, each with prefix length
// within.Bits().
func waitAddrs(t *testing.T, cont ns.NetNS, ifname string, want []netip.Addr, within netip.Prefix) {
	t.Helper()
	linktest.Eventually(t, 15*time.Second, 50*time.Millisecond, fmt.Sprintf("addresses %v on %s", want, ifname), func() (bool, string) {
		var have []string
		err := cont.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return err
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
			for _, a := range addrs {
				if a.Scope == int(netlink.SCOPE_UNIVERSE) && a.Flags&unix.IFA_F_DEPRECATED == 0 {
					have = append(have, a.IPNet.String())
				}
			}
			return err
		})
		if err != nil {
			return false, err.Error()
		}
		var w []string
		for _, a := range want {
			w = append(w, netip.PrefixFrom(a, within.Bits()).String())
		}
		return strings.Join(have, ",") == strings.Join(w, ","), fmt.Sprintf("have %v", have)
	})
}

// waitDefaultRoute waits (bounded) until cont has (present) or no longer
// has a default route via gw.
func waitDefaultRoute(t *testing.T, cont ns.NetNS, gw netip.Addr, present bool) {
	t.Helper()
	linktest.Eventually(t, 15*time.Second, 50*time.Millisecond, fmt.Sprintf("default route via %s present=%v", gw, present), func() (bool, string) {
		found := false
		var routes []string
		err := cont.Do(func(ns.NetNS) error {
			rs, err := netlink.RouteList(nil, netlink.FAMILY_V6)
			for _, r := range rs {
				routes = append(routes, r.String())
				if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil && r.Gw.Equal(net.IP(gw.AsSlice())) {
					found = true
				}
			}
			return err
		})
		if err != nil {
			return false, err.Error()
		}
		return found == present, fmt.Sprintf("routes %v", routes)
	})
}

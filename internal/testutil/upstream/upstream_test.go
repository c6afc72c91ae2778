package upstream

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/vmtest"
)

func TestMain(m *testing.M) {
	vmtest.InitIfGuest()
	os.Exit(m.Run())
}

// client is a netns attached to the segment as a container would be:
// ifName accepting RAs (SLAAC on), no DAD (its addresses usable at
// once). With the lab's VLAN it makes <ifName>.<vlan> on the trunk and
// returns that.
func newClient(t *testing.T, l *Lab, role, ifName string, sysctls ...string) (string, string) {
	t.Helper()
	c, err := l.NewNetns(role)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AttachNode(NetnsPath(c), ifName); err != nil {
		t.Fatal(err)
	}
	ifn := ifName
	if l.Config.VLAN > 0 {
		if err := run("ip", "-n", c, "link", "set", ifName, "up"); err != nil {
			t.Fatal(err)
		}
		ifn = fmt.Sprintf("%s.%d", ifName, l.Config.VLAN)
		if err := run("ip", "-n", c, "link", "add", "link", ifName, "name", ifn, "type", "vlan", "id", fmt.Sprint(l.Config.VLAN)); err != nil {
			t.Fatal(err)
		}
	}
	k := "net.ipv6.conf." + SysctlIf(ifn) + "."
	kv := append([]string{k + "accept_dad=0", k + "accept_ra=1", k + "autoconf=1"}, sysctls...)
	if err := Sysctl(c, kv...); err != nil {
		t.Fatal(err)
	}
	if err := run("ip", "-n", c, "link", "set", ifn, "up"); err != nil {
		t.Fatal(err)
	}
	return c, ifn
}

// tunedNUD are the container sysctls that shorten neighbour
// unreachability detection of the default router.
func tunedNUD(ifName string) []string {
	k := "net.ipv6.neigh." + SysctlIf(ifName) + "."
	return []string{k + "base_reachable_time_ms=1000", k + "delay_first_probe_time=1", k + "retrans_time_ms=200", k + "ucast_solicit=2"}
}

func out(t *testing.T, nsName string, args ...string) string {
	t.Helper()
	b, err := Exec(context.Background(), nsName, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitSLAAC waits for a global address of the prefix on ifName and
// returns it.
func waitSLAAC(t *testing.T, l *Lab, c, ifName string) netip.Addr {
	t.Helper()
	var addr netip.Addr
	if !Poll(30*time.Second, 50*time.Millisecond, func() bool {
		o, _ := Exec(context.Background(), c, "ip", "-6", "-o", "addr", "show", "dev", ifName, "scope", "global")
		for _, f := range strings.Fields(string(o)) {
			if p, err := netip.ParsePrefix(f); err == nil && l.Config.Prefix.Contains(p.Addr()) {
				addr = p.Addr()
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no SLAAC address of %s on %s within 30s: %s", l.Config.Prefix, ifName, out(t, c, "ip", "-6", "addr"))
	}
	return addr
}

// defaultRouters are the gateways of the default routes in netns c.
func defaultRouters(t *testing.T, c string) []netip.Addr {
	t.Helper()
	var gws []netip.Addr
	for _, ln := range strings.Split(out(t, c, "ip", "-6", "route", "show", "default"), "\n") {
		f := strings.Fields(ln)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "via" {
				if a, err := netip.ParseAddr(f[i+1]); err == nil {
					gws = append(gws, a)
				}
			}
		}
	}
	return gws
}

// reach pings dst from c until a reply comes (30 s at most).
func reach(t *testing.T, c string, dst netip.Addr) {
	t.Helper()
	p, err := StartPinger(c, dst, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ok := Poll(30*time.Second, 50*time.Millisecond, func() bool { return !p.LastReply().IsZero() })
	s := p.Stop()
	if !ok {
		t.Fatalf("%s: no echo reply from %s within 30s (%s)", c, dst, s)
	}
}

// failover pings FarHost from c every interval, kills victim (once
// ready, when not nil, holds: polled for 60 s), waits until the pings
// have come back for settle, and returns the stats.
func failover(t *testing.T, l *Lab, c string, victim *Router, interval, timeout time.Duration, ready func() bool) PingStats {
	t.Helper()
	p, err := StartPinger(c, FarHost, interval)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if ready != nil && !Poll(60*time.Second, 20*time.Millisecond, ready) {
		p.Stop()
		t.Fatal("not ready to kill the router within 60s")
	}
	killed := time.Now()
	if err := l.Kill(victim); err != nil {
		p.Stop()
		t.Fatal(err)
	}
	// Recovered means a second of pings without a loss: a path that
	// comes back and drops again (Outages > 1) is logged, not failed,
	// as long as it settles within timeout.
	const settle = time.Second
	ok := Poll(timeout, 50*time.Millisecond, func() bool { return p.Steady(killed, settle) })
	s := p.Stop()
	if !ok {
		t.Fatalf("pings from %s to %s did not recover steadily (%s without a loss) within %s of killing %s: %s",
			c, FarHost, settle, timeout, victim.Name, s)
	}
	if s.Outages > 1 {
		t.Logf("pings from %s to %s dropped %d times before settling: %s", c, FarHost, s.Outages, s)
	}
	return s
}

func requireCommand(t *testing.T, cmd, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err != nil {
		t.Fatalf("%s not found: install the Debian package %s (scripts/install-deps.sh)", cmd, pkg)
	}
}

// checkSegment asserts what a container on the segment must see: an
// address of the prefix by SLAAC, the default route via want (the
// virtual gateway, or either router), DNS and the search domain in the
// RA, FarHost and SegmentHost reachable.
func checkSegment(t *testing.T, l *Lab, c, ifn string, want ...netip.Addr) {
	t.Helper()
	addr := waitSLAAC(t, l, c, ifn)
	if !Poll(10*time.Second, 50*time.Millisecond, func() bool { return len(defaultRouters(t, c)) >= len(want) }) {
		t.Fatalf("default routes %v, want via %v", defaultRouters(t, c), want)
	}
	gws := defaultRouters(t, c)
	for _, w := range want {
		found := false
		for _, g := range gws {
			found = found || g == w
		}
		if !found {
			t.Fatalf("default routes via %v, want via %v", gws, want)
		}
	}
	if !vmtest.InGuest() {
		requireCommand(t, "rdisc6", "ndisc6")
		ra := out(t, c, "rdisc6", "-1", "-w", "2000", ifn)
		for _, w := range [][2]string{{"Recursive DNS server", l.DNS.String()}, {"DNS search list", l.Config.SearchDomain},
			{"Prefix", l.Config.Prefix.String()}, {"Autonomous address conf.", "Yes"}} {
			if !raHas(ra, w[0], w[1]) {
				t.Fatalf("rdisc6 %s: no %s %s in:\n%s", ifn, w[0], w[1], ra)
			}
		}
		if l.Config.Mode == VRRP && !strings.Contains(ra, "from "+GatewayLL.String()) {
			t.Fatalf("rdisc6: RA not from %s:\n%s", GatewayLL, ra)
		}
	}
	reach(t, c, FarHost)
	reach(t, c, l.SegmentHost)
	t.Logf("client %s: address %s, default via %v", c, addr, gws)
}

func TestVRRP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		advert time.Duration
	}{
		{"advert-1s", time.Second},
		{"advert-100ms", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := Start(t, Config{Mode: VRRP, AdvertInterval: tc.advert, SearchDomain: "prov.example"})
			m := l.Master()
			if m != l.Routers[0] {
				t.Fatalf("master %v, want r1 (priority 200)", m)
			}
			c, ifn := newClient(t, l, "c", "eth0")
			checkSegment(t, l, c, ifn, GatewayLL)
			backup := l.Other(m)
			s := failover(t, l, c, m, 20*time.Millisecond, 30*time.Second, nil)
			if l.Master() != backup {
				t.Fatalf("after killing %s the master is %v, want %s", m.Name, l.Master(), backup.Name)
			}
			if gws := defaultRouters(t, c); len(gws) != 1 || gws[0] != GatewayLL {
				t.Fatalf("after failover: default routes %v, want via %s only", gws, GatewayLL)
			}
			reach(t, c, l.SegmentHost)
			t.Logf("UPSTREAM-FIGURES vrrp advert=%s ping-interval=20ms lost=%d outage=%s outages=%d sent=%d",
				tc.advert, s.Lost, s.Outage.Round(time.Millisecond), s.Outages, s.Sent)
		})
	}
}

// slowEnv, set to 1, adds the slow measurements: the two-routers
// failover with the kernel's default NUD killed right after the
// client confirmed the router reachable (up to about a minute).
const slowEnv = "V6CNI_UPSTREAM_SLOW"

// TestTwoRouters measures the failover by neighbour unreachability
// detection. "delay" kills the router the client uses while the client's
// entry of it is in DELAY (as it is in the first seconds of traffic
// after the RA made it STALE): the outage is the rest of
// delay_first_probe_time plus ucast_solicit probes. "reachable" kills it
// right after the entry became REACHABLE: reachable time (random, 0.5 to
// 1.5 × base_reachable_time) comes first.
func TestTwoRouters(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		tuned     bool
		reachable bool
	}{
		{"nud-default-delay", false, false},
		{"nud-tuned-delay", true, false},
		{"nud-tuned-reachable", true, true},
	}
	if os.Getenv(slowEnv) == "1" {
		cases = append(cases, struct {
			name      string
			tuned     bool
			reachable bool
		}{"nud-default-reachable", false, true})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := Start(t, Config{Mode: TwoRouters, SearchDomain: "prov.example"})
			var sysctls []string
			if tc.tuned {
				sysctls = tunedNUD("eth0")
				// The return path fails over by NUD too: the far host
				// is tuned alike, or its own default NUD would be
				// what the test measures.
				if err := Sysctl(l.FarNS, tunedNUD("eth0")...); err != nil {
					t.Fatal(err)
				}
			}
			c, ifn := newClient(t, l, "c", "eth0", sysctls...)
			checkSegment(t, l, c, ifn, l.Routers[0].LinkLocal, l.Routers[1].LinkLocal)
			victim := usedRouter(t, l, c)
			t.Logf("client's entry of the router it uses (%s) before the failover pings: %s", victim.Name,
				strings.TrimSpace(out(t, c, "ip", "-6", "neigh", "show", victim.LinkLocal.String(), "dev", ifn)))
			var ready func() bool
			state := "delay"
			if tc.reachable {
				state = "reachable"
				ready = func() bool {
					return strings.Contains(out(t, c, "ip", "-6", "neigh", "show", victim.LinkLocal.String(), "dev", ifn), "REACHABLE")
				}
			}
			s := failover(t, l, c, victim, 20*time.Millisecond, 120*time.Second, ready)
			nud := "default"
			if tc.tuned {
				nud = "tuned"
			}
			nud += " killed-in=" + state
			t.Logf("UPSTREAM-FIGURES two-routers nud=%s ping-interval=20ms lost=%d outage=%s outages=%d sent=%d",
				nud, s.Lost, s.Outage.Round(time.Millisecond), s.Outages, s.Sent)
			neigh := out(t, c, "ip", "-6", "neigh", "show", "dev", ifn)
			t.Logf("client's neighbours after failover:\n%s", neigh)

			// What garbage collection of the FAILED entry does: the
			// kernel counts a router without a neighbour entry as
			// reachable (CONFIG_IPV6_ROUTER_PREF), so it may route to
			// the dead one again. Deleting the entry is what the GC
			// does (neigh_periodic_work, once the table holds more
			// than gc_thresh1 entries).
			p, err := StartPinger(c, FarHost, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			deleted := time.Now()
			_ = run("ip", "-n", c, "-6", "neigh", "del", victim.LinkLocal.String(), "dev", ifn)
			back := Poll(30*time.Second, 50*time.Millisecond, func() bool { return p.LastReply().Sub(deleted) > 2*time.Second })
			gc := p.Stop()
			t.Logf("UPSTREAM-FIGURES two-routers nud=%s after-neigh-gc lost=%d outage=%s outages=%d sent=%d recovered=%t",
				nud, gc.Lost, gc.Outage.Round(time.Millisecond), gc.Outages, gc.Sent, gc.Recovered)
			t.Logf("after the client's entry of %s was removed: client's neighbours:\n%s\nfar host's neighbours:\n%s\nndisc_cache (all namespaces): %s",
				victim.Name, out(t, c, "ip", "-6", "neigh", "show", "dev", ifn), out(t, l.FarNS, "ip", "-6", "neigh", "show"),
				ndiscCacheStats())
			if !back {
				t.Fatalf("pings did not come back within 30s of removing the dead router's neighbour entry: %s", gc)
			}
			t.Logf("route get after GC: %s", out(t, c, "ip", "-6", "route", "get", FarHost.String()))
		})
	}
}

// ndiscCacheStats is the host-wide ndisc_cache table's entry count and
// gc_thresh1 (the periodic GC removes FAILED entries only above it).
func ndiscCacheStats() string {
	b, err := exec.Command("ip", "-s", "-6", "ntable", "show", "name", "ndisc_cache").Output()
	if err != nil {
		return err.Error()
	}
	var thresh1, entries string
	f := strings.Fields(string(b))
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "thresh1":
			thresh1 = f[i+1]
		case "entries":
			entries = f[i+1]
		}
	}
	return fmt.Sprintf("entries=%s gc_thresh1=%s", entries, thresh1)
}

// usedRouter is the router the client's route to FarHost goes through.
func usedRouter(t *testing.T, l *Lab, c string) *Router {
	t.Helper()
	r, err := l.RouterTo(c, FarHost)
	if err != nil || r == nil {
		t.Fatalf("route from %s to %s goes via no router: %v", c, FarHost, err)
	}
	return r
}

func TestDHCPv6(t *testing.T) {
	t.Parallel()
	requireCommand(t, "dhclient", "isc-dhcp-client")
	for _, tc := range []struct {
		mode Addressing
		args []string
	}{
		{DHCPv6Stateful, nil},
		{DHCPv6Stateless, []string{"-S"}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			t.Parallel()
			l := Start(t, Config{Mode: VRRP, Addressing: tc.mode, SearchDomain: "prov.example"})
			c, ifn := newClient(t, l, "c", "eth0")
			// The RA gives the default route; the flags say what to ask.
			if !Poll(30*time.Second, 50*time.Millisecond, func() bool { return len(defaultRouters(t, c)) > 0 }) {
				t.Fatal("no default route by RA within 30s")
			}
			ra := out(t, c, "rdisc6", "-1", "-w", "2000", ifn)
			wantM, wantO := "No", "Yes"
			if tc.mode == DHCPv6Stateful {
				wantM = "Yes"
			}
			if !raHas(ra, "Stateful address conf.", wantM) || !raHas(ra, "Stateful other conf.", wantO) {
				t.Fatalf("rdisc6: want M %s, O %s in:\n%s", wantM, wantO, ra)
			}
			dc, err := l.StartDHCPClient(c, ifn, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer dc.Stop()
			want := "BOUND6"
			if tc.mode == DHCPv6Stateless {
				want = "RENEW6" // dhclient -S reports its Reply so
			}
			line, err := dc.Await(want, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("dhclient: %s", line)
			if !strings.Contains(line, "dns="+l.DNS.String()) || !strings.Contains(line, "search=prov.example") {
				t.Fatalf("dhclient got %q, want dns=%s search=prov.example", line, l.DNS)
			}
			if tc.mode == DHCPv6Stateful {
				var addr netip.Addr
				for _, f := range strings.Fields(line) {
					if v, ok := strings.CutPrefix(f, "addr="); ok {
						addr, _ = netip.ParseAddr(v)
					}
				}
				if !addr.IsValid() || addr.Less(l.Kea.PoolStart) || l.Kea.PoolEnd.Less(addr) {
					t.Fatalf("dhclient's address %v not in Kea's pool %s-%s", addr, l.Kea.PoolStart, l.Kea.PoolEnd)
				}
				leases, err := l.Kea.Leases()
				if err != nil || !strings.Contains(leases, addr.String()) {
					t.Fatalf("Kea's leases (%v) hold no %s:\n%s", err, addr, leases)
				}
				reach(t, c, FarHost)
			} else if a := globalAddrs(t, c, ifn); len(a) == 0 {
				t.Fatalf("stateless: no SLAAC address on %s", ifn)
			}
		})
	}
}

// raHas reports whether rdisc6's output has the field label with value.
func raHas(ra, label, value string) bool {
	for _, ln := range strings.Split(ra, "\n") {
		k, v, ok := strings.Cut(ln, ":")
		if ok && strings.TrimSpace(k) == label && strings.TrimSpace(v) == value {
			return true
		}
	}
	return false
}

func globalAddrs(t *testing.T, c, ifn string) []string {
	t.Helper()
	var as []string
	for _, f := range strings.Fields(out(t, c, "ip", "-6", "-o", "addr", "show", "dev", ifn, "scope", "global")) {
		if _, err := netip.ParsePrefix(f); err == nil {
			as = append(as, f)
		}
	}
	return as
}

func TestSegmentAddr(t *testing.T) {
	t.Parallel()
	l := Start(t, Config{Mode: TwoRouters, Addressing: Static})
	dup := hostAddr(l.Config.Prefix, 0x4242)
	if _, err := l.AddSegmentAddr(dup); err != nil {
		t.Fatal(err)
	}
	// A client adding the same address with DAD sees it duplicated.
	c, ifn := newClient(t, l, "c", "eth0", "net.ipv6.conf.eth0.accept_dad=1")
	if err := run("ip", "-n", c, "addr", "add", netip.PrefixFrom(dup, 64).String(), "dev", ifn); err != nil {
		t.Fatal(err)
	}
	if !Poll(10*time.Second, 50*time.Millisecond, func() bool {
		return strings.Contains(out(t, c, "ip", "-6", "addr", "show", "dev", ifn), "dadfailed")
	}) {
		t.Fatalf("DAD of %s did not fail:\n%s", dup, out(t, c, "ip", "-6", "addr", "show", "dev", ifn))
	}
	// Static addressing: the RA gives routes, no address.
	if !Poll(30*time.Second, 50*time.Millisecond, func() bool { return len(defaultRouters(t, c)) == 2 }) {
		t.Fatalf("default routes %v, want via both routers", defaultRouters(t, c))
	}
	for _, a := range globalAddrs(t, c, ifn) {
		if !strings.HasPrefix(a, dup.String()+"/") {
			t.Fatalf("static addressing: unexpected address %s on %s", a, ifn)
		}
	}
}

package ra

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// TestRenumberWithKernel is make-before-break renumbering as a real SLAAC
// host sees it. Before: P0 with the default lifetimes and P1 whose valid
// lifetime ends 16 s after the start (a delegated prefix near its end).
// The Update advertises P2 and both old prefixes deprecated: P1 with the
// valid time it has left, P0 with a valid lifetime of 5 s. The kernel
// forms a preferred address in P2, marks the P0 and P1 addresses
// deprecated, removes the P1 address when P1's valid lifetime ends, and
// keeps P0's: RFC 4862 section 5.5.3 e lets an RA lower an address's
// remaining valid lifetime to no less than 2 hours, so only a prefix
// whose lifetime was already short goes on time (which is why the
// renumber worker deletes old addresses itself at their valid end).
func TestRenumberWithKernel(t *testing.T) {
	linktest.RequireRoot(t)
	router, cont := linktest.NewNS(t), linktest.NewNS(t)
	bridge := linktest.Name("rnbr")
	linktest.Bridge(t, router, bridge)

	p0 := netip.MustParsePrefix("2001:db8:1:10::/64")
	p1 := netip.MustParsePrefix("2001:db8:1:11::/64")
	p2 := netip.MustParsePrefix("2001:db8:1:12::/64")
	p1End := time.Now().Add(16 * time.Second)
	cfg := Config{
		Interface: bridge, Mode: ModeSLAAC, RouterLifetime: 600 * time.Second,
		Prefixes: []Prefix{{Prefix: p0}, {Prefix: p1, ValidUntil: p1End}},
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait := linktest.Go(t, router, func() error { return s.Run(ctx) })
	t.Cleanup(func() { cancel(); _ = wait() })
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("RA server not ready within 10s")
	}
	mac := net.HardwareAddr{0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcd}
	linktest.Attach(t, router, bridge, linktest.Name("rnh"), cont, "eth0", mac, slaacSysctls)
	a0, a1, a2 := macaddr.EUI64(p0, mac), macaddr.EUI64(p1, mac), macaddr.EUI64(p2, mac)
	linktest.Eventually(t, 10*time.Second, 50*time.Millisecond, "P0 and P1 addresses preferred", func() (bool, string) {
		have := kernelAddrs(t, cont, "eth0")
		return usable(have, a0) && usable(have, a1), describe(have)
	})

	cfg.Prefixes = []Prefix{
		{Prefix: p0, Deprecated: true, Valid: 5 * time.Second},
		{Prefix: p1, Deprecated: true, ValidUntil: p1End},
		{Prefix: p2},
	}
	updated := time.Now()
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	// Polled every 10 ms: the figure is how long after the Update the
	// host can use the new address (RA delay, then DAD).
	var tookPreferred, tookSeen time.Duration
	linktest.Eventually(t, 15*time.Second, 10*time.Millisecond, "P2 address preferred, P0 and P1 deprecated", func() (bool, string) {
		have := kernelAddrs(t, cont, "eth0")
		if _, ok := have[a2]; ok && tookSeen == 0 {
			tookSeen = time.Since(updated)
		}
		if usable(have, a2) && tookPreferred == 0 {
			tookPreferred = time.Since(updated)
		}
		return tookPreferred > 0 && deprecated(have[a0]) && deprecated(have[a1]), describe(have)
	})
	// The address appears (tentative) when the RA arrives; it is
	// preferred once DAD is done (about 1 s, plus a random delay).
	t.Logf("the host had the new prefix's address %s after the Update, preferred after %s",
		tookSeen.Round(time.Millisecond), tookPreferred.Round(time.Millisecond))

	have := kernelAddrs(t, cont, "eth0")
	if v := have[a0].ValidLft; v < 3600 {
		t.Errorf("P0 address valid for %d s after an RA said 5 s: want about 7200 s (RFC 4862 5.5.3 e)", v)
	}
	if v := have[a1].ValidLft; v > 16 {
		t.Errorf("P1 address valid for %d s, want at most P1's 16 s", v)
	}
	t.Logf("after the Update: %s", describe(have))

	linktest.Eventually(t, time.Until(p1End)+10*time.Second, 100*time.Millisecond, "P1 address removed at P1's valid end", func() (bool, string) {
		have := kernelAddrs(t, cont, "eth0")
		_, present := have[a1]
		return !present, describe(have)
	})
	// Lifetimes go in whole seconds (truncated), so up to 1 s early.
	t.Logf("P1 address gone at P1's valid end %+.1fs", time.Since(p1End).Seconds())
	have = kernelAddrs(t, cont, "eth0")
	if _, ok := have[a0]; !ok || !deprecated(have[a0]) {
		t.Errorf("P0 address %s should stay, deprecated (2-hour rule): %s", a0, describe(have))
	}
	if st, ok := have[a2]; !ok || deprecated(st) {
		t.Errorf("P2 address %s should stay preferred: %s", a2, describe(have))
	}

	// The first Update came right after the host joined, within 3 s of
	// the last multicast RA (the answer to the host's solicitation), so
	// its RA waited for MIN_DELAY_BETWEEN_RAS. Now the last one is older:
	// the RA of an Update goes out at once.
	p3 := netip.MustParsePrefix("2001:db8:1:13::/64")
	a3 := macaddr.EUI64(p3, mac)
	cfg.Prefixes = append(cfg.Prefixes[2:], Prefix{Prefix: p3})
	updated = time.Now()
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	linktest.Eventually(t, 10*time.Second, 10*time.Millisecond, "P3 address preferred", func() (bool, string) {
		have := kernelAddrs(t, cont, "eth0")
		if usable(have, a3) {
			took = time.Since(updated)
			return true, ""
		}
		return false, describe(have)
	})
	t.Logf("second Update: the host had a preferred address in the new prefix after %s", took.Round(time.Millisecond))
}

// usable: a is there, neither tentative nor deprecated.
func usable(addrs map[netip.Addr]netlink.Addr, a netip.Addr) bool {
	st, ok := addrs[a]
	return ok && st.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DEPRECATED) == 0
}

func deprecated(a netlink.Addr) bool { return a.IPNet != nil && a.Flags&unix.IFA_F_DEPRECATED != 0 }

// kernelAddrs is the global IPv6 addresses of ifname in cont.
func kernelAddrs(t *testing.T, cont ns.NetNS, ifname string) map[netip.Addr]netlink.Addr {
	t.Helper()
	out := map[netip.Addr]netlink.Addr{}
	linktest.Do(t, cont, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && a.Scope == int(netlink.SCOPE_UNIVERSE) {
				out[ip] = a
			}
		}
		return err
	})
	return out
}

// describe is what `ip -6 addr` would say of addrs.
func describe(addrs map[netip.Addr]netlink.Addr) string {
	var b strings.Builder
	for ip, a := range addrs {
		flags := ""
		if a.Flags&unix.IFA_F_DEPRECATED != 0 {
			flags += " deprecated"
		}
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			flags += " tentative"
		}
		fmt.Fprintf(&b, "[%s%s valid_lft %d preferred_lft %d] ", ip, flags, a.ValidLft, a.PreferedLft)
	}
	return b.String()
}

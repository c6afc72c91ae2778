package bridgesvc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6server"
	"github.com/v6cni/v6cni/pkg/daemon/ra"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/link"
)

// fakePD is a LifetimeFunc whose answers a test changes.
type fakePD struct {
	mu  sync.Mutex
	lts map[netip.Prefix][2]time.Time // delegated prefix → preferredUntil, validUntil
}

func (f *fakePD) set(p netip.Prefix, preferred, valid time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lts[p] = [2]time.Time{preferred, valid}
}

func (f *fakePD) lifetimes(block netip.Prefix) (time.Time, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, lt := range f.lts {
		if p.Contains(block.Addr()) && p.Bits() <= block.Bits() {
			return lt[0], lt[1], true
		}
	}
	return time.Time{}, time.Time{}, false
}

// gatewayCalls records what followGateways asked of the bridge.
type gatewayCalls struct {
	mu    sync.Mutex
	calls []string
}

func (g *gatewayCalls) setters() gatewayLifetimes {
	return gatewayLifetimes{
		deprecate: func(b netip.Prefix, until time.Time) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.calls = append(g.calls, fmt.Sprintf("deprecate %s %s", b, until.Format(time.TimeOnly)))
			return nil
		},
		restore: func(b netip.Prefix) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.calls = append(g.calls, "restore "+b.String())
			return nil
		},
	}
}

func (g *gatewayCalls) get() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// TestDelegatedLifetimes: a stateful attachment renumbered from a block
// of P1 (deprecated, 90 s left) to one of P2, beside one in a pool block.
// The RA carries the pool block with the defaults, P2's block with P2's
// deadlines and P1's deprecated; DHCPv6 hands out the old address
// deprecated with its time left and the new one capped to P2's lifetimes;
// the old gateway goes preferred 0. When the lifetimes change (P2 past
// its preferred end, then P1 extended) the servers follow within a
// couple of seconds without any Sync.
func TestDelegatedLifetimes(t *testing.T) {
	var gw gatewayCalls
	ctx, cancel := context.WithCancel(context.Background())
	s := New(ctx, nil, "n1", slog.New(slog.DiscardHandler))
	s.gateways = gw.setters()
	t.Cleanup(func() { cancel(); s.Stop() })

	now := time.Now().Round(0)
	p1, p2 := netip.MustParsePrefix("2001:db8:100::/56"), netip.MustParsePrefix("2001:db8:200::/56")
	oldBlk, newBlk, poolBlk := netip.MustParsePrefix("2001:db8:100:1::/64"), netip.MustParsePrefix("2001:db8:200:1::/64"), netip.MustParsePrefix("fd00:10::/64")
	pd := &fakePD{lts: map[netip.Prefix][2]time.Time{}}
	pd.set(p1, now.Add(-time.Minute), now.Add(90*time.Second))
	pd.set(p2, now.Add(30*time.Minute), now.Add(time.Hour))

	bridge := linktest.Name("lfbr") // never created: the servers retry, configure is what is tested
	id := store.AttachmentID{Network: "lf", ContainerID: "c-lf", IfName: "eth0"}
	pool := store.AttachmentID{Network: "lf", ContainerID: "c-pool", IfName: "eth0"}
	mac := net.HardwareAddr{2, 0, 0, 0, 0x1f, 1}
	oldAddr, newAddr := netip.MustParseAddr("2001:db8:100:1::5"), netip.MustParseAddr("2001:db8:200:1::5")
	s.mu.Lock()
	s.add(bridge, ra.ModeDHCPv6Stateful, id, svcMember{mac: mac, addrs: []memberAddr{{oldAddr, oldBlk}, {newAddr, newBlk}}})
	s.add(bridge, ra.ModeDHCPv6Stateful, pool, svcMember{mac: net.HardwareAddr{2, 0, 0, 0, 0x1f, 2}, addrs: []memberAddr{{netip.MustParseAddr("fd00:10::7"), poolBlk}}})
	s.mu.Unlock()
	if got := raPrefixes(s, bridge); got[0] != (ra.Prefix{Prefix: oldBlk}) {
		t.Fatalf("before SetLifetimes every block has the defaults: %+v", got)
	}

	s.SetLifetimes(pd.lifetimes)
	want := []ra.Prefix{
		{Prefix: oldBlk, Deprecated: true, PreferredUntil: now.Add(-time.Minute).UTC(), ValidUntil: now.Add(90 * time.Second).UTC()},
		{Prefix: newBlk, PreferredUntil: now.Add(30 * time.Minute).UTC(), ValidUntil: now.Add(time.Hour).UTC()},
		{Prefix: poolBlk},
	}
	if got := raPrefixes(s, bridge); !slices.Equal(got, want) {
		t.Fatalf("RA prefixes\n%+v\nwant\n%+v", got, want)
	}
	if got, want := gw.get(), []string{"deprecate " + oldBlk.String() + " " + now.Add(90*time.Second).UTC().Format(time.TimeOnly)}; !slices.Equal(got, want) {
		t.Fatalf("gateway calls %q, want %q", got, want)
	}

	leases, ok := s.lookup(bridge, dhcp6server.Origin{MAC: mac, Port: link.HostVethName(id.ContainerID, id.IfName)})
	if !ok || len(leases) != 2 {
		t.Fatalf("lookup = %+v, %v; want the old and the new address", leases, ok)
	}
	if l := leases[0]; l.Addr != oldAddr || !l.Deprecated || l.Valid > 90*time.Second || l.Valid < 80*time.Second {
		t.Errorf("old lease %+v, want deprecated with about 90 s valid", l)
	}
	if l := leases[1]; l.Addr != newAddr || l.Deprecated || l.Preferred > 30*time.Minute || l.Preferred < 29*time.Minute ||
		l.Valid > time.Hour || l.Valid < 59*time.Minute {
		t.Errorf("new lease %+v, want min(default, left): about P2's 30 min preferred and 1 h valid", l)
	}

	// P2's preferred end passes: its block goes deprecated, the old
	// gateway of P2 too; then a Reply extends P1 again (preferred 10 min):
	// its block is preferred again, its gateway restored.
	pd.set(p2, time.Now().Add(-time.Second), now.Add(time.Hour))
	waitPrefixes(t, s, bridge, "P2's block deprecated", func(ps []ra.Prefix) bool { return ps[1].Deprecated })
	later := time.Now().Round(0)
	pd.set(p1, later.Add(10*time.Minute), later.Add(20*time.Minute))
	waitPrefixes(t, s, bridge, "P1's block preferred again", func(ps []ra.Prefix) bool {
		return !ps[0].Deprecated && ps[0].ValidUntil.Equal(later.Add(20*time.Minute))
	})
	calls := gw.get()
	if len(calls) != 3 || !strings.HasPrefix(calls[1], "deprecate "+newBlk.String()) || calls[2] != "restore "+oldBlk.String() {
		t.Fatalf("gateway calls %q: want P2's block deprecated, then P1's restored", calls)
	}

	// P1's valid end: its block is advertised no more, its address no
	// more handed out.
	pd.set(p1, time.Now().Add(-time.Minute), time.Now().Add(-time.Second))
	waitPrefixes(t, s, bridge, "P1's block gone from the RA", func(ps []ra.Prefix) bool { return len(ps) == 2 && ps[0].Prefix == newBlk })
	leases, _ = s.lookup(bridge, dhcp6server.Origin{MAC: mac, Port: link.HostVethName(id.ContainerID, id.IfName)})
	if len(leases) != 1 || leases[0].Addr != newAddr {
		t.Fatalf("lookup after P1's end = %+v, want only the new address", leases)
	}
}

func raPrefixes(s *Services, bridge string) []ra.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bridges[bridge].raCfg.Prefixes)
}

func waitPrefixes(t *testing.T, s *Services, bridge, what string, ok func([]ra.Prefix) bool) {
	t.Helper()
	linktest.Eventually(t, 10*time.Second, 50*time.Millisecond, what, func() (bool, string) {
		ps := raPrefixes(s, bridge)
		return ok(ps), fmt.Sprintf("%+v", ps)
	})
}

func TestPDLifetimes(t *testing.T) {
	now := time.Now()
	f := PDLifetimes(fakeSource{
		{Prefix: netip.MustParsePrefix("2001:db8:100::/56"), Preferred: now.Add(time.Minute), Valid: now.Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("2001:db8:200::/56")},
	})
	for _, tc := range []struct {
		block       string
		pref, valid time.Time
		ok          bool
	}{
		{"2001:db8:100:3::/64", now.Add(time.Minute), now.Add(time.Hour), true},
		{"2001:db8:200:ff::/64", time.Time{}, time.Time{}, true},
		{"2001:db8:100::/48", time.Time{}, time.Time{}, false}, // wider than the prefix
		{"fd00::/64", time.Time{}, time.Time{}, false},
	} {
		p, v, ok := f(netip.MustParsePrefix(tc.block))
		if !p.Equal(tc.pref) || !v.Equal(tc.valid) || ok != tc.ok {
			t.Errorf("%s: %v %v %v, want %v %v %v", tc.block, p, v, ok, tc.pref, tc.valid, tc.ok)
		}
	}
}

// TestPDLifetimesNotCurrent: after a Rebind brought P2 and left P1
// unmentioned, P1 still has preferred time left in the binding, but its
// blocks are advertised deprecated from P2's arrival on.
func TestPDLifetimesNotCurrent(t *testing.T) {
	now := time.Now()
	arrived := now.Add(-5 * time.Second)
	f := PDLifetimes(fakeSource{
		{Prefix: netip.MustParsePrefix("2001:db8:100::/56"), Preferred: now.Add(time.Minute), Valid: now.Add(time.Hour), Updated: now.Add(-time.Minute)},
		{Prefix: netip.MustParsePrefix("2001:db8:200::/56"), Preferred: now.Add(2 * time.Minute), Valid: now.Add(2 * time.Hour), Updated: arrived},
	})
	for _, tc := range []struct {
		block       string
		pref, valid time.Time
	}{
		{"2001:db8:100:1::/64", arrived, now.Add(time.Hour)},
		{"2001:db8:200:1::/64", now.Add(2 * time.Minute), now.Add(2 * time.Hour)},
	} {
		p, v, ok := f(netip.MustParsePrefix(tc.block))
		if !ok || !p.Equal(tc.pref) || !v.Equal(tc.valid) {
			t.Errorf("%s: %v %v %v, want %v %v true", tc.block, p, v, ok, tc.pref, tc.valid)
		}
	}
}

type fakeSource []allocator.Delegated

func (fakeSource) Interface() string                  { return "uplink0" }
func (f fakeSource) Delegated() []allocator.Delegated { return f }

// TestSyncRenumberedHandle: a handle holding two addresses (the old and
// the new one of a renumbering, as allocator.Renumber writes it) puts
// both blocks in the RA and both addresses in DHCPv6.
func TestSyncRenumberedHandle(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := store.AttachmentID{Network: "renum", ContainerID: "c-renum", IfName: "eth0"}
	bridge := linktest.Name("rnbr") // never created
	h := store.Handle{AttachmentID: id, Node: "n1", MAC: "02:00:00:00:00:21", Bridge: bridge, Mode: ra.ModeDHCPv6Stateful,
		IPs: []store.IP{
			{Address: netip.MustParsePrefix("2001:db8:100:1::5/64"), Block: netip.MustParsePrefix("2001:db8:100:1::/64")},
			{Address: netip.MustParsePrefix("2001:db8:200:1::5/64"), Block: netip.MustParsePrefix("2001:db8:200:1::/64")},
		}}
	val, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, store.HandleKey(id), string(val)); err != nil {
		t.Fatal(err)
	}
	svcCtx, stop := context.WithCancel(context.Background())
	s := New(svcCtx, st, "n1", slog.New(slog.DiscardHandler))
	t.Cleanup(func() { stop(); s.Stop() })
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := raPrefixes(s, bridge), ra.Prefixes(h.IPs[0].Block, h.IPs[1].Block); !slices.Equal(got, want) {
		t.Fatalf("RA prefixes %+v, want %+v", got, want)
	}
	mac, _ := net.ParseMAC(h.MAC)
	leases, ok := s.lookup(bridge, dhcp6server.Origin{MAC: mac, Port: link.HostVethName(id.ContainerID, id.IfName)})
	if !ok || len(leases) != 2 || leases[0] != (dhcp6server.Lease{Addr: h.IPs[0].Address.Addr()}) || leases[1] != (dhcp6server.Lease{Addr: h.IPs[1].Address.Addr()}) {
		t.Fatalf("lookup = %+v, %v; want both addresses with the defaults (no lifetimes set)", leases, ok)
	}
}

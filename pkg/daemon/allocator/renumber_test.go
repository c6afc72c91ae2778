package allocator

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// gwLog records the gateway moves Renumber asks for.
type gwLog struct {
	mu    sync.Mutex
	moves []string
}

func (g *gwLog) add(from, to netip.Prefix) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.moves = append(g.moves, from.String()+">"+to.String())
	return nil
}

func (g *gwLog) list() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Clone(g.moves)
	sort.Strings(out)
	return out
}

func moveText(ms []Move) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID.ContainerID+" "+m.Old.String()+">"+m.New.String()+" via "+m.NewGateway.String()+" "+m.Mode)
	}
	sort.Strings(out)
	return out
}

func keyClean(t *testing.T, st *store.Store) {
	t.Helper()
	snap, err := st.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ps := store.Check(snap); len(ps) != 0 {
		t.Errorf("ipamd check: %v", ps)
	}
}

var (
	p1 = netip.MustParsePrefix("2001:db8:aa00::/56")
	p2 = netip.MustParsePrefix("2001:db8:bb00::/56")
)

// TestRenumber: make-before-break from P1 to P2 — successor blocks at the
// same offset, a second address per attachment (interface ID kept, old one
// deprecated), repeated ADD answers the new one, idempotent, re-derived
// after a restart, and the drop at P1's valid end leaves no attachment
// lost. The ULA address of a mixed network is not touched.
func TestRenumber(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx := context.Background()
	a := newAlloc(t, st, "node1")
	gws := &gwLog{}
	a.gateways = gws.add
	pd := &fakePD{}
	a.SetPD(pd)
	t0 := time.Now()
	pd.set(Delegated{Prefix: p1, Preferred: t0.Add(time.Hour), Valid: t0.Add(2 * time.Hour), Updated: t0})
	one := parse(t, `{"name":"pd1","ipam":{"type":"pd-ipam","subnetId":1,"routes":[{"dst":"::/0"}]}}`)
	mix := parse(t, `{"name":"mix","ipam":{"ranges":[[{"subnet":"fd00:10::/48"}],[{"delegated":true,"subnetId":2}]]}}`)
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	if _, err := a.Add(ctx, Request{ID: id("pd1", "c1"), Conf: one, Netns: "/run/netns/c1", MAC: mac}); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, a, id("pd1", "c2"), one)
	mustAdd(t, a, id("mix", "c3"), mix)

	// P2 arrives, P1 deprecated (graceful).
	t1 := time.Now()
	validEnd := t1.Add(time.Hour)
	pd.set(Delegated{Prefix: p1, Preferred: t1.Add(-time.Second), Valid: validEnd, Updated: t1},
		Delegated{Prefix: p2, Preferred: t1.Add(time.Hour), Valid: t1.Add(2 * time.Hour), Updated: t1})
	moves, err := a.Renumber(ctx, p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"c1 2001:db8:aa00:1::2/64>2001:db8:bb00:1::2/64 via 2001:db8:bb00:1::1 static",
		"c2 2001:db8:aa00:1::3/64>2001:db8:bb00:1::3/64 via 2001:db8:bb00:1::1 static",
		"c3 2001:db8:aa00:2::2/64>2001:db8:bb00:2::2/64 via 2001:db8:bb00:2::1 static",
	}
	if got := moveText(moves); !slices.Equal(got, want) {
		t.Errorf("moves = %q\nwant %q", got, want)
	}
	for _, m := range moves {
		if m.ID.ContainerID == "c1" && (m.Netns != "/run/netns/c1" || m.IfName != "eth0" || m.MAC.String() != "02:00:00:00:00:01" ||
			m.OldGateway.String() != "2001:db8:aa00:1::1" || !m.OldValidUntil.Equal(validEnd.UTC())) {
			t.Errorf("move of c1 = %+v", m)
		}
	}
	if got := gws.list(); !slices.Equal(got, []string{"2001:db8:aa00:1::/64>2001:db8:bb00:1::/64", "2001:db8:aa00:2::/64>2001:db8:bb00:2::/64"}) {
		t.Errorf("gateways = %v", got)
	}
	h, _ := st.Handle(ctx, id("mix", "c3"))
	if len(h.IPs) != 3 || h.IPs[0].Address.String() != "fd00:10::2/64" || h.IPs[0].Deprecated ||
		!h.IPs[1].Deprecated || h.IPs[1].ValidUntil.IsZero() || h.IPs[2].Replaces != h.IPs[1].Address.Addr() {
		t.Errorf("handle after renumbering = %+v", h.IPs)
	}
	// A repeated ADD answers the current addresses, in range-set order.
	if got := addrs(mustAdd(t, a, id("mix", "c3"), mix)); !slices.Equal(got, []string{"fd00:10::2/64 via fd00:10::1", "2001:db8:bb00:2::2/64 via 2001:db8:bb00:2::1"}) {
		t.Errorf("repeated ADD = %v", got)
	}
	r := mustAdd(t, a, id("pd1", "c1"), one)
	if got := addrs(r); !slices.Equal(got, []string{"2001:db8:bb00:1::2/64 via 2001:db8:bb00:1::1"}) || r.Routes[0].GW.String() != "2001:db8:bb00:1::1" {
		t.Errorf("repeated ADD = %v, routes %+v", got, r.Routes)
	}
	for _, c := range []store.AttachmentID{id("pd1", "c1"), id("pd1", "c2"), id("mix", "c3")} {
		if err := a.Check(ctx, c); err != nil {
			t.Errorf("CHECK %s during the overlap: %v", c, err)
		}
	}
	keyClean(t, st)

	// Again, and after a restart: the same moves, nothing new written.
	rev := func() int64 {
		r, err := cli.Get(ctx, "/v6cni/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	before := rev()
	again, err := a.Renumber(ctx, p1, p2)
	if err != nil || !slices.Equal(moveText(again), want) {
		t.Errorf("Renumber again = %q, %v", moveText(again), err)
	}
	restarted := newAlloc(t, st, "node1")
	restarted.gateways = gws.add
	restarted.SetPD(pd)
	pending, err := restarted.PendingRenumbers(ctx)
	if err != nil || !slices.Equal(moveText(pending), want) {
		t.Errorf("PendingRenumbers = %q, %v", moveText(pending), err)
	}
	if after := rev(); after != before {
		t.Errorf("repeating the renumbering wrote to etcd (revision %d -> %d)", before, after)
	}

	// P1's valid end: the old addresses go, nobody is lost.
	pd.set(Delegated{Prefix: p2, Preferred: t1.Add(time.Hour), Valid: t1.Add(2 * time.Hour), Updated: t1})
	dropped, err := restarted.DropPrefix(ctx, p1)
	if err != nil || len(dropped) != 2 {
		t.Fatalf("DropPrefix = %v, %v", dropped, err)
	}
	for _, c := range []store.AttachmentID{id("pd1", "c1"), id("pd1", "c2"), id("mix", "c3")} {
		if err := restarted.Check(ctx, c); err != nil {
			t.Errorf("CHECK %s after the drop: %v", c, err)
		}
		h, _ := st.Handle(ctx, c)
		if h.Lost || slices.ContainsFunc(h.IPs, func(ip store.IP) bool { return p1.Contains(ip.Address.Addr()) || ip.Deprecated }) {
			t.Errorf("handle %s after the drop = %+v", c, h)
		}
	}
	if err := restarted.Status(ctx, one); err != nil {
		t.Errorf("STATUS after the drop: %v", err)
	}
	keyClean(t, st)
}

// TestRenumberConflicts: the successor block at the same offset is another
// node's (any free block is claimed instead, interface IDs kept), or this
// node's with a new container on the old interface ID (another address).
func TestRenumberConflicts(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	ctx := context.Background()
	a, b := newAlloc(t, st, "node1"), newAlloc(t, st, "node2")
	a.gateways, b.gateways = nil, nil
	pd := &clusterPD{subnetLength: 60, blockSize: 64}
	a.SetPD(pd)
	b.SetPD(pd)
	t0 := time.Now()
	pd.set(Delegated{Prefix: p1, Valid: t0.Add(time.Hour), Updated: t0})
	one := parse(t, `{"name":"pdc","ipam":{"type":"pd-ipam","subnetId":1}}`)
	mustAdd(t, a, id("pdc", "a1"), one) // node1: aa00:10::/64
	mustAdd(t, b, id("pdc", "b1"), one) // node2: aa00:11::/64

	// P2 current; node2 adds first and takes the first /64 of the slice,
	// node1's offset block.
	pd.set(Delegated{Prefix: p1, Preferred: t0, Valid: t0.Add(time.Hour), Updated: t0},
		Delegated{Prefix: p2, Valid: t0.Add(2 * time.Hour), Updated: time.Now()})
	if got := mustAdd(t, b, id("pdc", "b2"), one).IPs[0].Address.String(); got != "2001:db8:bb00:10::2/64" {
		t.Fatalf("node2 in P2 = %s", got)
	}
	ma, err := a.Renumber(ctx, p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	if got := moveText(ma); !slices.Equal(got, []string{"a1 2001:db8:aa00:10::2/64>2001:db8:bb00:11::2/64 via 2001:db8:bb00:11::1 static"}) {
		t.Errorf("node1 moves = %q (offset block taken: the next free one)", got)
	}
	// node2's offset block (bb00:11::/64) went to node1: node2 falls
	// back too; its own block bb00:10::/64 has b2 on b1's interface ID.
	mb, err := b.Renumber(ctx, p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	if len(mb) != 1 || mb[0].New.Addr() == netip.MustParseAddr("2001:db8:bb00:10::2") || !netip.MustParsePrefix("2001:db8:bb00::/56").Contains(mb[0].New.Addr()) {
		t.Errorf("node2 moves = %q", moveText(mb))
	}
	keyClean(t, st)

	// Without a successor a drop still marks the attachment lost.
	mustAdd(t, a, id("pdc", "late"), parse(t, `{"name":"pdc","ipam":{"type":"pd-ipam","subnetId":1}}`))
	h, _ := st.Handle(ctx, id("pdc", "late"))
	if !p2.Contains(h.IPs[0].Address.Addr()) {
		t.Fatalf("late ADD = %+v", h.IPs)
	}
	if _, err := a.DropPrefix(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if err := a.Check(ctx, id("pdc", "a1")); err != nil {
		t.Errorf("CHECK of a renumbered attachment after the drop: %v", err)
	}
}

// TestRebase: offsets kept, refusals where they do not fit.
func TestRebase(t *testing.T) {
	pp := netip.MustParsePrefix
	for _, tc := range []struct {
		p, from, to string
		want        string // "" : does not fit
	}{
		{"2001:db8:aa00:1::/64", "2001:db8:aa00::/56", "2001:db8:bb00::/56", "2001:db8:bb00:1::/64"},
		{"2001:db8:aa00:1::/64", "2001:db8:aa00::/56", "2001:db8:bb00::/60", "2001:db8:bb00:1::/64"},
		{"2001:db8:aa00:10::/64", "2001:db8:aa00::/56", "2001:db8:bb00::/60", ""},
		{"2001:db8:aa00:1:8000::/65", "2001:db8:aa00::/56", "2001:db8:cc00::/48", "2001:db8:cc00:1:8000::/65"},
		{"2001:db8:aa00::/56", "2001:db8:aa00::/56", "2001:db8:bb00::/60", ""},
	} {
		got, ok := rebasePrefix(pp(tc.p), pp(tc.from), pp(tc.to))
		if (tc.want == "") == ok || (ok && got.String() != tc.want) {
			t.Errorf("rebase %s from %s to %s = %s %v, want %q", tc.p, tc.from, tc.to, got, ok, tc.want)
		}
	}
	if a, _ := rebase(netip.MustParseAddr("2001:db8:aa00:1::abcd"), pp("2001:db8:aa00:1::/64"), pp("2001:db8:bb00:7::/64")); a.String() != "2001:db8:bb00:7::abcd" {
		t.Errorf("interface ID not kept: %s", a)
	}
}

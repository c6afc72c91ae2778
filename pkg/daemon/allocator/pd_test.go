package allocator

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// fakePD is a PD client holding whatever the test says.
type fakePD struct {
	mu   sync.Mutex
	held []Delegated
}

func (f *fakePD) Interface() string { return "uplink0" }
func (f *fakePD) Delegated() []Delegated {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Delegated(nil), f.held...)
}
func (f *fakePD) set(d ...Delegated) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held = d
}

func TestPDNetworks(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	ctx := context.Background()
	one := parse(t, `{"name":"pd1","ipam":{"type":"pd-ipam","subnetId":1,"routes":[{"dst":"::/0"}]}}`)
	two := parse(t, `{"name":"pd2","ipam":{"type":"pd-ipam","subnetId":2}}`)
	big := parse(t, `{"name":"pd3","ipam":{"type":"pd-ipam","subnetId":256}}`)

	_, err := a.Add(ctx, Request{ID: id("pd1", "c1"), Conf: one})
	wantKind(t, err, KindNoPrefix, "no DHCPv6-PD client")

	pd := &fakePD{}
	a.SetPD(pd)
	_, err = a.Add(ctx, Request{ID: id("pd1", "c1"), Conf: one})
	wantKind(t, err, KindNoPrefix, "waiting for a delegated prefix on uplink0")
	wantKind(t, a.Status(ctx, one), KindUnavailable, "waiting for a delegated prefix")

	pd.set(Delegated{Prefix: netip.MustParsePrefix("2001:db8:aa00::/56"), Preferred: time.Now().Add(time.Hour), Valid: time.Now().Add(2 * time.Hour)})
	r1 := mustAdd(t, a, id("pd1", "c1"), one)
	r2 := mustAdd(t, a, id("pd2", "c1"), two)
	if got := r1.IPs[0].Address.String() + " via " + r1.IPs[0].Gateway.String(); got != "2001:db8:aa00:1::2/64 via 2001:db8:aa00:1::1" {
		t.Errorf("subnetId 1 = %s", got)
	}
	if got := r2.IPs[0].Address.String(); got != "2001:db8:aa00:2::2/64" {
		t.Errorf("subnetId 2 = %s", got)
	}
	if len(r1.Routes) != 1 || r1.Routes[0].GW.String() != "2001:db8:aa00:1::1" {
		t.Errorf("routes = %v", r1.Routes)
	}
	_, err = a.Add(ctx, Request{ID: id("pd3", "c1"), Conf: big})
	wantKind(t, err, KindInvalid, "ipam.subnetId: 256", "2001:db8:aa00::/56", "0..255")
	if err := a.Status(ctx, one); err != nil {
		t.Errorf("STATUS with a prefix: %v", err)
	}
	blocks, _ := st.Blocks(ctx)
	for _, b := range blocks {
		if b.Source != "pd" || b.Node != "node1" {
			t.Errorf("block %+v: want source pd on node1", b)
		}
	}

	// Deprecated: no new addresses, existing ones stay.
	pd.set(Delegated{Prefix: netip.MustParsePrefix("2001:db8:aa00::/56"), Preferred: time.Now().Add(-time.Second), Valid: time.Now().Add(time.Hour)})
	_, err = a.Add(ctx, Request{ID: id("pd1", "c2"), Conf: one})
	wantKind(t, err, KindNoPrefix, "preferred lifetime")
	if err := a.Check(ctx, id("pd1", "c1")); err != nil {
		t.Errorf("CHECK of an existing container on a deprecated prefix: %v", err)
	}

	// Expired: blocks dropped, attachments lost, STATUS 51, CHECK fails.
	pd.set()
	dropped, err := a.DropPrefix(ctx, netip.MustParsePrefix("2001:db8:aa00::/56"))
	if err != nil || len(dropped) != 2 {
		t.Fatalf("DropPrefix = %v, %v; want two blocks", dropped, err)
	}
	wantKind(t, a.Status(ctx, one), KindDegraded, "lost")
	wantKind(t, a.Check(ctx, id("pd1", "c1")), KindNotFound, "lost")
	if blocks, _ := st.Blocks(ctx); len(blocks) != 0 {
		t.Errorf("blocks after the prefix expired: %+v", blocks)
	}
	// DEL of a lost attachment clears it; STATUS then just waits.
	if _, err := a.Del(ctx, id("pd1", "c1"), 0); err != nil {
		t.Fatal(err)
	}
	wantKind(t, a.Status(ctx, one), KindUnavailable, "waiting")

	// A new prefix serves again.
	pd.set(Delegated{Prefix: netip.MustParsePrefix("2001:db8:bb00::/64")})
	onlyZero := parse(t, `{"name":"pd0","ipam":{"type":"pd-ipam","subnetId":0}}`)
	if r := mustAdd(t, a, id("pd0", "c1"), onlyZero); r.IPs[0].Address.String() != "2001:db8:bb00::2/64" {
		t.Errorf("/64 delegation = %s", r.IPs[0].Address)
	}
	_, err = a.Add(ctx, Request{ID: id("pd1", "c3"), Conf: one})
	wantKind(t, err, KindInvalid, "subnetId: 1", "2001:db8:bb00::/64", "0..0")
}

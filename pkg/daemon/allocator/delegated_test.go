package allocator

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// TestULAPlusDelegated: one ADD of a network with a pool (ULA) range set
// and a delegated one gets both addresses, in range-set order; while no
// prefix is held the whole ADD fails; a delegated slice overlapping a pool
// subnet is refused, naming both.
func TestULAPlusDelegated(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	ctx := context.Background()
	conf := parse(t, `{"name":"mix","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"fd00:10::/48","blockSize":64}],[{"delegated":true,"subnetId":1}]],"routes":[{"dst":"::/0"}]}}`)
	pd := &fakePD{}
	a.SetPD(pd)
	_, err := a.Add(ctx, Request{ID: id("mix", "c0"), Conf: conf})
	wantKind(t, err, KindNoPrefix, "waiting for a delegated prefix")
	if hs, _ := st.Handles(ctx, "mix"); len(hs) != 0 {
		t.Errorf("handles after a failed ADD: %+v", hs)
	}

	pd.set(Delegated{Prefix: netip.MustParsePrefix("2001:db8:aa00::/56"), Valid: time.Now().Add(time.Hour), Updated: time.Now()})
	r := mustAdd(t, a, id("mix", "c1"), conf)
	got := addrs(r)
	want := []string{"fd00:10::2/64 via fd00:10::1", "2001:db8:aa00:1::2/64 via 2001:db8:aa00:1::1"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("addresses = %v, want %v", got, want)
	}
	if len(r.Routes) != 1 || r.Routes[0].GW.String() != "fd00:10::1" {
		t.Errorf("routes = %+v (a route without gw goes via the first address of its family)", r.Routes)
	}
	// A repeated ADD with a freshly parsed config: the same answer.
	again := mustAdd(t, a, id("mix", "c1"), parse(t, `{"name":"mix","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"fd00:10::/48","blockSize":64}],[{"delegated":true,"subnetId":1}]],"routes":[{"dst":"::/0"}]}}`))
	if g := addrs(again); len(g) != 2 || g[0] != want[0] || g[1] != want[1] {
		t.Errorf("repeated ADD = %v", g)
	}
	if err := a.Status(ctx, conf); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	pools, err := st.Pools(ctx)
	if err != nil || len(pools) != 1 || len(pools[0].Subnets) != 1 || pools[0].Subnets[0].String() != "fd00:10::/48" {
		t.Errorf("pools = %+v, %v (the delegated slice is not registered)", pools, err)
	}
	blocks, _ := st.Blocks(ctx)
	sources := map[string]string{}
	for _, b := range blocks {
		sources[b.CIDR.String()] = b.Source
	}
	if sources["fd00:10::/64"] != "pool" || sources["2001:db8:aa00:1::/64"] != "pd" {
		t.Errorf("blocks = %v", sources)
	}

	// A pool subnet inside the delegated prefix.
	bad := parse(t, `{"name":"over","ipam":{"ranges":[[{"subnet":"2001:db8:aa00:1::/64"}],[{"delegated":true,"subnetId":1}]]}}`)
	_, err = a.Add(ctx, Request{ID: id("over", "c1"), Conf: bad})
	wantKind(t, err, KindInvalid, "2001:db8:aa00::/56", "2001:db8:aa00:1::/64", "overlaps")
}

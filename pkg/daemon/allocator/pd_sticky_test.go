package allocator

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// TestPDStickyReused: on a sticky pd-ipam network, a pod back on the same
// node gets the address its sticky record kept. Each call parses its
// configuration afresh, as ipamd does (the allocator fills a pd-ipam
// network's range into the configuration it is given). Found by the model
// test (integration/model, V6CNI_MODEL_SEED=2): the record was released as
// "not usable here" because the configuration had no range yet.
func TestPDStickyReused(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	pd := &fakePD{}
	pd.set(Delegated{Prefix: netip.MustParsePrefix("2001:db8:ab00::/56"), Preferred: time.Now().Add(time.Hour), Valid: time.Now().Add(2 * time.Hour)})
	a.SetPD(pd)
	ctx := context.Background()
	req := func(cid string) Request {
		c := parse(t, `{"name":"pdst","ipam":{"type":"pd-ipam","subnetId":1,"sticky":true}}`)
		return Request{ID: id("pdst", cid), Conf: c, Args: ipamconf.Args{PodNamespace: "default", PodName: "web-0"}}
	}
	first, err := a.Add(ctx, req("c1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Del(ctx, id("pdst", "c1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	again, err := a.Add(ctx, req("c2"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := again.IPs[0].Address.String(), first.IPs[0].Address.String(); got != want {
		t.Errorf("pod back on its node got %s, want its sticky address %s", got, want)
	}
	if sts, err := st.Stickies(ctx); err != nil || len(sts) != 0 {
		t.Errorf("sticky records after the pod came back: %v %v, want none", sts, err)
	}
}

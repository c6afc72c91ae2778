package allocator

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// clusterPD is a PD source shared by the nodes of a segment: it has a
// layout (PDLayout), as pdnet's cluster source.
type clusterPD struct {
	fakePD
	subnetLength, blockSize int
}

func (c *clusterPD) PDLayout() (int, int) { return c.subnetLength, c.blockSize }

// TestPDClusterLayout: two nodes share one delegated /60; with blockSize
// 64 a network's slice is a pool both claim /64 blocks from, disjoint.
func TestPDClusterLayout(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	ctx := context.Background()
	pd := &clusterPD{subnetLength: 60, blockSize: 64}
	pd.set(Delegated{Prefix: netip.MustParsePrefix("2001:db8:aa10::/60"), Valid: time.Now().Add(time.Hour), Updated: time.Now()})
	n1, n2 := newAlloc(t, st, "node1"), newAlloc(t, st, "node2")
	n1.SetPD(pd)
	n2.SetPD(pd)
	conf := parse(t, `{"name":"pdc","ipam":{"type":"pd-ipam","subnetId":0}}`)

	r1 := mustAdd(t, n1, id("pdc", "c1"), conf)
	r2 := mustAdd(t, n2, id("pdc", "c2"), conf)
	r3 := mustAdd(t, n1, id("pdc", "c3"), conf)
	if got := r1.IPs[0].Address.String(); got != "2001:db8:aa10::2/64" {
		t.Errorf("node1 = %s", got)
	}
	if got := r2.IPs[0].Address.String(); got != "2001:db8:aa10:1::2/64" {
		t.Errorf("node2 = %s (want the next /64: node1 owns the first)", got)
	}
	if r3.IPs[0].Block != r1.IPs[0].Block {
		t.Errorf("node1's second address in %s, want its block %s", r3.IPs[0].Block, r1.IPs[0].Block)
	}
	blocks, err := st.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owner := map[netip.Prefix]string{}
	for _, b := range blocks {
		if b.Source != "pd" || b.Subnet.String() != "2001:db8:aa10::/60" || b.CIDR.Bits() != 64 {
			t.Errorf("block %+v: want a pd /64 of the /60", b)
		}
		owner[b.CIDR] = b.Node
	}
	if len(owner) != 2 || owner[r1.IPs[0].Block] != "node1" || owner[r2.IPs[0].Block] != "node2" {
		t.Errorf("blocks = %v", owner)
	}
	// The /60 holds one slice of /60: subnetId 1 does not fit.
	_, err = n1.Add(ctx, Request{ID: id("pdc1", "c1"), Conf: parse(t, `{"name":"pdc1","ipam":{"type":"pd-ipam","subnetId":1}}`)})
	wantKind(t, err, KindInvalid, "subnetId: 1", "2001:db8:aa10::/60", "0..0")

	// Each node drops only its own blocks.
	dropped, err := n2.DropPrefix(ctx, netip.MustParsePrefix("2001:db8:aa10::/60"))
	if err != nil || len(dropped) != 1 || dropped[0].Node != "node2" {
		t.Errorf("node2 DropPrefix = %+v, %v", dropped, err)
	}
	if err := n1.Check(ctx, id("pdc", "c1")); err != nil {
		t.Errorf("node1's attachment after node2's drop: %v", err)
	}
}

// TestPDNewestPrefixServes: after a Reply brought a second prefix, new
// addresses come from it even though its address is lower.
func TestPDNewestPrefixServes(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	pd := &fakePD{}
	a.SetPD(pd)
	now := time.Now()
	pd.set(
		Delegated{Prefix: netip.MustParsePrefix("2001:db8:bb00::/56"), Preferred: now.Add(time.Hour), Valid: now.Add(2 * time.Hour), Updated: now.Add(-time.Minute)},
		Delegated{Prefix: netip.MustParsePrefix("2001:db8:aa00::/56"), Preferred: now.Add(time.Hour), Valid: now.Add(2 * time.Hour), Updated: now},
	)
	r := mustAdd(t, a, id("pdn", "c1"), parse(t, `{"name":"pdn","ipam":{"type":"pd-ipam","subnetId":1}}`))
	if got := r.IPs[0].Address.String(); got != "2001:db8:aa00:1::2/64" {
		t.Errorf("address = %s, want one of the newest prefix", got)
	}
}

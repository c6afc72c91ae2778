package store

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
)

// TestMarkLostRacingDel: a DEL that releases the handle between MarkLost's
// read and its write must win; the handle must not come back as a zombie
// holding nothing.
func TestMarkLostRacingDel(t *testing.T) {
	s := New(etcdtest.Client(t))
	ctx := context.Background()
	b := Block{CIDR: netip.MustParsePrefix("2001:db8:77::/64"), Node: "n1", Network: "pd", Source: "pd", Claimed: time.Now()}
	if err := s.ClaimBlock(ctx, b); err != nil {
		t.Fatal(err)
	}
	h := Handle{AttachmentID: AttachmentID{"pd", "c1", "eth0"}, Node: "n1",
		IPs: []IP{{Address: netip.MustParsePrefix("2001:db8:77::2/64"), Gateway: netip.MustParseAddr("2001:db8:77::1"), Block: b.CIDR}}}
	if err := s.Allocate(ctx, h); err != nil {
		t.Fatal(err)
	}
	markLostHook = func() {
		markLostHook = nil
		if err := s.Release(ctx, h); err != nil {
			t.Errorf("concurrent DEL: %v", err)
		}
	}
	t.Cleanup(func() { markLostHook = nil })
	if err := s.MarkLost(ctx, h.AttachmentID, b.CIDR); err != nil {
		t.Fatalf("MarkLost: %v", err)
	}
	if got, err := s.Handle(ctx, h.AttachmentID); err != nil || got != nil {
		t.Fatalf("handle after DEL raced MarkLost = %+v, %v; want gone", got, err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Check(snap) {
		t.Errorf("Check: %s", p)
	}
}

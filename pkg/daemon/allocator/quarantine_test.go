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

// TestDuplicateComesBack is why duplicates are quarantined: an address
// released by a plain DEL (the rollback of an ADD whose DAD failed) is
// handed out again — by a restarted ipamd (the sequential cursor starts
// at the first free address) and, with stable addressing, to the retried
// attachment at once. One foreign host holding it would fail those ADDs.
func TestDuplicateComesBack(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t))
	for _, tt := range []struct {
		network, subnet, addressing string
		retryID                     string // the next ADD's container ID
		restart                     bool
	}{
		{"seq", "2001:db8:c1::/48", ipamconf.Sequential, "c2", true},
		{"stable", "2001:db8:c2::/48", ipamconf.Stable, "c1", false},
	} {
		t.Run(tt.network, func(t *testing.T) {
			c := conf(t, tt.network, `[[{"subnet":"`+tt.subnet+`"}]]`)
			c.IPAM.Addressing = tt.addressing
			a := newAlloc(t, st, "node1")
			first := mustAdd(t, a, id(tt.network, "c1"), c).IPs[0].Address.Addr()
			if _, err := a.Del(ctx, id(tt.network, "c1"), 0); err != nil {
				t.Fatal(err)
			}
			if tt.restart {
				a = newAlloc(t, st, "node1")
			}
			if again := mustAdd(t, a, id(tt.network, tt.retryID), c).IPs[0].Address.Addr(); again != first {
				t.Errorf("next ADD after a plain DEL got %s, not the released %s", again, first)
			}
		})
	}
}

// TestQuarantine: a duplicate named on DEL stays held in etcd by a
// quarantine record, so the same allocator, a restarted one and the
// retried attachment (stable addressing too) pass it by, until it expires;
// the attachment's other addresses are freed at once; the key space stays
// consistent; hold 0 is a plain DEL.
func TestQuarantine(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t))
	for _, addressing := range []string{ipamconf.Sequential, ipamconf.Stable} {
		t.Run(addressing, func(t *testing.T) {
			net := "prov-" + addressing
			v6 := map[string]string{ipamconf.Sequential: "2001:db8:22::/64", ipamconf.Stable: "2001:db8:23::/64"}[addressing]
			v4 := map[string]string{ipamconf.Sequential: "10.22.0.0/16", ipamconf.Stable: "10.23.0.0/16"}[addressing]
			c := conf(t, net, `[[{"subnet":"`+v6+`"}],[{"subnet":"`+v4+`"}]]`)
			c.IPAM.Addressing = addressing
			a := newAlloc(t, st, "node1")
			r := mustAdd(t, a, id(net, "c1"), c)
			dup, ip4 := r.IPs[0].Address.Addr(), r.IPs[1].Address.Addr()

			other := netip.MustParseAddr("2001:db8:22::99") // not c1's: ignored
			h, recs, err := a.Quarantine(ctx, id(net, "c1"), []netip.Addr{dup, other}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if h == nil || len(recs) != 1 || recs[0].IP.Address.Addr() != dup || recs[0].Reason != ReasonDuplicate ||
				recs[0].Attachment != id(net, "c1") || time.Until(recs[0].Expires) < 59*time.Minute {
				t.Fatalf("Quarantine = %v, %+v; want the handle and one record of %s for an hour", h, recs, dup)
			}
			if got, _ := st.Handle(ctx, id(net, "c1")); got != nil {
				t.Errorf("handle still there: %+v", got)
			}
			if holder, ok := heldBy(t, st, dup.String()+"/128"); !ok || holder.ContainerID != store.QuarantineHolder+"c1" {
				t.Errorf("holder of %s = %+v, %v; want the quarantine record's", dup, holder, ok)
			}
			if _, ok := heldBy(t, st, ip4.String()+"/32"); ok {
				t.Errorf("%s (not a duplicate) still held", ip4)
			}
			noLeaks(t, st)

			for i, al := range []*Allocator{a, newAlloc(t, st, "node1")} {
				for _, cid := range []string{"c1", "c2"} {
					if got := mustAdd(t, al, id(net, cid), c).IPs[0].Address.Addr(); got == dup {
						t.Errorf("allocator %d: ADD %s got the quarantined %s", i, cid, dup)
					}
					if _, err := al.Del(ctx, id(net, cid), 0); err != nil {
						t.Fatal(err)
					}
				}
			}

			// Not expired: kept. Expired (a second duplicate, held 1 ms):
			// freed, and free in the cache too.
			b := newAlloc(t, st, "node1")
			r = mustAdd(t, b, id(net, "c9"), c)
			short := r.IPs[0].Address.Addr()
			if _, recs, err := b.Quarantine(ctx, id(net, "c9"), []netip.Addr{short}, time.Millisecond); err != nil || len(recs) != 1 {
				t.Fatalf("Quarantine(c9) = %v, %v", recs, err)
			}
			time.Sleep(5 * time.Millisecond)
			freed, err := b.ExpireQuarantine(ctx)
			if err != nil || len(freed) != 1 || freed[0].IP.Address.Addr() != short {
				t.Fatalf("ExpireQuarantine = %+v, %v; want %s only", freed, err, short)
			}
			if _, ok := heldBy(t, st, short.String()+"/128"); ok {
				t.Errorf("%s still held after its quarantine expired", short)
			}
			if _, ok := heldBy(t, st, dup.String()+"/128"); !ok {
				t.Errorf("%s freed before its time", dup)
			}
			noLeaks(t, st)

			// Hold 0: the duplicate is freed as DEL frees it.
			r = mustAdd(t, b, id(net, "c8"), c)
			if _, recs, err := b.Quarantine(ctx, id(net, "c8"), []netip.Addr{r.IPs[0].Address.Addr()}, 0); err != nil || len(recs) != 0 {
				t.Fatalf("Quarantine(hold 0) = %v, %v", recs, err)
			}
			if _, ok := heldBy(t, st, r.IPs[0].Address.String()); ok {
				t.Errorf("hold 0: %s still held", r.IPs[0].Address)
			}
		})
	}
}

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

// noLeaks fails the test if the key space breaks an invariant: an address
// held by nobody's record, a record listing an address it does not hold.
func noLeaks(t *testing.T, st *store.Store) {
	t.Helper()
	snap, err := st.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range store.Check(snap) {
		t.Errorf("store.Check: %s", p)
	}
}

func heldBy(t *testing.T, st *store.Store, addr string) (store.AttachmentID, bool) {
	t.Helper()
	a := netip.MustParsePrefix(addr).Addr()
	held, err := st.AddrsIn(context.Background(), netip.PrefixFrom(a, a.BitLen()))
	if err != nil {
		t.Fatal(err)
	}
	h, ok := held[a]
	return h, ok
}

// TestStickyNeverLeaks: whatever order a pod's attachments are kept and
// re-created in, on one node or two, the most recent addresses are the
// sticky ones and nothing else stays held.
func TestStickyNeverLeaks(t *testing.T) {
	ctx := context.Background()
	c := parse(t, `{"name":"stk","ipam":{"sticky":true,"stickyGrace":"1h","ranges":[[{"subnet":"2001:db8:5e::/48"}]]}}`)
	pod := func(cid string) Request {
		return Request{ID: id("stk", cid), Conf: c, Args: ipamconf.Args{PodNamespace: "default", PodName: "web-0"}}
	}
	add := func(t *testing.T, a *Allocator, cid string) string {
		t.Helper()
		res, err := a.Add(ctx, pod(cid))
		if err != nil {
			t.Fatalf("%s: Add(%s): %v", a.Node(), cid, err)
		}
		return res.IPs[0].Address.String()
	}
	keep := func(t *testing.T, a *Allocator, cid string) {
		t.Helper()
		if _, err := a.Del(ctx, id("stk", cid), time.Hour); err != nil {
			t.Fatalf("%s: Del(%s, keep): %v", a.Node(), cid, err)
		}
	}
	t.Run("two attachments kept before either is reused", func(t *testing.T) {
		st := store.New(etcdtest.Client(t))
		a := newAlloc(t, st, "node1")
		// A runtime retrying a sandbox: the pod has two attachments of
		// eth0 for a moment, and both are deleted with keep.
		first := add(t, a, "sb-1")
		second := add(t, a, "sb-2")
		keep(t, a, "sb-1")
		keep(t, a, "sb-2")
		noLeaks(t, st)
		if _, ok := heldBy(t, st, first); ok {
			t.Errorf("the replaced record's address %s is still held", first)
		}
		if got := add(t, a, "sb-3"); got != second {
			t.Errorf("re-created pod got %s, want the most recently kept %s", got, second)
		}
		noLeaks(t, st)
	})
	t.Run("pod moves to another node", func(t *testing.T) {
		st := store.New(etcdtest.Client(t))
		a, b := newAlloc(t, st, "node1"), newAlloc(t, st, "node2")
		onA := add(t, a, "sb-1")
		keep(t, a, "sb-1")
		// Re-created on node2: node1's block cannot serve there.
		onB := add(t, b, "sb-2")
		if onB == onA {
			t.Fatalf("node2 was given %s of node1's block", onA)
		}
		if bl := b.Blocks(); len(bl) != 1 || !bl[0].CIDR.Contains(netip.MustParsePrefix(onB).Addr()) {
			t.Errorf("node2's address %s is not in node2's blocks %v", onB, bl)
		}
		if h, ok := heldBy(t, st, onA); ok {
			t.Errorf("node1's address %s still held by %s after the pod moved", onA, h)
		}
		noLeaks(t, st)
		// node1 learns it at its next sticky round: the address is free
		// for node1's containers again (its cache no longer holds it).
		if _, err := a.ExpireSticky(ctx); err != nil {
			t.Fatal(err)
		}
		reuse := Request{ID: id("stk", "other"), Conf: c, Args: ipamconf.Args{IPs: []netip.Addr{netip.MustParsePrefix(onA).Addr()}}}
		if _, err := a.Add(ctx, reuse); err != nil {
			t.Errorf("node1 cannot give its freed address %s again: %v", onA, err)
		}
		if _, err := a.Del(ctx, reuse.ID, 0); err != nil {
			t.Fatal(err)
		}
		// And kept again on node2, then back on node1: still one record.
		keep(t, b, "sb-2")
		again := add(t, a, "sb-3")
		if again == onB {
			t.Errorf("node1 was given %s of node2's block", onB)
		}
		keep(t, a, "sb-3")
		noLeaks(t, st)
		stickies, err := st.Stickies(ctx)
		if err != nil || len(stickies) != 1 || stickies[0].IPs[0].Address.String() != again {
			t.Errorf("sticky records = %+v, %v; want one, of %s", stickies, err, again)
		}
	})
}

// TestAttachmentOfAnotherNode: two nodes see the same container ID. Each
// node answers only for its own attachment: ADD fails, DEL and GC leave the
// other node's addresses alone, CHECK fails.
func TestAttachmentOfAnotherNode(t *testing.T) {
	ctx := context.Background()
	for _, sticky := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "sticky"}[sticky]
		t.Run(name, func(t *testing.T) {
			st := store.New(etcdtest.Client(t))
			a, b := newAlloc(t, st, "node1"), newAlloc(t, st, "node2")
			c := parse(t, `{"name":"dup","ipam":{"sticky":`+map[bool]string{false: "false", true: "true"}[sticky]+`,"ranges":[[{"subnet":"2001:db8:5f::/48"}]]}}`)
			req := Request{ID: id("dup", "same-id"), Conf: c, Args: ipamconf.Args{PodNamespace: "default", PodName: "p"}}
			res, err := a.Add(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			mine := res.IPs[0].Address.String()

			_, err = b.Add(ctx, req)
			wantKind(t, err, KindForeign, "node1")
			wantKind(t, b.Check(ctx, req.ID), KindForeign, "node1")

			if _, err := b.Del(ctx, req.ID, 0); err != nil {
				t.Errorf("DEL on node2 must succeed (idempotent): %v", err)
			}
			if _, err := b.Del(ctx, req.ID, time.Hour); err != nil {
				t.Errorf("DEL with keep on node2 must succeed: %v", err)
			}
			if _, err := b.GC(ctx, "dup", nil); err != nil {
				t.Errorf("GC on node2: %v", err)
			}
			if h, ok := heldBy(t, st, mine); !ok || h != req.ID {
				t.Fatalf("node1's address %s after node2's DEL and GC: held by %v (%v)", mine, h, ok)
			}
			if err := a.Check(ctx, req.ID); err != nil {
				t.Errorf("CHECK on node1 after node2's DEL: %v", err)
			}
			noLeaks(t, st)
			// node1's own GC does release it.
			if rel, err := a.GC(ctx, "dup", nil); err != nil || len(rel) != 1 {
				t.Errorf("GC on node1 = %v, %v; want its attachment released", rel, err)
			}
			noLeaks(t, st)
		})
	}
}

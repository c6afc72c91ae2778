package allocator

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// TestFence: after its node was removed, the allocator drops its blocks
// (unconfiguring each), never hands out an orphan's address again on this
// node, forgets an orphan that is added again or whose netns is gone, and
// its fenced writes signal the keeper.
func TestFence(t *testing.T) {
	cli := etcdtest.Client(t)
	base := store.New(cli)
	ctx := context.Background()
	reg, err := base.RegisterNode(ctx, store.Node{Name: "n1", MachineID: "m1"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fst := base.Fenced("n1", reg.Node.Epoch)
	a := newAlloc(t, fst, "n1")
	c := conf(t, "net", `[[{"subnet":"2001:db8:f::/48","blockSize":120}]]`)
	gone := Request{ID: id("net", "gone"), Conf: c, Netns: filepath.Join(t.TempDir(), "gone")} // a netns directory without it
	if _, err := a.Add(ctx, gone); err != nil {
		t.Fatal(err)
	}
	kept := mustAdd(t, a, id("net", "kept"), c)
	again := mustAdd(t, a, id("net", "again"), c)
	oldBlocks := a.Blocks()
	<-a.BlocksChanged()

	rm, err := base.RemoveNode(ctx, "n1", "test")
	if err != nil {
		t.Fatal(err)
	}
	// Before the keeper knows: a write is refused and signals it.
	if _, err := a.Add(ctx, Request{ID: id("net", "late"), Conf: c}); !errors.Is(err, KindFenced) || !errors.Is(err, store.ErrFenced) {
		t.Fatalf("ADD of a removed node = %v, want fenced", err)
	}
	select {
	case <-a.FencedSignal():
	default:
		t.Fatal("no fenced signal")
	}

	lost, err := base.HandlesAt(ctx, "n1", rm.Revision-1)
	if err != nil || len(lost) != 3 {
		t.Fatalf("handles before the removal = %v, %v", lost, err)
	}
	reg2, err := base.RegisterNode(ctx, store.Node{Name: "n1", MachineID: "m1"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var unconfigured []netip.Prefix
	dropped, err := a.Fence(ctx, Loss{Epoch: reg.Node.Epoch, At: rm.At, Reason: rm.Reason, Handles: lost}, reg2.Node.Epoch,
		func(p netip.Prefix) error { unconfigured = append(unconfigured, p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(dropped) != len(oldBlocks) || len(unconfigured) != len(oldBlocks) || len(a.Blocks()) != 0 {
		t.Fatalf("dropped %v, unconfigured %v, left %v; want all of %v", dropped, unconfigured, a.Blocks(), oldBlocks)
	}
	select {
	case <-a.BlocksChanged():
	default:
		t.Fatal("no BlocksChanged after the drop: the announcements would stay")
	}
	if fst.Epoch() != reg2.Node.Epoch {
		t.Fatalf("fenced store epoch %d, want %d", fst.Epoch(), reg2.Node.Epoch)
	}
	wantKind(t, a.Status(ctx, c), KindUnavailable, "node n1 was removed at", "(test)", "3 attachment(s) lost their addresses")

	// The same block is free again (the removal released it): claimed
	// anew, its orphans' addresses are not handed out.
	orphanAddr := kept.IPs[0].Address.Addr()
	_, err = a.Add(ctx, Request{ID: id("net", "wants-orphan"), Conf: c, Args: ipamconf.Args{IPs: []netip.Addr{orphanAddr}}})
	wantKind(t, err, KindTaken, "in use")
	fresh := mustAdd(t, a, id("net", "fresh"), c)
	for _, o := range lost {
		if o.IPs[0].Address == fresh.IPs[0].Address {
			t.Fatalf("new ADD got orphan %s's address %s", o.AttachmentID, o.IPs[0].Address)
		}
	}
	// Added again while its old handle is still there (the removal's
	// sweep not done: put back here): refused, not answered with the lost
	// addresses; after the sweep, new addresses.
	for _, h := range lost {
		if h.AttachmentID == again.ID {
			if err := base.Allocate(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err = a.Add(ctx, Request{ID: again.ID, Conf: c})
	wantKind(t, err, KindFenced, "lost its addresses")
	for _, h := range lost {
		if h.AttachmentID == again.ID {
			if err := base.Release(ctx, h); err != nil { // the sweep
				t.Fatal(err)
			}
		}
	}
	if r := mustAdd(t, a, again.ID, c); r.IPs[0].Address == again.IPs[0].Address {
		t.Fatalf("added again with its lost address %s", r.IPs[0].Address)
	}
	// netns gone: forgotten by the GC round.
	if _, err := a.Reclaim(ctx, time.Hour, NetnsExists); err != nil {
		t.Fatal(err)
	}
	var left []store.AttachmentID
	for _, h := range a.Orphans().Handles {
		left = append(left, h.AttachmentID)
	}
	if !slices.Equal(left, []store.AttachmentID{kept.ID}) {
		t.Fatalf("orphans left = %v, want only %s", left, kept.ID)
	}
	if h, err := a.Del(ctx, kept.ID, 0); err != nil || h != nil {
		t.Fatalf("DEL of an orphan = %v, %v", h, err)
	}
	if err := a.Status(ctx, c); err != nil {
		t.Fatalf("STATUS without orphans = %v", err)
	}
	// Its address can be handed out now.
	if _, err := a.Add(ctx, Request{ID: id("net", "wants-orphan"), Conf: c, Args: ipamconf.Args{IPs: []netip.Addr{orphanAddr}}}); err != nil {
		t.Fatalf("ADD of the former orphan's address: %v", err)
	}
}

// TestFenceClaimsPastOrphanBlocks: after a removal the lowest block is
// free again but its every address is an orphan's: the ADD claims the
// next block instead of saying the pool is exhausted.
func TestFenceClaimsPastOrphanBlocks(t *testing.T) {
	cli := etcdtest.Client(t)
	base := store.New(cli)
	ctx := context.Background()
	reg, err := base.RegisterNode(ctx, store.Node{Name: "n1", MachineID: "m1"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fst := base.Fenced("n1", reg.Node.Epoch)
	a := newAlloc(t, fst, "n1")
	c := conf(t, "net", `[[{"subnet":"2001:db8:e::/120","blockSize":126}]]`)
	mustAdd(t, a, id("net", "c1"), c)
	mustAdd(t, a, id("net", "c2"), c) // the /126 holds two
	rm, err := base.RemoveNode(ctx, "n1", "test")
	if err != nil {
		t.Fatal(err)
	}
	lost, err := base.HandlesAt(ctx, "n1", rm.Revision-1)
	if err != nil {
		t.Fatal(err)
	}
	reg2, err := base.RegisterNode(ctx, store.Node{Name: "n1", MachineID: "m1"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Fence(ctx, Loss{Handles: lost}, reg2.Node.Epoch, nil); err != nil {
		t.Fatal(err)
	}
	r := mustAdd(t, a, id("net", "c3"), c)
	if got := r.IPs[0].Address.String(); got != "2001:db8:e::6/126" {
		t.Fatalf("ADD after fencing got %s, want 2001:db8:e::6/126 (the second block)", got)
	}
}

package store

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
)

// TestAddSuccessor: one transaction adds the new address beside the old
// (deprecated) one, idempotently; a taken address, another node's handle,
// a gone handle and a lost fence are refused; DropReplaced then removes the
// old entry and key, and refuses (false) where no successor exists.
func TestAddSuccessor(t *testing.T) {
	cli := etcdtest.Client(t)
	base := New(cli)
	ctx := context.Background()
	testPool(t, base)
	r := register(t, base, "x", "m")
	s := base.Fenced("x", r.Node.Epoch)
	oldB, newB := testBlock("x", 1), testBlock("x", 2)
	for _, b := range []Block{oldB, newB} {
		if err := s.ClaimBlock(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	h := testHandle("x", oldB, 0)
	if err := s.Allocate(ctx, h); err != nil {
		t.Fatal(err)
	}
	old := h.IPs[0].Address.Addr()
	next := IP{Address: netip.PrefixFrom(netip.MustParseAddr("2001:db8:2::2"), 64), Gateway: netip.MustParseAddr("2001:db8:2::1"), Block: newB.CIDR}
	until := time.Now().Add(time.Hour)

	other := testHandle("x", newB, 0)
	other.ContainerID = "holder"
	if err := s.Allocate(ctx, other); err != nil {
		t.Fatal(err)
	}
	var taken *AddrTakenError
	if _, err := s.AddSuccessor(ctx, h.AttachmentID, "x", old, next, until); !errors.As(err, &taken) {
		t.Fatalf("successor on a taken address: %v", err)
	}
	next.Address = netip.PrefixFrom(netip.MustParseAddr("2001:db8:2::3"), 64)
	if _, err := s.AddSuccessor(ctx, h.AttachmentID, "y", old, next, until); err == nil {
		t.Error("another node renumbered the attachment")
	}
	got, err := s.AddSuccessor(ctx, h.AttachmentID, "x", old, next, until)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.IPs) != 2 || !got.IPs[0].Deprecated || !got.IPs[0].ValidUntil.Equal(until.UTC()) || got.IPs[1].Replaces != old || got.IPs[1].Address != next.Address {
		t.Fatalf("handle = %+v", got.IPs)
	}
	// Again (a restart): nothing changes, even with another candidate.
	alt := next
	alt.Address = netip.PrefixFrom(netip.MustParseAddr("2001:db8:2::9"), 64)
	again, err := s.AddSuccessor(ctx, h.AttachmentID, "x", old, alt, until)
	if err != nil || len(again.IPs) != 2 || again.IPs[1].Address != next.Address {
		t.Errorf("AddSuccessor again = %+v, %v", again, err)
	}
	if held, _ := s.AddrsIn(ctx, newB.CIDR); held[next.Address.Addr()] != h.AttachmentID || len(held) != 2 {
		t.Errorf("addresses of the new block = %v", held)
	}
	// Old records decode unchanged; the new fields are omitted when unset.
	raw, _ := json.Marshal(IP{Address: next.Address, Gateway: next.Gateway, Block: next.Block})
	if string(raw) != `{"address":"2001:db8:2::3/64","gateway":"2001:db8:2::1","block":"2001:db8:2::/64"}` {
		t.Errorf("plain IP = %s", raw)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ps := Check(snap); len(ps) != 0 {
		t.Errorf("check during the overlap: %v", ps)
	}

	// The drop: the holder of 2::2 has no successor, the renumbered one has.
	if ok, err := s.DropReplaced(ctx, other.AttachmentID, newB.CIDR); ok || err != nil {
		t.Errorf("DropReplaced without a successor = %v, %v", ok, err)
	}
	if ok, err := s.DropReplaced(ctx, h.AttachmentID, oldB.CIDR); !ok || err != nil {
		t.Fatalf("DropReplaced = %v, %v", ok, err)
	}
	after, _ := s.Handle(ctx, h.AttachmentID)
	if len(after.IPs) != 1 || after.IPs[0].Address != next.Address || after.Lost {
		t.Errorf("handle after the drop = %+v", after)
	}
	if held, _ := s.AddrsIn(ctx, oldB.CIDR); len(held) != 0 {
		t.Errorf("old block still holds %v", held)
	}
	if ok, err := s.DropReplaced(ctx, h.AttachmentID, oldB.CIDR); !ok || err != nil {
		t.Errorf("DropReplaced again = %v, %v", ok, err)
	}
	snap, _ = s.Snapshot(ctx)
	if ps := Check(snap); len(ps) != 0 {
		t.Errorf("check after the drop: %v", ps)
	}

	if _, err := s.AddSuccessor(ctx, AttachmentID{"net", "gone", "eth0"}, "x", old, next, until); !errors.Is(err, ErrGone) {
		t.Errorf("successor of a gone handle: %v", err)
	}
	// A store bound to another epoch of the node (a removal and a
	// registration happened behind its back) writes nothing.
	stale := base.Fenced("x", r.Node.Epoch+1000)
	third := IP{Address: netip.PrefixFrom(netip.MustParseAddr("2001:db8:1::7"), 64), Block: oldB.CIDR}
	if _, err := stale.AddSuccessor(ctx, h.AttachmentID, "x", next.Address.Addr(), third, until); !errors.Is(err, ErrFenced) {
		t.Errorf("successor written by a stale epoch: %v, want ErrFenced", err)
	}
}

// TestCheckLostMixed: a lost attachment of a network with a pool address
// beside the delegated one still holds the pool address: no problem.
func TestCheckLostMixed(t *testing.T) {
	pool, pd := testBlock("x", 1), testBlock("x", 2)
	pd.Source = "pd"
	h := testHandle("x", pool, 0)
	h.IPs = append(h.IPs, IP{Address: netip.PrefixFrom(netip.MustParseAddr("2001:db8:2::2"), 64), Block: pd.CIDR})
	h.Lost = true
	snap := &Snapshot{
		Pools:   []Pool{{Network: "net", Subnets: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}}},
		Blocks:  []Block{pool},
		Handles: []Handle{h},
		Addrs:   map[netip.Addr]AttachmentID{h.IPs[0].Address.Addr(): h.AttachmentID},
	}
	if ps := Check(snap); len(ps) != 0 {
		t.Errorf("check = %v", ps)
	}
}

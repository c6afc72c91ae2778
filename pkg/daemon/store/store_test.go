package store

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
)

// TestAddrKeySortsLikeAddresses: the range read of a block's addresses
// relies on keys sorting as the addresses do, and parsing back.
func TestAddrKeySortsLikeAddresses(t *testing.T) {
	addrs := []string{"10.0.0.2", "10.0.0.10", "10.0.1.1", "9.255.255.255", "2001:db8::2", "2001:db8::10", "2001:db8::1:0", "2001:db8:0:1::", "fe80::1"}
	var parsed []netip.Addr
	var keys []string
	for _, s := range addrs {
		a := netip.MustParseAddr(s)
		parsed = append(parsed, a)
		k := AddrKey(a)
		keys = append(keys, k)
		back, err := parseAddrKey(k)
		if err != nil || back != a {
			t.Errorf("parseAddrKey(%q) = %s, %v; want %s", k, back, err, a)
		}
	}
	slices.SortFunc(parsed, func(x, y netip.Addr) int { return x.Compare(y) })
	slices.Sort(keys)
	for i := range parsed {
		if AddrKey(parsed[i]) != keys[i] {
			t.Fatalf("key order differs from address order at %d: %s vs %q", i, parsed[i], keys[i])
		}
	}
	for _, bad := range []string{"/v6cni/addrs/v6/nonsense", "/v6cni/addrs/v4/1.2.3", "/v6cni/other"} {
		if _, err := parseAddrKey(bad); err == nil {
			t.Errorf("parseAddrKey(%q) accepted", bad)
		}
	}
}

func TestClaimAllocateRelease(t *testing.T) {
	s := New(etcdtest.Client(t))
	ctx := context.Background()
	b := Block{CIDR: netip.MustParsePrefix("2001:db8:1::/64"), Node: "n1", Network: "net", Source: "pool", Claimed: time.Now()}
	if err := s.ClaimBlock(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Node = "n2"
	if err := s.ClaimBlock(ctx, b); !errors.Is(err, ErrExists) {
		t.Fatalf("second claim of a block: %v, want ErrExists", err)
	}
	ip := IP{Address: netip.MustParsePrefix("2001:db8:1::2/64"), Gateway: netip.MustParseAddr("2001:db8:1::1"), Block: b.CIDR}
	h := Handle{AttachmentID: AttachmentID{"net", "c1", "eth0"}, Node: "n1", IPs: []IP{ip}}
	if err := s.Allocate(ctx, h); err != nil {
		t.Fatal(err)
	}
	h2 := Handle{AttachmentID: AttachmentID{"net", "c2", "eth0"}, Node: "n1", IPs: []IP{ip}}
	var taken *AddrTakenError
	if err := s.Allocate(ctx, h2); !errors.As(err, &taken) || taken.Addr != ip.Address.Addr() {
		t.Fatalf("allocating a taken address: %v", err)
	}
	if got, _ := s.Handle(ctx, h2.AttachmentID); got != nil {
		t.Fatal("a failed allocation left a handle")
	}
	if err := s.ReleaseBlock(ctx, b.CIDR); err == nil {
		t.Fatal("released a block with an address in use")
	}
	if err := s.Release(ctx, h); err != nil {
		t.Fatal(err)
	}
	if held, _ := s.AddrsIn(ctx, b.CIDR); len(held) != 0 {
		t.Fatalf("addresses after release: %v", held)
	}
	if err := s.ReleaseBlock(ctx, b.CIDR); err != nil {
		t.Fatalf("release of an empty block: %v", err)
	}
}

func TestRegisterPoolOverlap(t *testing.T) {
	s := New(etcdtest.Client(t))
	ctx := context.Background()
	p := Pool{Network: "a", Definition: "x", Subnets: []netip.Prefix{netip.MustParsePrefix("2001:db8::/48")}}
	if got, err := s.RegisterPool(ctx, p); err != nil || got.Definition != "x" {
		t.Fatalf("register: %v %v", got, err)
	}
	// The same network gets the registered definition back to compare.
	if got, err := s.RegisterPool(ctx, Pool{Network: "a", Definition: "y"}); err != nil || got.Definition != "x" {
		t.Fatalf("re-register: %v %v", got, err)
	}
	var ov *OverlapError
	_, err := s.RegisterPool(ctx, Pool{Network: "b", Definition: "z", Subnets: []netip.Prefix{netip.MustParsePrefix("2001:db8:0:8000::/56")}})
	if !errors.As(err, &ov) || ov.Network != "a" {
		t.Fatalf("overlapping pool: %v, want an OverlapError naming a", err)
	}
}

package pdnet

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// TestDetect is the §3.1 table: binding pairs in, renumberings out.
func TestDetect(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	t0 := now.Add(-10 * time.Minute) // the previous Reply
	p1, p2, p3 := netip.MustParsePrefix("2001:db8:100::/56"), netip.MustParsePrefix("2001:db8:200::/56"), netip.MustParsePrefix("2001:db8:300::/56")
	pfx := func(p netip.Prefix, updated time.Time, preferred, valid time.Duration) dhcp6pd.Prefix {
		return dhcp6pd.Prefix{Prefix: p, Updated: updated, Preferred: preferred, Valid: valid}
	}
	bind := func(ps ...dhcp6pd.Prefix) dhcp6pd.Binding { return dhcp6pd.Binding{Prefixes: ps} }
	h := time.Hour
	for _, tc := range []struct {
		name       string
		prev, next dhcp6pd.Binding
		want       []Event
	}{
		{"graceful: P2 new, P1 preferred 0",
			bind(pfx(p1, t0, h, 2*h)), bind(pfx(p1, now, 0, h), pfx(p2, now, h, 2*h)),
			[]Event{{Graceful, p1, p2}}},
		{"rebind: another server gives P2 only, P1 kept",
			bind(pfx(p1, t0, h, 2*h)), bind(pfx(p1, t0, h, 2*h), pfx(p2, now, h, 2*h)),
			[]Event{{Rebind, p1, p2}}},
		{"abrupt: P2, P1 valid 0 (dropped)",
			bind(pfx(p1, t0, h, 2*h)), bind(pfx(p2, now, h, 2*h)),
			[]Event{{Abrupt, p1, p2}}},
		{"expiry: P1 ran out, P2 held",
			bind(pfx(p1, t0.Add(-2*h), h, 2*h)), bind(pfx(p2, now, h, 2*h)),
			[]Event{{Expiry, p1, p2}}},
		{"expiry: P1 still listed past its valid end",
			bind(pfx(p1, t0.Add(-2*h), 2*h, 2*h+5*time.Minute)), bind(pfx(p1, t0.Add(-2*h), 2*h, 2*h+5*time.Minute), pfx(p2, now, h, 2*h)),
			[]Event{{Expiry, p1, p2}}},
		{"P1 expires, nothing held",
			bind(pfx(p1, t0, h, 2*h)), bind(),
			nil},
		{"P1 deprecated, nothing new",
			bind(pfx(p1, t0, h, 2*h)), bind(pfx(p1, now, 0, h)),
			nil},
		{"renewed: no change",
			bind(pfx(p1, t0, h, 2*h)), bind(pfx(p1, now, h, 2*h)),
			nil},
		{"already renumbered: P1's later Replies and end give nothing",
			bind(pfx(p1, t0, 0, h), pfx(p2, t0, h, 2*h)), bind(pfx(p2, now, h, 2*h)),
			nil},
		{"chain: P3 replaces P2, P1 already moved",
			bind(pfx(p1, t0, 0, h), pfx(p2, t0, h, 2*h)), bind(pfx(p1, now, 0, h), pfx(p2, now, 0, h), pfx(p3, now, h, 2*h)),
			[]Event{{Graceful, p2, p3}}},
		{"restart: prefixes found as they are",
			bind(), bind(pfx(p1, now, 0, h), pfx(p2, now, h, 2*h)),
			[]Event{{Graceful, p1, p2}}},
		{"restart with one prefix",
			bind(), bind(pfx(p2, now, h, 2*h)),
			nil},
		{"new prefix contains the old: nothing to move",
			bind(pfx(p1, t0, h, 2*h)), bind(pfx(p1, now, 0, h), pfx(netip.MustParsePrefix("2001:db8:100::/48"), now, h, 2*h)),
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Detect(tc.prev, tc.next, now)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Detect = %v, want %v", got, tc.want)
			}
		})
	}
}

// collect is a Renumberer that keeps what it is given.
type collect struct {
	mu    sync.Mutex
	moves []allocator.Move
}

func (c *collect) Submit(ms ...allocator.Move) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.moves = append(c.moves, ms...)
}

func (c *collect) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.moves)
}

// TestChangedRenumbers: a graceful change renumbers the node's attachment
// and hands the move to the workers, counted once; at the old prefix's end
// the old address is dropped and nobody is lost. Without a Renumberer a
// change renumbers nothing (as before).
func TestChangedRenumbers(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	alloc, err := allocator.New(ctx, st, "node1", log)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := netip.MustParsePrefix("2001:db8:ab00::/56"), netip.MustParsePrefix("2001:db8:cd00::/56")
	src := &heldPD{}
	alloc.SetPD(src)
	now := time.Now()
	b1 := dhcp6pd.Binding{Prefixes: []dhcp6pd.Prefix{{Prefix: p1, Updated: now, Preferred: time.Hour, Valid: 2 * time.Hour}}}
	src.held = delegated(b1)
	c, err := ipamconf.Parse([]byte(`{"cniVersion":"1.1.0","name":"pda","ipam":{"type":"pd-ipam","subnetId":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	aid := store.AttachmentID{Network: "pda", ContainerID: "c", IfName: "eth0"}
	if _, err := alloc.Add(ctx, allocator.Request{ID: aid, Conf: c}); err != nil {
		t.Fatal(err)
	}
	d := &Delegation{iface: "uplink0", alloc: alloc, log: log, valid: map[netip.Prefix]bool{}}
	d.changed(b1)

	later := time.Now()
	b2 := dhcp6pd.Binding{Prefixes: []dhcp6pd.Prefix{
		{Prefix: p1, Updated: later, Preferred: 0, Valid: time.Hour},
		{Prefix: p2, Updated: later, Preferred: time.Hour, Valid: 2 * time.Hour},
	}}
	src.mu.Lock()
	src.held = delegated(b2)
	src.mu.Unlock()
	d.changed(b2) // no Renumberer: nothing moves
	if h, _ := st.Handle(ctx, aid); len(h.IPs) != 1 {
		t.Fatalf("renumbered without a Renumberer: %+v", h.IPs)
	}

	w := &collect{}
	d.mu.Lock()
	d.renumberer = w
	d.prev = b1
	d.mu.Unlock()
	d.changed(b2)
	if w.count() != 1 || w.moves[0].New.String() != "2001:db8:cd00:1::2/64" || w.moves[0].Old.String() != "2001:db8:ab00:1::2/64" {
		t.Fatalf("moves = %+v", w.moves)
	}
	if got := d.Renumberings(); got["graceful"] != 1 || len(got) != 1 {
		t.Errorf("renumberings = %v", got)
	}

	// P1 taken back early (valid 0): its address goes, the attachment
	// keeps its successor; no second count (it was renumbered already).
	b3 := dhcp6pd.Binding{Prefixes: b2.Prefixes[1:]}
	src.mu.Lock()
	src.held = delegated(b3)
	src.mu.Unlock()
	d.changed(b3)
	h, _ := st.Handle(ctx, aid)
	if h.Lost || len(h.IPs) != 1 || h.IPs[0].Address.String() != "2001:db8:cd00:1::2/64" {
		t.Errorf("handle after P1 went = %+v", h)
	}
	if err := alloc.Check(ctx, aid); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// The workers get the move again, the old address to go now.
	if w.count() != 2 || w.moves[1].New != w.moves[0].New || w.moves[1].OldValidUntil.After(time.Now()) {
		t.Errorf("moves after P1 went = %+v", w.moves)
	}
	if got := d.Renumberings(); got["graceful"] != 1 || len(got) != 1 {
		t.Errorf("renumberings = %v", got)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range store.Check(snap) {
		t.Errorf("store.Check: %s", p)
	}
}

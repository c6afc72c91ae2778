package allocator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func conf(t *testing.T, name, ranges string) *ipamconf.NetConf {
	t.Helper()
	routes := `[]`
	if strings.Contains(ranges, "2001:") {
		routes = `[{"dst":"::/0"}]`
	}
	c, err := ipamconf.Parse([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"ipam":{"type":"ipam-v6","ranges":%s,"routes":%s}}`, name, ranges, routes)))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	return c
}

func newAlloc(t *testing.T, st *store.Store, node string) *Allocator {
	t.Helper()
	a, err := New(context.Background(), st, node, quiet)
	if err != nil {
		t.Fatalf("New(%s): %v", node, err)
	}
	return a
}

func id(net, c string) store.AttachmentID {
	return store.AttachmentID{Network: net, ContainerID: c, IfName: "eth0"}
}

func addrs(r *Assignment) []string {
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address.String()+" via "+ip.Gateway.String())
	}
	return out
}

func mustAdd(t *testing.T, a *Allocator, aid store.AttachmentID, c *ipamconf.NetConf) *Assignment {
	t.Helper()
	r, err := a.Add(context.Background(), Request{ID: aid, Conf: c})
	if err != nil {
		t.Fatalf("Add(%s): %v", aid, err)
	}
	return r
}

// wantKind checks that err is the allocator's failure of kind, with a
// message naming each of substr. The CNI code of each kind is checked by
// ipamserver's table test.
func wantKind(t *testing.T, err error, kind Kind, substr ...string) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v (%T), want an allocator error of kind %s", err, err, kind)
	}
	if ae.Kind != kind || !errors.Is(err, kind) {
		t.Fatalf("kind = %s (%s), want %s", ae.Kind, ae.Msg, kind)
	}
	for _, s := range substr {
		if !strings.Contains(ae.Msg, s) {
			t.Errorf("message %q does not name %q", ae.Msg, s)
		}
	}
}

func TestSequentialDualStack(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	c := conf(t, "ds", `[[{"subnet":"2001:db8:cafe::/48"}],[{"subnet":"10.244.0.0/16"}]]`)

	r1 := mustAdd(t, a, id("ds", "c1"), c)
	r2 := mustAdd(t, a, id("ds", "c2"), c)
	want1 := []string{"2001:db8:cafe::2/64 via 2001:db8:cafe::1", "10.244.0.2/24 via 10.244.0.1"}
	want2 := []string{"2001:db8:cafe::3/64 via 2001:db8:cafe::1", "10.244.0.3/24 via 10.244.0.1"}
	if got := addrs(r1); fmt.Sprint(got) != fmt.Sprint(want1) {
		t.Errorf("first ADD = %v, want %v", got, want1)
	}
	if got := addrs(r2); fmt.Sprint(got) != fmt.Sprint(want2) {
		t.Errorf("second ADD = %v, want %v", got, want2)
	}
	if len(r1.Routes) != 1 || r1.Routes[0].GW.String() != "2001:db8:cafe::1" {
		t.Errorf("routes = %v, want ::/0 via the block gateway", r1.Routes)
	}

	// Re-ADD is idempotent.
	if again := mustAdd(t, a, id("ds", "c1"), c); fmt.Sprint(addrs(again)) != fmt.Sprint(want1) {
		t.Errorf("re-ADD = %v, want %v", addrs(again), want1)
	}
	// DEL frees, DEL again is fine, CHECK knows.
	if err := a.Check(context.Background(), id("ds", "c1")); err != nil {
		t.Errorf("Check(c1): %v", err)
	}
	if _, err := a.Del(context.Background(), id("ds", "c1"), 0); err != nil {
		t.Fatal(err)
	}
	if h, err := a.Del(context.Background(), id("ds", "c1"), 0); err != nil || h != nil {
		t.Fatalf("second Del = %v, %v; want nil, nil", h, err)
	}
	wantKind(t, a.Check(context.Background(), id("ds", "c1")), KindNotFound, "ds/c1/eth0")
	held, err := st.AddrsIn(context.Background(), netip.MustParsePrefix("2001:db8:cafe::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := held[netip.MustParseAddr("2001:db8:cafe::2")]; ok || len(held) != 1 {
		t.Errorf("addresses held after DEL = %v, want only ::3", held)
	}
}

func TestBlockExhaustionAndPoolFull(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	// A /29 pool of /30 blocks: two blocks, one container address each.
	c := conf(t, "tiny", `[[{"subnet":"10.9.0.0/29","blockSize":30}]]`)
	r1 := mustAdd(t, a, id("tiny", "c1"), c)
	r2 := mustAdd(t, a, id("tiny", "c2"), c)
	if got := fmt.Sprint(addrs(r1), addrs(r2)); got != "[10.9.0.2/30 via 10.9.0.1] [10.9.0.6/30 via 10.9.0.5]" {
		t.Errorf("allocations = %s", got)
	}
	_, err := a.Add(context.Background(), Request{ID: id("tiny", "c3"), Conf: c})
	wantKind(t, err, KindExhausted, "no address available", "10.9.0.0/29", "tiny")
	if h, _ := st.Handle(context.Background(), id("tiny", "c3")); h != nil {
		t.Errorf("failed ADD left a handle: %+v", h)
	}
	// A freed address is found again.
	if _, err := a.Del(context.Background(), id("tiny", "c1"), 0); err != nil {
		t.Fatal(err)
	}
	if r := mustAdd(t, a, id("tiny", "c3"), c); addrs(r)[0] != "10.9.0.2/30 via 10.9.0.1" {
		t.Errorf("after DEL got %v", addrs(r))
	}
}

func TestPoolDefinitionIsFixed(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	mustAdd(t, a, id("n1", "c1"), conf(t, "n1", `[[{"subnet":"2001:db8:1::/48"}]]`))

	_, err := a.Add(context.Background(), Request{ID: id("n1", "c2"), Conf: conf(t, "n1", `[[{"subnet":"2001:db8:1::/48","blockSize":56}]]`)})
	wantKind(t, err, KindInvalid, "2001:db8:1::/48 blockSize 56", "2001:db8:1::/48 blockSize 64", `"n1"`)

	// Another node's ipamd, with a fresh cache, gets the same answer.
	b := newAlloc(t, st, "node2")
	_, err = b.Add(context.Background(), Request{ID: id("n1", "c3"), Conf: conf(t, "n1", `[[{"subnet":"2001:db8:2::/48"}]]`)})
	wantKind(t, err, KindInvalid, "2001:db8:2::/48", "2001:db8:1::/48")

	_, err = b.Add(context.Background(), Request{ID: id("n2", "c1"), Conf: conf(t, "n2", `[[{"subnet":"2001:db8:1:8000::/49"}]]`)})
	wantKind(t, err, KindInvalid, "overlaps", `"n1"`)
}

// TestNodesNeverShareAddresses runs two ipamds (allocators) of different
// nodes against one etcd, concurrently: each claims its own block, and no
// address is handed out twice.
func TestNodesNeverShareAddresses(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	c := conf(t, "v6", `[[{"subnet":"2001:db8:aa::/48","blockSize":120}]]`)
	nodes := []*Allocator{newAlloc(t, st, "node1"), newAlloc(t, st, "node2"), newAlloc(t, st, "node3")}

	const perNode = 40
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		wg   sync.WaitGroup
	)
	for n, a := range nodes {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perNode / 4 {
					cid := fmt.Sprintf("n%d-w%d-%d", n, w, i)
					r, err := a.Add(context.Background(), Request{ID: id("v6", cid), Conf: c})
					if err != nil {
						t.Errorf("Add %s: %v", cid, err)
						return
					}
					mu.Lock()
					ip := r.IPs[0].Address.Addr().String()
					if prev, dup := seen[ip]; dup {
						t.Errorf("address %s given to %s and %s", ip, prev, cid)
					}
					seen[ip] = cid
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(seen) != perNode*len(nodes) {
		t.Fatalf("got %d distinct addresses, want %d", len(seen), perNode*len(nodes))
	}
	blocks, err := st.Blocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	owner := map[string]int{}
	for _, b := range blocks {
		owner[b.Node]++
	}
	// /120 blocks hold 253 addresses: one block per node.
	if len(blocks) != 3 || owner["node1"] != 1 || owner["node2"] != 1 || owner["node3"] != 1 {
		t.Errorf("blocks = %+v, want one per node", blocks)
	}
}

// TestRestartKeepsState: a new allocator on the same etcd (ipamd restarted)
// returns the same addresses and does not hand out taken ones.
func TestRestartKeepsState(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	c := conf(t, "v6", `[[{"subnet":"2001:db8:bb::/48"}]]`)
	a := newAlloc(t, st, "node1")
	r1 := mustAdd(t, a, id("v6", "c1"), c)
	mustAdd(t, a, id("v6", "c2"), c)

	b := newAlloc(t, st, "node1")
	if again := mustAdd(t, b, id("v6", "c1"), c); fmt.Sprint(addrs(again)) != fmt.Sprint(addrs(r1)) {
		t.Errorf("after restart re-ADD = %v, want %v", addrs(again), addrs(r1))
	}
	r3 := mustAdd(t, b, id("v6", "c3"), c)
	if got := r3.IPs[0].Address.String(); got != "2001:db8:bb::4/64" {
		t.Errorf("after restart new ADD = %s, want 2001:db8:bb::4/64", got)
	}
}

func TestGC(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	c := conf(t, "v6", `[[{"subnet":"2001:db8:cc::/48"}]]`)
	a := newAlloc(t, st, "node1")
	other := newAlloc(t, st, "node2")
	for _, cid := range []string{"keep", "stale1", "stale2"} {
		mustAdd(t, a, id("v6", cid), c)
	}
	mustAdd(t, other, id("v6", "elsewhere"), c)

	released, err := a.GC(context.Background(), "v6", []store.AttachmentID{{ContainerID: "keep", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(released) != 2 {
		t.Errorf("released %d attachments, want 2", len(released))
	}
	for cid, want := range map[string]bool{"keep": true, "stale1": false, "stale2": false, "elsewhere": true} {
		h, err := st.Handle(context.Background(), id("v6", cid))
		if err != nil {
			t.Fatal(err)
		}
		if (h != nil) != want {
			t.Errorf("after GC %s present = %v, want %v", cid, h != nil, want)
		}
	}
}

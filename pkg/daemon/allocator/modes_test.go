package allocator

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

func parse(t *testing.T, js string) *ipamconf.NetConf {
	t.Helper()
	c, err := ipamconf.Parse([]byte(js))
	if err != nil {
		t.Fatalf("parse %s: %v", js, err)
	}
	return c
}

func TestRequestedAddresses(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	other := newAlloc(t, st, "node2")
	c := parse(t, `{"name":"req","ipam":{"ranges":[[{"subnet":"2001:db8:dd::/48"}],[{"subnet":"10.77.0.0/16"}]]}}`)
	ctx := context.Background()
	ask := func(al *Allocator, cid string, ips ...string) (string, error) {
		var want []netip.Addr
		for _, s := range ips {
			want = append(want, netip.MustParseAddr(s))
		}
		r, err := al.Add(ctx, Request{ID: id("req", cid), Conf: c, Args: ipamconf.Args{IPs: want}})
		if err != nil {
			return "", err
		}
		return r.IPs[0].Address.String() + " " + r.IPs[1].Address.String(), nil
	}

	got, err := ask(a, "c1", "2001:db8:dd:5::99")
	if err != nil || got != "2001:db8:dd:5::99/64 10.77.0.2/24" {
		t.Fatalf("requested v6 only = %q, %v", got, err)
	}
	got, err = ask(a, "c2", "2001:db8:dd:5::100", "10.77.0.50")
	if err != nil || got != "2001:db8:dd:5::100/64 10.77.0.50/24" {
		t.Fatalf("requested both = %q, %v", got, err)
	}
	_, err = ask(a, "c3", "2001:db8:dd:5::99")
	wantKind(t, err, KindTaken, "2001:db8:dd:5::99", "in use")
	_, err = ask(a, "c3", "2001:db8:ee::1")
	wantKind(t, err, KindInvalid, "not in the pool")
	_, err = ask(a, "c3", "2001:db8:dd:5::1")
	wantKind(t, err, KindInvalid, "gateway")
	// Block 2001:db8:dd:5::/64 is node1's: node2 cannot hand out its addresses.
	_, err = ask(other, "c4", "2001:db8:dd:5::200")
	wantKind(t, err, KindTaken, "another node")
	for _, cid := range []string{"c3", "c4"} {
		if h, _ := st.Handle(ctx, id("req", cid)); h != nil {
			t.Errorf("refused request left handle %+v", h)
		}
	}
}

func TestExclude(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	// The first block is wholly excluded, and the first addresses of the
	// second.
	c := parse(t, `{"name":"ex","ipam":{"ranges":[[{"subnet":"10.5.0.0/16","exclude":["10.5.0.0/24","10.5.1.0/29"]}]]}}`)
	r := mustAdd(t, a, id("ex", "c1"), c)
	if got := r.IPs[0].Address.String(); got != "10.5.1.8/24" {
		t.Errorf("first address = %s, want 10.5.1.8/24", got)
	}
}

func TestStableAddressing(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	c := parse(t, `{"name":"stab","ipam":{"addressing":"stable","ranges":[[{"subnet":"2001:db8:ab::/48"}]]}}`)
	a := newAlloc(t, st, "node1")
	r1 := mustAdd(t, a, id("stab", "c1"), c)
	r2 := mustAdd(t, a, id("stab", "c2"), c)
	addr1 := r1.IPs[0].Address.String()
	if addr1 == r2.IPs[0].Address.String() || addr1 == "2001:db8:ab::2/64" {
		t.Errorf("stable addresses %s, %s look sequential or equal", addr1, r2.IPs[0].Address)
	}
	if _, err := a.Del(context.Background(), id("stab", "c1"), 0); err != nil {
		t.Fatal(err)
	}
	// Re-created, even on a restarted ipamd: the same address.
	b := newAlloc(t, st, "node1")
	if again := mustAdd(t, b, id("stab", "c1"), c); again.IPs[0].Address.String() != addr1 {
		t.Errorf("re-created attachment got %s, want %s", again.IPs[0].Address, addr1)
	}
}

func TestEUI64Addressing(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	c := parse(t, `{"name":"eui","ipam":{"addressing":"eui64","ranges":[[{"subnet":"2001:db8:ac::/48"}],[{"subnet":"10.6.0.0/16"}]]}}`)
	a := newAlloc(t, st, "node1")
	mac, _ := net.ParseMAC("fa:16:3e:79:5a:cc")
	r, err := a.Add(context.Background(), Request{ID: id("eui", "c1"), Conf: c, MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.IPs[0].Address.String(); got != "2001:db8:ac:0:f816:3eff:fe79:5acc/64" {
		t.Errorf("eui64 address = %s, want 2001:db8:ac:0:f816:3eff:fe79:5acc/64", got)
	}
	if got := r.IPs[1].Address.String(); got != "10.6.0.2/24" {
		t.Errorf("IPv4 in eui64 mode = %s, want sequential 10.6.0.2/24", got)
	}
	_, err = a.Add(context.Background(), Request{ID: id("eui", "c2"), Conf: c, MAC: mac})
	wantKind(t, err, KindTaken, "fa:16:3e:79:5a:cc", "is taken")
	_, err = a.Add(context.Background(), Request{ID: id("eui", "c3"), Conf: c})
	wantKind(t, err, KindInvalid, "no container MAC")
}

func TestStatusPoolExhausted(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	c := parse(t, `{"name":"st","ipam":{"ranges":[[{"subnet":"10.8.0.0/30"}]]}}`)
	ctx := context.Background()
	if err := a.Status(ctx, c); err != nil {
		t.Fatalf("STATUS on a fresh pool: %v", err)
	}
	mustAdd(t, a, id("st", "c1"), c)
	wantKind(t, a.Status(ctx, c), KindUnavailable, "no address available", "10.8.0.0/30")
	if _, err := a.Del(ctx, id("st", "c1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Status(ctx, c); err != nil {
		t.Fatalf("STATUS after DEL: %v", err)
	}
}

func TestReleaseEmptyBlocks(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	ctx := context.Background()
	// /30 blocks: one container each, so three containers take three blocks.
	c := parse(t, `{"name":"rb","ipam":{"ranges":[[{"subnet":"10.11.0.0/24","blockSize":30}]]}}`)
	for _, cid := range []string{"c1", "c2", "c3"} {
		mustAdd(t, a, id("rb", cid), c)
	}
	if rel, err := a.ReleaseEmptyBlocks(ctx, 0, nil); err != nil || len(rel) != 0 {
		t.Fatalf("released %v, %v while all blocks are in use", rel, err)
	}
	for _, cid := range []string{"c1", "c2"} {
		if _, err := a.Del(ctx, id("rb", cid), 0); err != nil {
			t.Fatal(err)
		}
	}
	if rel, err := a.ReleaseEmptyBlocks(ctx, time.Hour, nil); err != nil || len(rel) != 0 {
		t.Fatalf("released %v, %v within the grace time", rel, err)
	}
	rel, err := a.ReleaseEmptyBlocks(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 10.11.0.0/30 is the lowest block and stays; 10.11.0.4/30 goes back;
	// 10.11.0.8/30 still holds c3.
	if len(rel) != 1 || rel[0].CIDR.String() != "10.11.0.4/30" {
		t.Fatalf("released %+v, want only 10.11.0.4/30", rel)
	}
	blocks, err := st.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 {
		t.Errorf("blocks in etcd after release = %+v, want 2", blocks)
	}
	// Another node can now claim it.
	b := newAlloc(t, st, "node2")
	if r := mustAdd(t, b, id("rb", "d1"), c); r.IPs[0].Address.String() != "10.11.0.6/30" {
		t.Errorf("node2 got %s, want 10.11.0.6/30 from the released block", r.IPs[0].Address)
	}
}

func TestStickyAddresses(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	ctx := context.Background()
	c := parse(t, `{"name":"sticky","ipam":{"sticky":true,"stickyGrace":"1h","ranges":[[{"subnet":"2001:db8:5a::/48"}]]}}`)
	pod := func(cid, name string) Request {
		return Request{ID: id("sticky", cid), Conf: c, Args: ipamconf.Args{PodNamespace: "default", PodName: name}}
	}
	add := func(r Request) string {
		t.Helper()
		res, err := a.Add(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return res.IPs[0].Address.String()
	}
	web0 := add(pod("sandbox-1", "web-0"))
	add(pod("sandbox-2", "web-1"))
	if _, err := a.Del(ctx, id("sticky", "sandbox-1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// Held while the pod is away: another pod does not get it.
	if other := add(pod("sandbox-3", "web-2")); other == web0 {
		t.Fatalf("another pod got the kept address %s", web0)
	}
	// The re-created pod (new sandbox) gets it back.
	if again := add(pod("sandbox-4", "web-0")); again != web0 {
		t.Fatalf("re-created web-0 got %s, want its kept %s", again, web0)
	}
	if err := a.Check(ctx, id("sticky", "sandbox-4")); err != nil {
		t.Errorf("CHECK of the re-created pod: %v", err)
	}

	// Not coming back in time: the address is released.
	if _, err := a.Del(ctx, id("sticky", "sandbox-4"), time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	expired, err := a.ExpireSticky(ctx)
	if err != nil || len(expired) != 1 || expired[0].Pod != "default/web-0" {
		t.Fatalf("ExpireSticky = %+v, %v", expired, err)
	}
	held, err := st.AddrsIn(ctx, netip.MustParsePrefix("2001:db8:5a::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := held[netip.MustParsePrefix(web0).Addr()]; ok {
		t.Errorf("expired sticky address %s still held", web0)
	}
}

func TestCommunities(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	c := parse(t, `{"name":"comm","ipam":{"bgpCommunities":["65001:100","no-export"],"ranges":[[{"subnet":"2001:db8:5c::/48"}]]}}`)
	mustAdd(t, a, id("comm", "c1"), c)
	if got := a.Communities("comm"); len(got) != 2 || got[0] != "65001:100" {
		t.Fatalf("Communities = %v", got)
	}
	<-a.BlocksChanged() // the claim (and the communities) changed the announcements
	c2 := parse(t, `{"name":"comm","ipam":{"bgpCommunities":["65001:200"],"ranges":[[{"subnet":"2001:db8:5c::/48"}]]}}`)
	mustAdd(t, a, id("comm", "c2"), c2)
	select {
	case <-a.BlocksChanged():
	default:
		t.Error("a change of communities did not signal the announcer")
	}
	// A restarted ipamd announces with what the pool record holds.
	b := newAlloc(t, st, "node1")
	if got := b.Communities("comm"); len(got) != 1 || got[0] != "65001:200" {
		t.Errorf("after restart Communities = %v, want [65001:200]", got)
	}
}

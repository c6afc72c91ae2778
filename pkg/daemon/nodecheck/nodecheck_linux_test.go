package nodecheck

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/link"
)

// TestCheckRealKernel: records in a real etcd, a real bridge in a netns
// standing for the node's host, real container namespaces. A clean node
// checks clean; then a gateway whose block is not the node's, a block of
// the node whose gateway no bridge carries and an attachment whose netns
// was deleted are all found.
func TestCheckRealKernel(t *testing.T) {
	linktest.RequireRoot(t)
	ctx := context.Background()
	cli := etcdtest.Client(t)
	st := store.New(cli)
	hostNS := linktest.NewNS(t)
	bridge := linktest.Name("ncbr")
	linktest.Bridge(t, hostNS, bridge)
	live := linktest.NewNS(t)
	doomed, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { doomed.Close(); testutils.UnmountNS(doomed) })

	pfx := netip.MustParsePrefix
	block := pfx("fd6c:4e0c:1::/64")
	put := func(key string, v any) {
		t.Helper()
		val, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, string(val)); err != nil {
			t.Fatal(err)
		}
	}
	put(store.PoolKey("n"), store.Pool{Network: "n", Subnets: []netip.Prefix{pfx("fd6c:4e0c::/32")}})
	put(store.BlockKey(block), store.Block{CIDR: block, Node: "me", Network: "n", Subnet: pfx("fd6c:4e0c::/32"), Source: "pool"})
	for i, n := range []string{live.Path(), doomed.Path()} {
		id := store.AttachmentID{Network: "n", ContainerID: []string{"live", "doomed"}[i], IfName: "eth0"}
		a := netip.MustParseAddr("fd6c:4e0c:1::2")
		for range i {
			a = a.Next()
		}
		put(store.HandleKey(id), store.Handle{AttachmentID: id, Node: "me", Netns: n,
			IPs: []store.IP{{Address: netip.PrefixFrom(a, 64), Gateway: netip.MustParseAddr("fd6c:4e0c:1::1"), Block: block}}})
		put(store.AddrKey(a), id)
	}
	addGW := func(p string) {
		linktest.Do(t, hostNS, func() error {
			br, err := netlink.LinkByName(bridge)
			if err != nil {
				return err
			}
			return netlink.AddrAdd(br, &netlink.Addr{IPNet: link.IPNet(pfx(p)), Flags: unix.IFA_F_NODAD})
		})
	}
	check := func() []store.Problem {
		t.Helper()
		snap, err := st.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ps []store.Problem
		linktest.Do(t, hostNS, func() error {
			ps, err = Check(snap, "me", Kernel{})
			return err
		})
		return append(ps, store.Check(snap)...)
	}

	addGW("fd6c:4e0c:1::1/64")
	if ps := check(); len(ps) != 0 {
		t.Fatalf("clean node: problems %v", ps)
	}

	// A second block of the node, with an attachment, whose gateway no
	// bridge carries, while the first block's is there: isGateway is on.
	block2 := pfx("fd6c:4e0c:2::/64")
	id2 := store.AttachmentID{Network: "n", ContainerID: "nogw", IfName: "eth0"}
	a2 := netip.MustParseAddr("fd6c:4e0c:2::2")
	put(store.BlockKey(block2), store.Block{CIDR: block2, Node: "me", Network: "n", Subnet: pfx("fd6c:4e0c::/32"), Source: "pool"})
	put(store.HandleKey(id2), store.Handle{AttachmentID: id2, Node: "me", Netns: live.Path(),
		IPs: []store.IP{{Address: netip.PrefixFrom(a2, 64), Gateway: netip.MustParseAddr("fd6c:4e0c:2::1"), Block: block2}}})
	put(store.AddrKey(a2), id2)

	addGW("fd6c:4e0c:9::1/64") // a block released while its gateway stayed
	if err := doomed.Close(); err != nil {
		t.Fatal(err)
	}
	if err := testutils.UnmountNS(doomed); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range check() {
		got = append(got, p.Kind+" "+p.Key)
	}
	want := []string{
		"gateway-missing " + store.BlockKey(block2),
		"gateway-no-block " + store.BlockKey(pfx("fd6c:4e0c:9::/64")),
		"netns-gone " + store.HandleKey(store.AttachmentID{Network: "n", ContainerID: "doomed", IfName: "eth0"}),
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
}

package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/link"
)

// Provider networks with real ipamds (clustertest: Debian's etcd and the
// ipamd binary): ipam-v6 hands out the segment's addresses.

// ipamV6Conf is a provider network whose addresses ipam-v6 hands out
// from the segment's /64 (ranges is the range object's keys after the
// subnet), the router configured as gateway.
func (l *providerLab) ipamV6Conf(socket, ranges, ipamExtra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"v6net","type":"bridge-v6","bridge":%q,"provider":{"master":%q,"gateway":%q},`+
		`"ipam":{"type":"ipam-v6","socket":%q,"ranges":[[{"subnet":%q%s}]]%s}}`,
		l.bridge, l.uplink, routerAddr, socket, segPrefix, ranges, ipamExtra))
}

// holderOf is who holds addr in ipamd's state ("" when nobody).
func holderOf(t *testing.T, c *ipamapi.Client, addr string) string {
	t.Helper()
	st, err := c.State(context.Background())
	if err != nil {
		t.Fatalf("ipamd state: %v", err)
	}
	for _, n := range st.Networks {
		for _, b := range n.Blocks {
			for _, a := range b.Addrs {
				if a.Addr == addr {
					return a.ContainerID
				}
			}
		}
	}
	return ""
}

// TestProviderDuplicateQuarantined: a host on the segment holds the first
// address ipam-v6 hands out. The ADD that gets it fails (DAD) and its
// rollback has ipamd quarantine it: ipamd state shows it held by
// quarantine:<ID>, the retried ADD of the same container gets the next
// address and works, and after a DEL and an ipamd restart (which hands out
// the first free address: without the quarantine, the duplicate again) a
// new container does not get it either.
func TestProviderDuplicateQuarantined(t *testing.T) {
	l := newProviderLab(t)
	cl := clustertest.Start(t, clustertest.Options{Members: 1, Nodes: 1})
	node := cl.Nodes[0]
	const dup, next = "2001:db8:22::2", "2001:db8:22::3"
	// ::1 is the router (the block's gateway: never handed out); the
	// node's and the segment host's own addresses are excluded; the
	// segment host also holds ::2, unknown to ipamd.
	linktest.Do(t, l.segHost, func() error { return addAddr("eth0", dup+"/64") })
	conf := l.ipamV6Conf(node.Socket, `,"exclude":["`+nodeAddr+`/128","`+segHostAddr+`/128"]`, "")

	const id = "d0b1e0000000002"
	_, err := l.add(t, l.args(id, conf))
	if err == nil || !strings.Contains(err.Error(), "duplicate address detection failed: "+dup+"/64") {
		t.Fatalf("ADD of the address the segment host holds: %v, want a DAD failure naming %s", err, dup)
	}
	l.noAttachmentLeft(t, id, "the failed ADD")
	if got := holderOf(t, node.Client, dup); got != store.QuarantineHolder+id {
		t.Errorf("ipamd state: %s held by %q, want %q", dup, got, store.QuarantineHolder+id)
	}

	raw, err := l.add(t, l.args(id, conf))
	if err != nil {
		t.Fatalf("retried ADD: %v", err)
	}
	if res := mustResult(t, "1.1.0", raw); len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != next {
		t.Errorf("retried ADD got %+v, want %s", res.IPs, next)
	}
	if err := ping6(l.cont, segHostAddr, 10*time.Second); err != nil {
		t.Errorf("container → segment host: %v", err)
	}
	del := l.args(id, conf)
	if err := l.inHost(t, func() error { return testutils.CmdDelWithArgs(del, func() error { return cmdDel(del) }) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}

	if err := node.Restart(); err != nil {
		t.Fatal(err)
	}
	const id2 = "d0b1e0000000003"
	raw, err = l.add(t, l.args(id2, conf))
	if err != nil {
		t.Fatalf("ADD after the ipamd restart: %v", err)
	}
	if res := mustResult(t, "1.1.0", raw); len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != next {
		t.Errorf("ADD after the ipamd restart got %+v, want %s (the first free address but the quarantined one)", res.IPs, next)
	}
	if problems, _, err := cl.Check(context.Background()); err != nil || len(problems) > 0 {
		t.Errorf("key space: %v, %v", problems, err)
	}
}

// secondNode adds another node to the segment: its own host netns (its
// uplink, with addr, on the segment), container netns and bridge-v6 ADDs,
// the same router and segment host.
func (l *providerLab) secondNode(t *testing.T, addr string) *providerLab {
	t.Helper()
	n := *l
	env := *l.testEnv
	env.host, env.cont = linktest.NewNS(t), linktest.NewNS(t)
	n.testEnv = &env
	n.uplink = linktest.Name("upl")
	linktest.Attach(t, l.router, l.seg, linktest.Name("rn"), n.host, n.uplink,
		net.HardwareAddr{0x02, 0x00, 0x5e, 0x22, 0x03, 0x00}, nil)
	linktest.Do(t, n.host, func() error { return addAddr(n.uplink, addr+"/64") })
	return &n
}

// TestProviderNodesShareSegment: two nodes (each its ipamd, one etcd)
// share the provider /64 through ipam-v6 with /120 blocks and the
// routers' and other hosts' addresses excluded: each node's containers get
// addresses of its own block, with the segment's prefix length (/64: the
// whole segment is on-link, the router too), and reach each other, the
// router and the segment's host directly; CHECK passes against ipamd's
// record (whose addresses carry the block's /120).
func TestProviderNodesShareSegment(t *testing.T) {
	l := newProviderLab(t)
	const node2Addr = "2001:db8:22::101"
	l2 := l.secondNode(t, node2Addr)
	cl := clustertest.Start(t, clustertest.Options{Members: 1, Nodes: 2})
	// The router (::1) and the nodes' and segment host's own addresses
	// are excluded.
	ranges := `,"blockSize":120,"exclude":["` + routerAddr + `/128","2001:db8:22::100/126","` + segHostAddr + `/128"]`
	type container struct {
		lab  *providerLab
		id   string
		addr netip.Prefix
		mac  string
		raw  []byte
	}
	var cs []*container
	for i, lab := range []*providerLab{l, l2} {
		conf := lab.ipamV6Conf(cl.Nodes[i].Socket, ranges, "")
		c := &container{lab: lab, id: fmt.Sprintf("5a7e000000000%d", i)}
		raw, err := lab.add(t, lab.args(c.id, conf))
		if err != nil {
			t.Fatalf("node %d: ADD: %v", i, err)
		}
		c.raw = raw
		res := mustResult(t, "1.1.0", raw)
		if len(res.IPs) != 1 {
			t.Fatalf("node %d: result IPs %+v", i, res.IPs)
		}
		p, ok := link.PrefixFromIPNet(&res.IPs[0].Address)
		if !ok || p.Bits() != 64 || !netip.MustParsePrefix(segPrefix).Contains(p.Addr()) {
			t.Errorf("node %d: result address %s, want one of %s with its length /64", i, res.IPs[0].Address.String(), segPrefix)
		}
		if gw := res.IPs[0].Gateway.String(); gw != routerAddr {
			t.Errorf("node %d: result gateway %s, want the router %s", i, gw, routerAddr)
		}
		c.addr = p
		c.mac = res.Interfaces[2].Mac
		cs = append(cs, c)
	}
	// Distinct blocks of the one /64, one per node.
	blocks := map[string]string{}
	for i, n := range cl.Nodes {
		st, err := n.Client.State(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, nw := range st.Networks {
			for _, b := range nw.Blocks {
				if b.Node == n.Name && len(b.Addrs) > 0 {
					blocks[b.Block] = n.Name
					if !netip.MustParsePrefix(b.Block).Contains(cs[i].addr.Addr()) {
						t.Errorf("node %d's container %s is not in its block %s", i, cs[i].addr, b.Block)
					}
				}
			}
		}
	}
	if len(blocks) != 2 {
		t.Errorf("blocks in use %v, want one per node", blocks)
	}
	for i, c := range cs {
		other := cs[1-i]
		for _, dst := range []string{other.addr.Addr().String(), routerAddr, segHostAddr} {
			if err := ping6(c.lab.cont, dst, 10*time.Second); err != nil {
				t.Errorf("node %d's container → %s: %v", i, dst, err)
			}
		}
		// On-link: the container resolved the peer's address to the
		// peer's own MAC (not sent via the router).
		var neigh string
		linktest.Do(t, c.lab.cont, func() error {
			lk, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			ns, err := netlink.NeighList(lk.Attrs().Index, netlink.FAMILY_V6)
			for _, n := range ns {
				if n.IP.String() == other.addr.Addr().String() {
					neigh = n.HardwareAddr.String()
				}
			}
			return err
		})
		if neigh != other.mac {
			t.Errorf("node %d's container: neighbour entry of %s has MAC %q, want the peer's %s (on-link)", i, other.addr.Addr(), neigh, other.mac)
		}
		conf := c.lab.ipamV6Conf(cl.Nodes[i].Socket, ranges, "")
		args := c.lab.args(c.id, withPrevResult(t, conf, c.raw))
		if err := c.lab.inHost(t, func() error { return testutils.CmdCheckWithArgs(args, func() error { return cmdCheck(args) }) }); err != nil {
			t.Errorf("node %d: CHECK: %v", i, err)
		}
	}
	if problems, _, err := cl.Check(context.Background()); err != nil || len(problems) > 0 {
		t.Errorf("key space: %v, %v", problems, err)
	}
}

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
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

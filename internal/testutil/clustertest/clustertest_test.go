package clustertest

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/checktest"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipmath"
)

// TestCluster starts a 3-member, 2-node cluster, allocates on one node,
// survives a member kill and an ipamd kill -9, and finds the key space
// consistent.
func TestCluster(t *testing.T) {
	c := Start(t, Options{Members: 3, Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": "ct",
		"ipam": map[string]any{"type": "ipam-v6", "ranges": [][]map[string]any{{{"subnet": "fd00:c7::/48", "blockSize": 120}}}},
	})
	req := func(cid string) *ipamapi.Request {
		return &ipamapi.Request{Network: "ct", ContainerID: cid, IfName: "eth0", Config: conf}
	}
	if _, err := c.Nodes[0].Client.Add(ctx, req("a")); err != nil {
		t.Fatal(err)
	}
	c.Members[0].Kill()
	c.Nodes[1].Kill()
	if c.Nodes[1].Running() || c.Members[0].Running() {
		t.Fatal("killed process still marked running")
	}
	if err := c.Nodes[1].Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nodes[1].Client.Add(ctx, req("b")); err != nil {
		t.Fatal(err)
	}
	if err := c.Members[0].Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[0].Restart(); err != nil {
		t.Fatal(err)
	}
	probs, snap, err := c.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 0 || len(snap.Addrs) != 2 || len(snap.Blocks) != 2 {
		t.Fatalf("problems %v, %d addrs, %d blocks; want none, 2, 2", probs, len(snap.Addrs), len(snap.Blocks))
	}
	checktest.AssertClean(t, c.Nodes[1].Client)
}

// TestClusterPD starts a 1-member, 2-node cluster with a delegating Kea:
// each node holds its own prefix of the pool, stored in etcd; a pd-ipam
// ADD gets an address of its node's /64; the prefix survives kill -9 and
// a planned restart.
func TestClusterPD(t *testing.T) {
	c := Start(t, Options{Members: 1, Nodes: 2, PD: &PDOptions{}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conf := []byte(`{"cniVersion":"1.1.0","name":"ctpd","ipam":{"type":"pd-ipam","subnetId":3}}`)
	held := make([]netip.Prefix, len(c.Nodes))
	for i, n := range c.Nodes {
		p, err := n.DelegatedPrefix(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.Bits() != c.PD.DelegatedLen || !c.PD.Pool.Contains(p.Addr()) {
			t.Fatalf("%s holds %s, want a /%d of %s", n.Name, p, c.PD.DelegatedLen, c.PD.Pool)
		}
		if i > 0 && p.Overlaps(held[0]) {
			t.Fatalf("%s and %s both hold %s", c.Nodes[0].Name, n.Name, p)
		}
		held[i] = p
		res, err := n.Client.Add(ctx, &ipamapi.Request{Network: "ctpd", ContainerID: "c" + n.Name, IfName: "eth0", Config: conf})
		if err != nil {
			t.Fatal(err)
		}
		sub, _ := ipmath.Subnet(p, 64, 3)
		if a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP); !sub.Contains(a) {
			t.Errorf("%s: pd ADD got %s, want an address of %s", n.Name, a, sub)
		}
	}
	c.Nodes[0].Kill()
	if err := c.Nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[1].Restart(); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.Nodes {
		p, err := n.DelegatedPrefix(ctx)
		if err != nil || p != held[i] {
			t.Errorf("%s after a restart holds %s (%v), want %s", n.Name, p, err, held[i])
		}
		stored, err := c.StoredPrefixes(ctx, n)
		if err != nil || len(stored) != 1 || stored[0] != held[i] {
			t.Errorf("%s: stored binding %v (%v), want %s", n.Name, stored, err, held[i])
		}
	}
	probs, _, err := c.Check(ctx)
	if err != nil || len(probs) != 0 {
		t.Fatalf("check: %v %v", probs, err)
	}
}

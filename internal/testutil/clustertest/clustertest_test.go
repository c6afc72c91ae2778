package clustertest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
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
}

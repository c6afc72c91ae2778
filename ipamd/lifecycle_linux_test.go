package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestBGPWithdrawsOnFencing: a node removed while it runs stops announcing
// the block it no longer owns (BIRD loses the route), and announces the
// block it claims anew for the next ADD.
func TestBGPWithdrawsOnFencing(t *testing.T) {
	l := newBGPLab(t)
	dir := shortDir(t)
	d := startIpamdIn(t, l.node, dir, "--config", l.config(t, dir))
	ctx := context.Background()
	cli := ipamapi.NewClient(d.socket)
	req := func(cid string) *ipamapi.Request {
		c := `{"cniVersion":"1.1.0","name":"fencenet","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:7d::/48","blockSize":126}]]}}`
		return &ipamapi.Request{Network: "fencenet", ContainerID: cid, IfName: "eth0", Config: []byte(c)}
	}
	// Two blocks: c1 and c2 fill the first, c3 claims the second.
	for _, cid := range []string{"c1", "c2", "c3"} {
		if _, err := cli.Add(ctx, req(cid)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "both blocks at BIRD", func() bool {
		return l.hasRoute("2001:db8:7d::/126") && l.hasRoute("2001:db8:7d::4/126")
	})

	// The embedded etcd's client socket is a path: reachable from here.
	ecli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(dir, "data", "etcd-client.sock")},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ecli.Close()
	start := time.Now()
	if _, err := store.New(ecli).RemoveNode(ctx, "test-node", "removed by the test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "withdrawal of the lost blocks", func() bool {
		return !l.hasRoute("2001:db8:7d::/126") && !l.hasRoute("2001:db8:7d::4/126")
	})
	t.Logf("removal → routes gone at BIRD: %v", time.Since(start).Round(time.Millisecond))

	// The next ADD claims a block of the new epoch (the lowest is free
	// again), and it is announced.
	if _, err := cli.Add(ctx, req("c4")); err != nil {
		t.Fatalf("ADD after fencing: %v", err)
	}
	waitFor(t, 30*time.Second, "the new block at BIRD", func() bool {
		return l.hasRoute("2001:db8:7d::/126") || l.hasRoute("2001:db8:7d::4/126") || l.hasRoute("2001:db8:7d::8/126")
	})
}

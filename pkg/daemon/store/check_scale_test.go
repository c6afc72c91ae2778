package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
)

// fillCluster writes a consistent cluster into a real etcd: nodes
// registered nodes, each with perNode attachments of one address each in
// /120 blocks of one pool, with their handles and address keys, as the
// allocator writes them (in transactions of 100 operations, as fast as
// etcd takes them).
func fillCluster(tb testing.TB, cli *clientv3.Client, nodes, perNode int) {
	tb.Helper()
	ctx := context.Background()
	st := New(cli)
	pool := netip.MustParsePrefix("fd00:be::/48")
	var ops []clientv3.Op
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			tb.Fatal(err)
		}
		ops = ops[:0]
	}
	put := func(key string, v any) {
		val, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		if ops = append(ops, clientv3.OpPut(key, string(val))); len(ops) >= 100 {
			flush()
		}
	}
	put(PoolKey("scale"), Pool{Network: "scale", Subnets: []netip.Prefix{pool}})
	blockNo := 0
	for n := range nodes {
		name := fmt.Sprintf("node-%03d", n)
		if _, err := st.RegisterNode(ctx, Node{Name: name, MachineID: name}, time.Minute); err != nil {
			tb.Fatal(err)
		}
		var block netip.Prefix
		host := 0
		for i := range perNode {
			if i%250 == 0 {
				// A /120: 256 addresses, the gateway and 250 hosts used.
				b := pool.Addr().As16()
				b[13], b[14] = byte(blockNo>>8), byte(blockNo)
				block = netip.PrefixFrom(netip.AddrFrom16(b), 120)
				blockNo++
				host = 2
				put(BlockKey(block), Block{CIDR: block, Node: name, Network: "scale", Subnet: pool, Source: "pool"})
			}
			a := block.Addr()
			for range host {
				a = a.Next()
			}
			host++
			id := AttachmentID{Network: "scale", ContainerID: fmt.Sprintf("%s-c%05d", name, i), IfName: "eth0"}
			put(HandleKey(id), Handle{AttachmentID: id, Node: name, Netns: "/var/run/netns/" + id.ContainerID,
				IPs: []IP{{Address: netip.PrefixFrom(a, 120), Gateway: block.Addr().Next(), Block: block}}, Created: time.Now()})
			put(AddrKey(a), id)
		}
	}
	flush()
}

// TestCheckScale: the store part of `ipamd check` over 10,000 attachments
// on 10 nodes in a real etcd finds them clean; the time it takes is logged
// (go test -v -run CheckScale) for the closing note, not asserted.
func TestCheckScale(t *testing.T) {
	cli := etcdtest.Client(t)
	fillCluster(t, cli, 10, 1000)
	ctx := context.Background()
	start := time.Now()
	snap, err := New(cli).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	read := time.Since(start)
	problems := Check(snap)
	states, nodeProblems := CheckNodes(snap)
	total := time.Since(start)
	if len(snap.Handles) != 10000 || len(snap.Addrs) != 10000 || len(states) != 10 {
		t.Fatalf("snapshot: %d handles, %d addresses, %d nodes; want 10000, 10000, 10", len(snap.Handles), len(snap.Addrs), len(states))
	}
	if len(problems)+len(nodeProblems) != 0 {
		t.Fatalf("clean cluster: %d problems, first %v", len(problems)+len(nodeProblems), append(problems, nodeProblems...)[0])
	}
	t.Logf("check of %d attachments, %d blocks, %d nodes: %v (snapshot read %v, checks %v)",
		len(snap.Handles), len(snap.Blocks), len(states), total, read, total-read)
}

// BenchmarkCheck10k: Snapshot + Check + CheckNodes over 10,000
// attachments on 10 nodes (go test -run X -bench Check10k).
func BenchmarkCheck10k(b *testing.B) {
	cli := etcdtest.Client(b)
	fillCluster(b, cli, 10, 1000)
	ctx := context.Background()
	st := New(cli)
	b.ResetTimer()
	for range b.N {
		snap, err := st.Snapshot(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if ps := Check(snap); len(ps) != 0 {
			b.Fatal(ps[0])
		}
		CheckNodes(snap)
	}
}

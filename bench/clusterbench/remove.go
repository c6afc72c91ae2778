package main

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// removal is what one node's removal did and cost.
type removal struct {
	took time.Duration
	rm   store.Removed
	// writes is the number of etcd revisions the removal made: its fencing
	// transaction, the batched sweep's transactions and the final
	// tombstone update (a write transaction is one revision).
	writes int64
}

// removeNode decommissions node with store.RemoveNode, what `ipamd node
// remove NAME --force` runs: one fencing transaction (registration and
// liveness deleted, tombstone written), then batched transactions (≤ 100
// operations each) releasing its handles, addresses and blocks. The
// revision before and after counts the writes: the caller holds the other
// nodes' heartbeats back meanwhile (liveness.paused), so nothing else
// writes but a heartbeat already in flight.
func removeNode(ctx context.Context, cli *clientv3.Client, st *store.Store, node, reason string) (removal, error) {
	var out removal
	before, err := cli.Get(ctx, store.NodeKey(node), clientv3.WithCountOnly())
	if err != nil {
		return out, fmt.Errorf("remove node %s: %w", node, err)
	}
	t := time.Now()
	rm, err := st.RemoveNode(ctx, node, reason)
	out.took = time.Since(t)
	if err != nil {
		return out, err
	}
	after, err := cli.Get(ctx, store.NodeKey(node), clientv3.WithCountOnly())
	if err != nil {
		return out, fmt.Errorf("remove node %s: %w", node, err)
	}
	out.rm = *rm
	out.writes = after.Header.Revision - before.Header.Revision
	return out, nil
}

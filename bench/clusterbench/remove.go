package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// removed is what removeNode released.
type removed struct {
	attachments, stickies, blocks int
	txns                          int
}

// removeNode decommissions node the way `ipamd node remove NAME --force`
// does, and is what the bench times.
//
// lands with store.RemoveNode (issue 12 life branch): this whole body
// becomes one call of st.RemoveNode(ctx, node, reason), which batches the
// releases. Until then it is the documented removal sequence done with
// store's exported functions, one transaction per attachment and per block
// (an upper bound of the batched removal's cost):
//
//  1. ONE transaction, guarded by the registration's epoch (its
//     CreateRevision), deletes /v6cni/nodes/<node> and /v6cni/alive/<node>
//     and writes the tombstone /v6cni/removed/<node>: from then on no write
//     of that incarnation can land. store has no exported function for it
//     yet, so it is written here with store's exported key builders and
//     record type over the raw client — the only step not through store.
//  2. The node's attachments, found through its blocks (every address of a
//     block of the node has a holder; no scan of the whole cluster's
//     handles): store.Release each handle, store.ReleaseSticky each sticky
//     record.
//  3. store.ReleaseBlock each of its blocks.
//
// PD records (/v6cni/pd/<node>/) are not released here: the bench's nodes
// have none (one pool network).
func removeNode(ctx context.Context, cli *clientv3.Client, st *store.Store, node, reason string) (removed, error) {
	var out removed
	resp, err := cli.Get(ctx, store.NodeKey(node))
	if err != nil {
		return out, fmt.Errorf("remove node %s: read registration: %w", node, err)
	}
	if len(resp.Kvs) == 0 {
		return out, fmt.Errorf("remove node %s: not registered", node)
	}
	epoch := resp.Kvs[0].CreateRevision

	// Find what to release before the fence, to count it in the
	// tombstone; the node is dead (its ipamd stopped), so nothing changes
	// it meanwhile, and after the fence nothing can.
	blocks, err := st.Blocks(ctx)
	if err != nil {
		return out, err
	}
	var mine []store.Block
	holders := map[store.AttachmentID]bool{}
	for _, b := range blocks {
		if b.Node != node {
			continue
		}
		mine = append(mine, b)
		held, err := st.AddrsIn(ctx, b.CIDR)
		if err != nil {
			return out, err
		}
		for _, id := range held {
			holders[id] = true
		}
	}

	tomb, err := json.Marshal(store.Removed{Node: node, Epoch: epoch, At: time.Now().UTC(), Reason: reason,
		Attachments: len(holders), Blocks: len(mine)})
	if err != nil {
		return out, err
	}
	txn, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(store.NodeKey(node)), "=", epoch)).
		Then(clientv3.OpDelete(store.NodeKey(node)), clientv3.OpDelete(store.AliveKey(node)),
			clientv3.OpPut(store.RemovedKey(node), string(tomb))).
		Commit()
	out.txns++
	if err != nil {
		return out, fmt.Errorf("remove node %s: fence: %w", node, err)
	}
	if !txn.Succeeded {
		return out, fmt.Errorf("remove node %s: registration changed (re-registered) meanwhile", node)
	}

	for id := range holders {
		if pod, ok := strings.CutPrefix(id.ContainerID, "sticky:"); ok {
			sk, err := st.StickyFor(ctx, id.Network, pod, id.IfName)
			if err != nil {
				return out, err
			}
			if sk != nil && sk.Node == node {
				if err := st.ReleaseSticky(ctx, *sk); err != nil {
					return out, err
				}
				out.stickies++
				out.txns++
			}
			continue
		}
		h, err := st.Handle(ctx, id)
		if err != nil {
			return out, err
		}
		if h == nil || h.Node != node {
			continue
		}
		if err := st.Release(ctx, *h); err != nil {
			return out, err
		}
		out.attachments++
		out.txns++
	}
	for _, b := range mine {
		if err := st.ReleaseBlock(ctx, b.CIDR); err != nil {
			return out, err
		}
		out.blocks++
		out.txns++
	}
	return out, nil
}

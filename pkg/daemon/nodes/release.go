package nodes

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// ElectionPrefix is the etcd election of the ipamd that releases dead
// nodes: one ipamd of the cluster at a time.
const ElectionPrefix = store.Prefix + "election/dead-node-release"

// DefaultReleaseEvery bounds the time between scans for dead nodes.
const DefaultReleaseEvery = time.Minute

// ReleaseDead runs the automatic release of dead nodes (--dead-node-grace)
// until ctx ends. This ipamd campaigns in an etcd election; while it
// leads, every every (0: grace/2, at most a minute) it removes each node
// that is registered, not alive and not seen for longer than grace
// (store.RemoveDeadNode, guarded by its leadership: a former leader's late
// removal does not land). Losing the election's session (etcd outage)
// ends the leadership; it campaigns again.
//
// Off by default (grace 0) because a node cut off from etcd, not dead,
// still runs its pods: once its blocks are released, another node can
// hand their addresses out again while those pods still use them.
func (k *Keeper) ReleaseDead(ctx context.Context, cli *clientv3.Client, grace, every time.Duration) {
	if grace <= 0 {
		return
	}
	if every <= 0 {
		every = min(grace/2, DefaultReleaseEvery)
	}
	every = max(every, 100*time.Millisecond)
	ttl := max(int((k.cfg.TTL+time.Second-1)/time.Second), 1)
	wait := k.cfg.MinBackoff
	for ctx.Err() == nil {
		if err := k.leadRelease(ctx, cli, grace, every, ttl); err != nil && ctx.Err() == nil {
			k.log.Warn("dead-node release: election", "node", k.cfg.Node, "error", err, "retryIn", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, k.cfg.MaxBackoff)
			continue
		}
		wait = k.cfg.MinBackoff
	}
}

// leadRelease campaigns once and, when elected, scans until ctx ends or
// the session is lost.
func (k *Keeper) leadRelease(ctx context.Context, cli *clientv3.Client, grace, every time.Duration, ttl int) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, ElectionPrefix)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// A session lost while campaigning would leave Campaign waiting.
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	if err := el.Campaign(cctx, k.cfg.Node); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	k.log.Info("leading the release of dead nodes", "node", k.cfg.Node, "grace", grace)
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		_ = el.Resign(rctx)
	}()
	leader := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		k.releaseDead(cctx, grace, leader)
		select {
		case <-cctx.Done():
			if ctx.Err() == nil {
				k.log.Warn("dead-node release: leadership lost (election session ended)", "node", k.cfg.Node)
			}
			return nil
		case <-tick.C:
		}
	}
}

// releaseDead removes the nodes dead for longer than grace, once.
func (k *Keeper) releaseDead(ctx context.Context, grace time.Duration, leader clientv3.Cmp) {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	infos, err := k.cfg.Store.NodeInfos(sctx)
	if err != nil {
		k.log.Warn("dead-node release: list nodes", "error", err)
		return
	}
	for _, in := range infos {
		if in.Node == nil || in.Alive != nil || in.Name == k.cfg.Node {
			continue
		}
		since := time.Since(in.Node.LastSeen)
		if since < grace {
			continue
		}
		reason := fmt.Sprintf("dead for %s (last seen %s), over --dead-node-grace %s; released by the ipamd of node %s",
			since.Round(time.Second), in.Node.LastSeen.UTC().Format(time.RFC3339), grace, k.cfg.Node)
		rm, err := k.cfg.Store.RemoveDeadNode(sctx, in.Name, grace, reason, leader)
		switch {
		case errors.Is(err, store.ErrNotDead), errors.Is(err, store.ErrNotRegistered):
			k.log.Info("dead-node release: left alone", "node", in.Name, "why", err)
		case err != nil:
			k.log.Warn("dead-node release", "node", in.Name, "error", err)
		default:
			k.mu.Lock()
			k.deadRemoved++
			k.mu.Unlock()
			k.log.Warn("dead node removed", "node", in.Name, "epoch", rm.Epoch, "reason", reason,
				"attachments", rm.Attachments, "blocks", rm.Blocks)
		}
	}
}

// DeadRemoved counts the dead nodes this ipamd removed.
func (k *Keeper) DeadRemoved() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.deadRemoved
}

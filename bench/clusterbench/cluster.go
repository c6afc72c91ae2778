package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// leaseTTL is ipamd's liveness lease (serve.go's nodeTTL).
const leaseTTL = 30 * time.Second

// simNode is one simulated node: what ipamd's serve wires for the IPAM
// path, without the socket: its own etcd client (one connection), its
// registration with the liveness record under a lease kept alive, a
// heartbeat of the registration, and an allocator on the store fenced by
// the node's epoch.
type simNode struct {
	name  string
	cli   *clientv3.Client
	st    *store.Store // fenced by the registration's epoch
	alloc *allocator.Allocator
	// stop ends the keepalive and the heartbeat: the node's ipamd "dies".
	stop context.CancelFunc
	// pods are the attachments the node has now, one per pod slot.
	pods []store.AttachmentID
}

// liveness counts what the nodes' liveness costs etcd during a run.
type liveness struct {
	keepalives, heartbeats, heartbeatErrs atomic.Int64
	// paused holds the heartbeats back while a removal's writes are
	// counted (the keepalives write nothing and go on).
	paused atomic.Bool
}

// startNode registers the node and builds its allocator, as ipamd serve
// does at start: store.RegisterNode (the permanent registration whose
// CreateRevision is the epoch, and the liveness record under a new lease),
// the lease kept alive, the registration's LastSeen written every
// heartbeat, and allocator.New on the store fenced by the epoch, so every
// block claim and ADD carries the fence compare as in production.
func startNode(ctx context.Context, cli *clientv3.Client, name string, pods int, heartbeat time.Duration, lv *liveness, log *slog.Logger) (*simNode, error) {
	base := store.New(cli)
	reg, err := base.RegisterNode(ctx, store.Node{Name: name, MachineID: "clusterbench-" + name}, leaseTTL)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(ctx)
	ka, err := base.KeepAlive(nctx, reg.Lease)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("node %s: keep lease alive: %w", name, err)
	}
	n := &simNode{name: name, cli: cli, st: base.Fenced(name, reg.Node.Epoch), stop: cancel, pods: make([]store.AttachmentID, pods)}
	go n.live(nctx, base, reg.Node, ka, heartbeat, lv)
	if n.alloc, err = allocator.New(ctx, n.st, name, log); err != nil {
		cancel()
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	return n, nil
}

// live consumes the keepalive responses and writes the heartbeat until
// ctx ends, like the life helper's package nodes. A failed heartbeat is
// counted, not fatal: the report shows it.
func (n *simNode) live(ctx context.Context, base *store.Store, reg store.Node, ka <-chan *clientv3.LeaseKeepAliveResponse, every time.Duration, lv *liveness) {
	// The first heartbeat at a random point of the interval: ipamds start
	// at different times, and nodes started within seconds of each other
	// would otherwise all write in the same second of every interval.
	var tick <-chan time.Time
	var t *time.Ticker
	if every > 0 {
		tick = time.After(rand.N(every))
	}
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				ka = nil // lease lost or ctx ended
				continue
			}
			lv.keepalives.Add(1)
		case <-tick:
			if t == nil {
				t = time.NewTicker(every)
				tick = t.C
			}
			if lv.paused.Load() {
				continue
			}
			hctx, cancel := context.WithTimeout(ctx, opTimeout)
			err := base.Heartbeat(hctx, reg)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					lv.heartbeatErrs.Add(1)
				}
				continue
			}
			lv.heartbeats.Add(1)
		}
	}
}

// attachmentID is a fresh attachment: a new container ID, as a runtime
// gives a re-created pod.
func attachmentID(network string) store.AttachmentID {
	b := make([]byte, 32)
	crand.Read(b)
	return store.AttachmentID{Network: network, ContainerID: hex.EncodeToString(b), IfName: "eth0"}
}

// add is one ADD of pod slot i of the node.
func (n *simNode) add(ctx context.Context, conf *ipamconf.NetConf, i int) (time.Duration, error) {
	id := attachmentID(conf.Name)
	req := allocator.Request{
		ID:    id,
		Netns: "/var/run/netns/cni-" + id.ContainerID[:8],
		Conf:  conf,
		Args:  ipamconf.Args{PodNamespace: "default", PodName: fmt.Sprintf("%s-pod-%d", n.name, i)},
	}
	// Recorded before the ADD: a failed ADD is DELeted by the runtime.
	n.pods[i] = id
	t := time.Now()
	_, err := n.alloc.Add(ctx, req)
	d := time.Since(t)
	if err != nil {
		return d, fmt.Errorf("ADD on %s: %w", n.name, err)
	}
	return d, nil
}

// redo is what a runtime does after a failed ADD of pod slot i: DEL it,
// then ADD a new container, here with a generous bound and untimed.
func (n *simNode) redo(ctx context.Context, conf *ipamconf.NetConf, i int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*opTimeout)
	defer cancel()
	if _, err := n.del(ctx, i); err != nil {
		return err
	}
	_, err := n.add(ctx, conf, i)
	return err
}

// del is one DEL of pod slot i of the node (no sticky grace).
func (n *simNode) del(ctx context.Context, i int) (time.Duration, error) {
	if n.pods[i] == (store.AttachmentID{}) {
		return 0, nil
	}
	t := time.Now()
	_, err := n.alloc.Del(ctx, n.pods[i], 0)
	d := time.Since(t)
	if err != nil {
		return d, fmt.Errorf("DEL on %s: %w", n.name, err)
	}
	n.pods[i] = store.AttachmentID{}
	return d, nil
}

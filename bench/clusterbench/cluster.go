package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// leaseTTL is ipamd's registration lease.
const leaseTTL = 30 * time.Second

// simNode is one simulated node: what ipamd's serve wires for the IPAM
// path, without the socket: its own etcd client (one connection), store,
// lease (kept alive) and allocator.
type simNode struct {
	name  string
	cli   *clientv3.Client
	st    *store.Store
	alloc *allocator.Allocator
	// stop ends the node's lease keepalive: the node's ipamd "dies".
	stop context.CancelFunc
	// pods are the attachments the node has now, one per pod slot.
	pods []store.AttachmentID
}

// startNode registers the node and builds its allocator, as ipamd serve
// does at start.
func startNode(ctx context.Context, cli *clientv3.Client, name string, pods int, log *slog.Logger) (*simNode, error) {
	n := &simNode{name: name, cli: cli, st: store.New(cli), pods: make([]store.AttachmentID, pods)}
	nctx, cancel := context.WithCancel(ctx)
	n.stop = cancel
	if err := registerNode(nctx, n.st, name); err != nil {
		cancel()
		return nil, err
	}
	a, err := allocator.New(ctx, n.st, name, log)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	n.alloc = a
	return n, nil
}

// registerNode is the node's registration and liveness: today one key
// under a lease of leaseTTL kept alive until ctx ends (store.RegisterNode);
// the life branch splits it into the permanent registration and the alive
// key under the lease, with the same lease and keepalive load on etcd.
func registerNode(ctx context.Context, st *store.Store, name string) error {
	now := time.Now().UTC()
	return st.RegisterNode(ctx, store.Node{Name: name, Registered: now, Started: now, LastSeen: now}, leaseTTL)
}

// attachmentID is a fresh attachment: a new container ID, as a runtime
// gives a re-created pod.
func attachmentID(network string) store.AttachmentID {
	b := make([]byte, 32)
	rand.Read(b)
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
	t := time.Now()
	_, err := n.alloc.Add(ctx, req)
	d := time.Since(t)
	if err != nil {
		return d, fmt.Errorf("ADD on %s: %w", n.name, err)
	}
	n.pods[i] = id
	return d, nil
}

// del is one DEL of pod slot i of the node (no sticky grace).
func (n *simNode) del(ctx context.Context, i int) (time.Duration, error) {
	t := time.Now()
	_, err := n.alloc.Del(ctx, n.pods[i], 0)
	d := time.Since(t)
	if err != nil {
		return d, fmt.Errorf("DEL on %s: %w", n.name, err)
	}
	n.pods[i] = store.AttachmentID{}
	return d, nil
}

package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/ipmath"
)

// This file: the records of a node's life in the cluster. A node has a
// registration (Node), permanent until the node is removed; while its ipamd
// runs, a liveness record (Alive) under the ipamd's etcd lease; and after a
// removal, a tombstone (Removed) saying when and why, which is what a
// removed ipamd that comes back reads to explain why it lost its blocks.
//
// The node's epoch is the CreateRevision of its registration key: every
// write by which a node takes something (a block, an address, a sticky
// record) is guarded by "the registration still has my epoch", so once a
// removal has deleted the registration no write of the removed incarnation
// can land, however late it arrives.

// Node is a node's registration.
type Node struct {
	Name string `json:"name"`
	// Registered is when this registration (this epoch) was created.
	Registered time.Time `json:"registered"`
	// Started is when the ipamd that last registered or adopted it started.
	Started time.Time `json:"started"`
	// LastSeen is the last heartbeat of the node's ipamd (written about
	// once per lease TTL), for `ipamd nodes` and the dead-node release.
	LastSeen time.Time `json:"lastSeen"`
	// MachineID tells a restart of the same machine (adopt the
	// registration) from another machine using the same node name (refuse).
	MachineID string `json:"machineID,omitempty"`
	// Epoch is the key's CreateRevision (not stored: filled when read).
	Epoch int64 `json:"-"`
}

// Alive says the node's ipamd runs: the key lives under its etcd lease.
type Alive struct {
	Node      string    `json:"node"`
	Epoch     int64     `json:"epoch"`
	Started   time.Time `json:"started"`
	MachineID string    `json:"machineID,omitempty"`
	PID       int       `json:"pid,omitempty"`
}

// Removed is the tombstone of a removed node registration.
type Removed struct {
	Node  string    `json:"node"`
	Epoch int64     `json:"epoch"`
	At    time.Time `json:"at"`
	// Reason says who removed it and why ("ipamd node remove", "dead for
	// 10m0s (--dead-node-grace)").
	Reason string `json:"reason"`
	// Attachments and Blocks count what the removal released.
	Attachments int `json:"attachments"`
	Blocks      int `json:"blocks"`
	// Revision is the etcd revision of the removal's first transaction:
	// the node's records as of the revision before it are what it lost.
	Revision int64 `json:"revision,omitempty"`
}

// NodeKey, AliveKey and RemovedKey build the keys of a node's records.
func NodeKey(name string) string { return nodesPrefix + name }

// AliveKey is the key of a node's liveness record.
func AliveKey(name string) string { return alivePrefix + name }

// RemovedKey is the key of a node's tombstone.
func RemovedKey(name string) string { return removedPrefix + name }

// ErrFenced says a write was refused because the node's registration no
// longer has the epoch the store is bound to: the node was removed (or
// removed and registered again), so what it wanted to take is no longer
// its to take.
var ErrFenced = errors.New("node registration fenced")

// ErrNotRegistered says a node has no registration and nothing left to
// release.
var ErrNotRegistered = errors.New("node not registered")

// fence is the registration a store's writes are bound to. The epoch is
// shared by every copy made from one Fenced call, so SetEpoch moves them
// all (the allocator, the PD client and the bridges' services) at once.
type fence struct {
	node  string
	epoch atomic.Int64
}

// Fenced returns a copy of s whose ClaimBlock, Allocate, Stick, SavePD
// and PutNetService commit only while node's registration has epoch. A
// store that is not fenced guards nothing (tools, tests, the CLI).
func (s *Store) Fenced(node string, epoch int64) *Store {
	f := &fence{node: node}
	f.epoch.Store(epoch)
	return &Store{cli: s.cli, fence: f}
}

// SetEpoch binds a fenced store (and its copies) to a new epoch of its
// node, after the node registered again. It does nothing on a store that
// is not fenced.
func (s *Store) SetEpoch(epoch int64) {
	if s.fence != nil {
		s.fence.epoch.Store(epoch)
	}
}

// Epoch is the epoch a fenced store is bound to (0 if not fenced).
func (s *Store) Epoch() int64 {
	if s.fence == nil {
		return 0
	}
	return s.fence.epoch.Load()
}

// txnGuard adds the fence's compare to a transaction and, when the
// transaction fails, tells a lost fence from the other compares by a read
// of the registration in Else (always the last Else op).
type txnGuard struct {
	node  string
	epoch int64
}

func (s *Store) guard() txnGuard {
	if s.fence == nil {
		return txnGuard{}
	}
	return txnGuard{node: s.fence.node, epoch: s.fence.epoch.Load()}
}

func (g txnGuard) cmps(c ...clientv3.Cmp) []clientv3.Cmp {
	if g.node == "" {
		return c
	}
	return append(c, clientv3.Compare(clientv3.CreateRevision(NodeKey(g.node)), "=", g.epoch))
}

func (g txnGuard) elses(ops ...clientv3.Op) []clientv3.Op {
	if g.node == "" {
		return ops
	}
	return append(ops, clientv3.OpGet(NodeKey(g.node), clientv3.WithKeysOnly()))
}

// check returns an error wrapping ErrFenced if the failed transaction
// failed on the fence.
func (g txnGuard) check(txn *clientv3.TxnResponse) error {
	if g.node == "" || len(txn.Responses) == 0 {
		return nil
	}
	kvs := txn.Responses[len(txn.Responses)-1].GetResponseRange().GetKvs()
	switch {
	case len(kvs) == 0:
		return fmt.Errorf("node %s (epoch %d) is no longer registered: %w", g.node, g.epoch, ErrFenced)
	case kvs[0].CreateRevision != g.epoch:
		return fmt.Errorf("node %s (epoch %d) was registered again as epoch %d: %w", g.node, g.epoch, kvs[0].CreateRevision, ErrFenced)
	}
	return nil
}

// guardedPut puts key under the fence (a plain put when not fenced).
func (s *Store) guardedPut(ctx context.Context, key, val string) error {
	g := s.guard()
	if g.node == "" {
		_, err := s.cli.Put(ctx, key, val)
		return err
	}
	txn, err := s.cli.Txn(ctx).If(g.cmps()...).Then(clientv3.OpPut(key, val)).Else(g.elses()...).Commit()
	if err != nil {
		return err
	}
	if !txn.Succeeded {
		return g.check(txn)
	}
	return nil
}

// MachineID identifies this machine: /etc/machine-id, else the host name.
// It tells a restart of a node's ipamd from another machine using the
// same node name.
func MachineID() string {
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id
		}
	}
	host, _ := os.Hostname()
	return host
}

// InUseError says a node name is taken by a live ipamd on another machine.
type InUseError struct {
	Node    string
	Machine string
	Since   time.Time
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("node name %s is in use by a live ipamd on machine %s since %s; give this node another --node-name",
		e.Node, e.Machine, e.Since.UTC().Format(time.RFC3339))
}

// Registration is what RegisterNode got: the registration (with its
// epoch) and the lease its liveness record lives under.
type Registration struct {
	Node  Node
	Lease clientv3.LeaseID
	// Adopted is true when the registration existed (a restart of the
	// node's ipamd: same epoch, its blocks and attachments stay).
	Adopted bool
	// Revision is the etcd revision of the registering transaction: a
	// watch of the registration from Revision+1 sees every later change.
	Revision int64
}

// RegisterNode creates n's registration if there is none, or adopts the
// existing one (same epoch), and puts the liveness record under a new
// lease of ttl. It refuses when another machine's ipamd is alive under the
// same name (*InUseError); the same machine (an earlier incarnation of
// this ipamd, killed) takes the liveness record over. The lease is not
// kept alive here: that is the caller's (package nodes).
func (s *Store) RegisterNode(ctx context.Context, n Node, ttl time.Duration) (*Registration, error) {
	nkey, akey := NodeKey(n.Name), AliveKey(n.Name)
	now := time.Now().UTC()
	if n.Started.IsZero() {
		n.Started = now
	}
	var lease clientv3.LeaseID
	defer func() {
		// A lease granted for a registration that did not happen.
		if lease != 0 {
			s.cli.Revoke(context.WithoutCancel(ctx), lease)
		}
	}()
	for {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(nkey), clientv3.OpGet(akey)).Commit()
		if err != nil {
			return nil, fmt.Errorf("register node %s: %w", n.Name, err)
		}
		var aliveRev int64
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			var al Alive
			if err := json.Unmarshal(kvs[0].Value, &al); err != nil {
				return nil, fmt.Errorf("register node %s: decode %s: %w", n.Name, akey, err)
			}
			if al.MachineID != n.MachineID {
				return nil, &InUseError{Node: n.Name, Machine: al.MachineID, Since: al.Started}
			}
			aliveRev = kvs[0].ModRevision
		}
		reg := Node{Name: n.Name, Registered: now, Started: n.Started, LastSeen: now, MachineID: n.MachineID}
		adopted := false
		var epoch int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			var old Node
			if err := json.Unmarshal(kvs[0].Value, &old); err != nil {
				return nil, fmt.Errorf("register node %s: decode %s: %w", n.Name, nkey, err)
			}
			reg.Registered, adopted, epoch = old.Registered, true, kvs[0].CreateRevision
		}
		if lease == 0 {
			l, err := s.cli.Grant(ctx, int64((ttl+time.Second-1)/time.Second))
			if err != nil {
				return nil, fmt.Errorf("register node %s: grant lease: %w", n.Name, err)
			}
			lease = l.ID
		}
		val, err := json.Marshal(reg)
		if err != nil {
			return nil, err
		}
		if !adopted {
			// Create: the epoch is this transaction's revision, which the
			// liveness record names, so it is written in a second step.
			txn, err := s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(nkey), "=", 0)).
				Then(clientv3.OpPut(nkey, string(val))).Commit()
			if err != nil {
				return nil, fmt.Errorf("register node %s: %w", n.Name, err)
			}
			if !txn.Succeeded {
				continue
			}
			epoch = txn.Header.Revision
		}
		al, err := json.Marshal(Alive{Node: n.Name, Epoch: epoch, Started: n.Started, MachineID: n.MachineID, PID: os.Getpid()})
		if err != nil {
			return nil, err
		}
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(nkey), "=", epoch),
				clientv3.Compare(clientv3.ModRevision(akey), "=", aliveRev)).
			Then(clientv3.OpPut(nkey, string(val)), clientv3.OpPut(akey, string(al), clientv3.WithLease(lease))).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("register node %s: %w", n.Name, err)
		}
		if !txn.Succeeded {
			continue // removed, or another incarnation meanwhile: look again
		}
		reg.Epoch = epoch
		r := &Registration{Node: reg, Lease: lease, Adopted: adopted, Revision: txn.Header.Revision}
		lease = 0
		return r, nil
	}
}

// Heartbeat records that n's ipamd is still there (LastSeen), only while
// the registration has n's epoch; otherwise the error wraps ErrFenced.
func (s *Store) Heartbeat(ctx context.Context, n Node) error {
	n.LastSeen = time.Now().UTC()
	val, err := json.Marshal(n)
	if err != nil {
		return err
	}
	g := txnGuard{node: n.Name, epoch: n.Epoch}
	txn, err := s.cli.Txn(ctx).If(g.cmps()...).Then(clientv3.OpPut(NodeKey(n.Name), string(val))).Else(g.elses()...).Commit()
	if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", n.Name, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("heartbeat: %w", g.check(txn))
	}
	return nil
}

// NodeRegistration returns a node's registration (with its epoch), or nil.
func (s *Store) NodeRegistration(ctx context.Context, name string) (*Node, error) {
	resp, err := s.cli.Get(ctx, NodeKey(name))
	if err != nil {
		return nil, fmt.Errorf("read registration of node %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var n Node
	if err := json.Unmarshal(resp.Kvs[0].Value, &n); err != nil {
		return nil, fmt.Errorf("decode %s: %w", resp.Kvs[0].Key, err)
	}
	n.Epoch = resp.Kvs[0].CreateRevision
	return &n, nil
}

// NodeRegistrationAt is NodeRegistration and the etcd revision it was
// read at: a watch from the revision after it misses no change.
func (s *Store) NodeRegistrationAt(ctx context.Context, name string) (*Node, int64, error) {
	resp, err := s.cli.Get(ctx, NodeKey(name))
	if err != nil {
		return nil, 0, fmt.Errorf("read registration of node %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	var n Node
	if err := json.Unmarshal(resp.Kvs[0].Value, &n); err != nil {
		return nil, 0, fmt.Errorf("decode %s: %w", resp.Kvs[0].Key, err)
	}
	n.Epoch = resp.Kvs[0].CreateRevision
	return &n, resp.Header.Revision, nil
}

// Tombstone returns a node's tombstone, or nil.
func (s *Store) Tombstone(ctx context.Context, name string) (*Removed, error) {
	resp, err := s.cli.Get(ctx, RemovedKey(name))
	if err != nil {
		return nil, fmt.Errorf("read tombstone of node %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var r Removed
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", resp.Kvs[0].Key, err)
	}
	return &r, nil
}

// AliveNodes returns the liveness records: the nodes whose ipamd runs.
func (s *Store) AliveNodes(ctx context.Context) ([]Alive, error) {
	return list[Alive](ctx, s.cli, alivePrefix)
}

// Nodes returns the registrations, with their epochs.
func (s *Store) Nodes(ctx context.Context) ([]Node, error) {
	resp, err := s.cli.Get(ctx, nodesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", nodesPrefix, err)
	}
	out := make([]Node, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		n.Epoch = kv.CreateRevision
		out = append(out, n)
	}
	return out, nil
}

// NodeInfo is what the cluster knows of one node name: any of its
// registration, liveness record and tombstone, and what it holds.
type NodeInfo struct {
	Name    string
	Node    *Node
	Alive   *Alive
	Removed *Removed
	// Blocks and Attachments count the node's blocks and handles.
	Blocks, Attachments int
}

// State is the node's state by the rule CheckNodes also follows: alive
// when registered with a liveness record, dead when registered without
// one, removed when a tombstone says so, unregistered otherwise.
func (n NodeInfo) State() string {
	switch {
	case n.Node != nil && n.Alive != nil:
		return NodeAlive
	case n.Node != nil:
		return NodeDead
	case n.Removed != nil:
		return NodeRemoved
	}
	return NodeUnregistered
}

// NodeInfos lists every node name that has a registration, a liveness
// record, a tombstone or a block or handle, read at one revision, in name
// order.
func (s *Store) NodeInfos(ctx context.Context) ([]NodeInfo, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(nodesPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(alivePrefix, clientv3.WithPrefix()),
		clientv3.OpGet(removedPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(blocksPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(handlesPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	infos := map[string]*NodeInfo{}
	get := func(name string) *NodeInfo {
		if infos[name] == nil {
			infos[name] = &NodeInfo{Name: name}
		}
		return infos[name]
	}
	for i, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			var err error
			switch i {
			case 0:
				var n Node
				if err = json.Unmarshal(kv.Value, &n); err == nil {
					n.Epoch = kv.CreateRevision
					get(n.Name).Node = &n
				}
			case 1:
				var a Alive
				if err = json.Unmarshal(kv.Value, &a); err == nil {
					get(a.Node).Alive = &a
				}
			case 2:
				var rm Removed
				if err = json.Unmarshal(kv.Value, &rm); err == nil {
					get(rm.Node).Removed = &rm
				}
			case 3:
				var b struct{ Node string }
				if err = json.Unmarshal(kv.Value, &b); err == nil {
					get(b.Node).Blocks++
				}
			case 4:
				var h struct{ Node string }
				if err = json.Unmarshal(kv.Value, &h); err == nil {
					get(h.Node).Attachments++
				}
			}
			if err != nil {
				return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
		}
	}
	out := make([]NodeInfo, 0, len(infos))
	for _, in := range infos {
		out = append(out, *in)
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// maxTxnOps bounds the operations of one sweep transaction: etcd refuses
// more than --max-txn-ops (default 128) in one.
const maxTxnOps = 100

// RemoveNode decommissions a node. First one transaction deletes the
// registration (only if it still has the epoch read) and the liveness
// record and writes the tombstone: from then on no write of that
// incarnation can land. Then batches of transactions release its handles
// and their addresses, its sticky records, its PD bindings and its blocks
// with the addresses in them. A removal interrupted midway is finished by
// running it again: with the registration gone, the sweep continues.
//
// The sweep deletes only keys created before the removal (each delete
// compares revisions), so a node that registers again meanwhile under the
// same name keeps what its new epoch takes. A name with no registration
// and nothing left is ErrNotRegistered.
func (s *Store) RemoveNode(ctx context.Context, name, reason string) (*Removed, error) {
	return s.removeNode(ctx, name, reason, nil)
}

// ErrNotDead says RemoveDeadNode found the node alive, or seen within the
// grace: it was left alone.
var ErrNotDead = errors.New("node not dead")

// RemoveDeadNode removes a node as RemoveNode does, but only if it is
// dead: registered, without a liveness record, and with a LastSeen older
// than grace; the removal's first transaction also compares that neither
// the liveness record nor the registration changed since they were read,
// plus every compare of guard (a leader's key: only the elected ipamd's
// removal lands). A node that is not dead is ErrNotDead; a guard that
// fails is ErrNotDead too (no longer leader: someone else decides).
func (s *Store) RemoveDeadNode(ctx context.Context, name string, grace time.Duration, reason string, guard ...clientv3.Cmp) (*Removed, error) {
	return s.removeNode(ctx, name, reason, &deadCond{grace: grace, guard: guard})
}

// deadCond is RemoveDeadNode's condition on the first transaction.
type deadCond struct {
	grace time.Duration
	guard []clientv3.Cmp
}

func (s *Store) removeNode(ctx context.Context, name, reason string, dead *deadCond) (*Removed, error) {
	nkey, akey, rkey := NodeKey(name), AliveKey(name), RemovedKey(name)
	var rm Removed
	var bound int64
	registered, tomb := true, false
	for {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(nkey), clientv3.OpGet(akey), clientv3.OpGet(rkey)).Commit()
		if err != nil {
			return nil, fmt.Errorf("remove node %s: %w", name, err)
		}
		nodeKvs, aliveKvs, rmKvs := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs, resp.Responses[2].GetResponseRange().Kvs
		if dead != nil {
			if len(nodeKvs) == 0 {
				return nil, fmt.Errorf("remove dead node %s: %w", name, ErrNotRegistered)
			}
			if len(aliveKvs) > 0 {
				return nil, fmt.Errorf("remove dead node %s: %w (alive)", name, ErrNotDead)
			}
			var n Node
			if err := json.Unmarshal(nodeKvs[0].Value, &n); err != nil {
				return nil, fmt.Errorf("remove dead node %s: decode %s: %w", name, nkey, err)
			}
			if since := time.Since(n.LastSeen); since < dead.grace {
				return nil, fmt.Errorf("remove dead node %s: %w (last seen %s ago)", name, ErrNotDead, since.Round(time.Second))
			}
		}
		if len(nodeKvs) == 0 {
			// Already removed (or never registered): finish the sweep.
			registered, tomb = false, len(rmKvs) > 0
			if tomb {
				if err := json.Unmarshal(rmKvs[0].Value, &rm); err != nil {
					return nil, fmt.Errorf("remove node %s: decode %s: %w", name, rkey, err)
				}
			} else {
				rm = Removed{Node: name, At: time.Now().UTC(), Reason: reason}
			}
			bound = resp.Header.Revision + 1
			break
		}
		epoch := nodeKvs[0].CreateRevision
		rm = Removed{Node: name, Epoch: epoch, At: time.Now().UTC(), Reason: reason}
		val, err := json.Marshal(rm)
		if err != nil {
			return nil, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(nkey), "=", epoch)}
		if dead != nil {
			// Still dead as read: no heartbeat, no liveness record since.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nkey), "=", nodeKvs[0].ModRevision),
				clientv3.Compare(clientv3.CreateRevision(akey), "=", 0))
			cmps = append(cmps, dead.guard...)
		}
		txn, err := s.cli.Txn(ctx).
			If(cmps...).
			Then(clientv3.OpDelete(nkey), clientv3.OpDelete(akey), clientv3.OpPut(rkey, string(val))).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("remove node %s: %w", name, err)
		}
		if !txn.Succeeded {
			if dead != nil {
				// Changed since read (or not leader any more): the next
				// scan decides again.
				return nil, fmt.Errorf("remove dead node %s: %w (changed since read)", name, ErrNotDead)
			}
			continue // registered again meanwhile: remove that one
		}
		if len(aliveKvs) > 0 && aliveKvs[0].Lease != 0 {
			// Its keepalive fails now instead of at the next TTL: a live
			// ipamd learns of its removal at once. The lease held only the
			// liveness record, already deleted.
			s.cli.Revoke(ctx, clientv3.LeaseID(aliveKvs[0].Lease))
		}
		bound = txn.Header.Revision + 1
		rm.Revision = txn.Header.Revision
		break
	}
	atts, blocks, found, err := s.sweepNode(ctx, name, bound)
	if err != nil {
		return nil, fmt.Errorf("remove node %s: %w", name, err)
	}
	if !registered && !found {
		if tomb {
			return nil, fmt.Errorf("remove node %s: %w (removed at %s: %s; nothing left to release)",
				name, ErrNotRegistered, rm.At.Format(time.RFC3339), rm.Reason)
		}
		return nil, fmt.Errorf("remove node %s: %w", name, ErrNotRegistered)
	}
	rm.Attachments += atts
	rm.Blocks += blocks
	val, err := json.Marshal(rm)
	if err != nil {
		return nil, err
	}
	if _, err := s.cli.Put(ctx, rkey, string(val)); err != nil {
		return nil, fmt.Errorf("remove node %s: write tombstone: %w", name, err)
	}
	return &rm, nil
}

// SweepNode releases what node holds from before revision bound (its
// handles and addresses, sticky and quarantine records, PD bindings and
// blocks) and returns how many attachments and blocks it released. A node
// that was fenced finishes its removal's sweep this way, bound = its new
// epoch.
func (s *Store) SweepNode(ctx context.Context, name string, bound int64) (attachments, blocks int, err error) {
	attachments, blocks, _, err = s.sweepNode(ctx, name, bound)
	return attachments, blocks, err
}

func (s *Store) sweepNode(ctx context.Context, name string, bound int64) (attachments, blocks int, found bool, err error) {
	var b batch
	b.s = s
	resp, err := s.cli.Get(ctx, handlesPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, false, fmt.Errorf("read handles: %w", err)
	}
	for _, kv := range resp.Kvs {
		var h Handle
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			return 0, 0, false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if h.Node != name || kv.CreateRevision >= bound {
			continue
		}
		idval, err := json.Marshal(h.AttachmentID)
		if err != nil {
			return 0, 0, false, err
		}
		ops := []clientv3.Op{guardedDelete(string(kv.Key), clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision))}
		keys := []string{string(kv.Key)}
		for _, ip := range h.IPs {
			k := AddrKey(ip.Address.Addr())
			ops = append(ops, guardedDelete(k, clientv3.Compare(clientv3.Value(k), "=", string(idval)),
				clientv3.Compare(clientv3.CreateRevision(k), "<", bound)))
			keys = append(keys, k)
		}
		if err := b.add(ctx, keys, ops...); err != nil {
			return 0, 0, false, err
		}
		attachments++
	}
	resp, err = s.cli.Get(ctx, stickyPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, false, fmt.Errorf("read sticky records: %w", err)
	}
	for _, kv := range resp.Kvs {
		var st Sticky
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return 0, 0, false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if st.Node != name || kv.CreateRevision >= bound {
			continue
		}
		holder, err := json.Marshal(st.holder())
		if err != nil {
			return 0, 0, false, err
		}
		ops := []clientv3.Op{guardedDelete(string(kv.Key), clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))}
		keys := []string{string(kv.Key)}
		for _, ip := range st.IPs {
			k := AddrKey(ip.Address.Addr())
			ops = append(ops, guardedDelete(k, clientv3.Compare(clientv3.Value(k), "=", string(holder)),
				clientv3.Compare(clientv3.CreateRevision(k), "<", bound)))
			keys = append(keys, k)
		}
		if err := b.add(ctx, keys, ops...); err != nil {
			return 0, 0, false, err
		}
		found = true
	}
	resp, err = s.cli.Get(ctx, quarantinePrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, false, fmt.Errorf("read quarantine records: %w", err)
	}
	for _, kv := range resp.Kvs {
		var q Quarantined
		if err := json.Unmarshal(kv.Value, &q); err != nil {
			return 0, 0, false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if q.Node != name || kv.CreateRevision >= bound {
			continue
		}
		holder, err := json.Marshal(q.holder())
		if err != nil {
			return 0, 0, false, err
		}
		k := AddrKey(q.IP.Address.Addr())
		if err := b.add(ctx, []string{string(kv.Key), k},
			guardedDelete(string(kv.Key), clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)),
			guardedDelete(k, clientv3.Compare(clientv3.Value(k), "=", string(holder)), clientv3.Compare(clientv3.CreateRevision(k), "<", bound))); err != nil {
			return 0, 0, false, err
		}
		found = true
	}
	resp, err = s.cli.Get(ctx, pdPrefix+name+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, 0, false, fmt.Errorf("read PD bindings: %w", err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if kv.ModRevision >= bound {
			continue
		}
		if err := b.add(ctx, []string{k}, guardedDelete(k, clientv3.Compare(clientv3.ModRevision(k), "<", bound))); err != nil {
			return 0, 0, false, err
		}
		found = true
	}
	if err := b.flush(ctx); err != nil {
		return 0, 0, false, err
	}
	// Blocks last: while a block exists nobody else claims it, so its
	// addresses (every holder's, also any without a handle) go with it.
	resp, err = s.cli.Get(ctx, blocksPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, false, fmt.Errorf("read blocks: %w", err)
	}
	for _, kv := range resp.Kvs {
		var blk Block
		if err := json.Unmarshal(kv.Value, &blk); err != nil {
			return 0, 0, false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if blk.Node != name || kv.CreateRevision >= bound {
			continue
		}
		first, end := AddrKey(blk.CIDR.Masked().Addr()), AddrKey(ipmath.Last(blk.CIDR))+"\x00"
		op := clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision)},
			[]clientv3.Op{clientv3.OpDelete(first, clientv3.WithRange(end)), clientv3.OpDelete(string(kv.Key))}, nil)
		if err := b.add(ctx, []string{string(kv.Key), first}, op); err != nil {
			return 0, 0, false, err
		}
		blocks++
	}
	if err := b.flush(ctx); err != nil {
		return 0, 0, false, err
	}
	return attachments, blocks, found || attachments > 0 || blocks > 0, nil
}

// guardedDelete deletes key if every compare holds, as a nested
// transaction: a batch goes through whatever one of its keys became.
func guardedDelete(key string, cmps ...clientv3.Cmp) clientv3.Op {
	return clientv3.OpTxn(cmps, []clientv3.Op{clientv3.OpDelete(key)}, nil)
}

// batch gathers the sweep's operations into transactions of at most
// maxTxnOps operations, never two on one key (etcd refuses that).
type batch struct {
	s    *Store
	ops  []clientv3.Op
	keys map[string]bool
}

func (b *batch) add(ctx context.Context, keys []string, ops ...clientv3.Op) error {
	clash := false
	for _, k := range keys {
		clash = clash || b.keys[k]
	}
	if clash || len(b.ops)+len(ops) > maxTxnOps {
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	if b.keys == nil {
		b.keys = map[string]bool{}
	}
	for _, k := range keys {
		b.keys[k] = true
	}
	b.ops = append(b.ops, ops...)
	return nil
}

func (b *batch) flush(ctx context.Context) error {
	if len(b.ops) == 0 {
		return nil
	}
	if _, err := b.s.cli.Txn(ctx).Then(b.ops...).Commit(); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	b.ops, b.keys = b.ops[:0], map[string]bool{}
	return nil
}

// HandlesAt returns the handles of node as they were at revision rev (the
// current ones if rev is 0): a fenced node reads what it had just before
// its removal, which the removal's sweep may have deleted since.
func (s *Store) HandlesAt(ctx context.Context, node string, rev int64) ([]Handle, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, handlesPrefix, opts...)
	if err != nil {
		return nil, fmt.Errorf("read handles of node %s at revision %d: %w", node, rev, err)
	}
	var out []Handle
	for _, kv := range resp.Kvs {
		var h Handle
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if h.Node == node {
			out = append(out, h)
		}
	}
	return out, nil
}

// KeepAlive keeps a registration's lease alive until ctx ends; the
// channel closes when the lease is lost (expired or revoked).
func (s *Store) KeepAlive(ctx context.Context, lease clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	return s.cli.KeepAlive(ctx, lease)
}

// Revoke ends a lease (and the liveness record under it).
func (s *Store) Revoke(ctx context.Context, lease clientv3.LeaseID) error {
	_, err := s.cli.Revoke(ctx, lease)
	return err
}

// WatchNode watches a node's registration from revision rev on.
func (s *Store) WatchNode(ctx context.Context, name string, rev int64) clientv3.WatchChan {
	return s.cli.Watch(clientv3.WithRequireLeader(ctx), NodeKey(name), clientv3.WithRev(rev))
}

// Package nodes keeps this node's life in the cluster: its registration
// in etcd (store.RegisterNode), the liveness record under an etcd lease
// kept alive while ipamd runs, the heartbeat (LastSeen), registering
// again by itself when the lease is lost, and fencing when the
// registration was removed behind its back: the allocator drops its
// blocks, remembers the attachments that lost their addresses, and the
// node goes on under a new epoch. It also runs the optional release of
// dead nodes (--dead-node-grace), one ipamd of the cluster at a time.
package nodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// Defaults of Config.
const (
	DefaultTTL        = 30 * time.Second
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 10 * time.Second
)

// Config is the node a Keeper keeps registered.
type Config struct {
	// Store is the unfenced store (registration writes are guarded by
	// their own compares).
	Store *store.Store
	Node  string
	// MachineID tells a restart of this machine from another machine
	// using the same name (default store.MachineID()).
	MachineID string
	// TTL of the lease the liveness record lives under (default 30 s): a
	// node whose ipamd stops without revoking it shows dead after TTL.
	TTL time.Duration
	// Heartbeat is how often LastSeen is written (default TTL).
	Heartbeat time.Duration
	// MinBackoff and MaxBackoff bound the waits between failed attempts
	// to register again (default 1 s, doubling to 10 s).
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger
}

// Hooks connect the Keeper to what the node's epoch binds.
type Hooks struct {
	// Fenced is the store the node's taking writes go through
	// (Store.Fenced(node, Keeper.Epoch())): the Keeper moves it to each
	// new epoch.
	Fenced *store.Store
	// OnLoss handles a removal of the registration that this ipamd
	// survived: called once the node is registered again under epoch,
	// before Fenced moves to it (allocator.Fence and what the node set up
	// for the lost blocks). Its error is logged.
	OnLoss func(ctx context.Context, loss allocator.Loss, epoch int64) error
	// Refused signals writes refused with store.ErrFenced
	// (allocator.FencedSignal): the Keeper checks the registration at once.
	Refused <-chan struct{}
	// Unregistered (if set) is told why the node lost its registration
	// when it starts registering again, and "" once it is registered
	// (allocator.SetUnregistered: STATUS says 50 meanwhile).
	Unregistered func(why string)
}

// State is the Keeper's view of the node, for `ipamd nodes` and metrics.
type State struct {
	Node string
	// Registered is false while the node registers again.
	Registered bool
	Epoch      int64
	// Since is when the current registration (or adoption) was made.
	Since time.Time
	// LastHeartbeat is when LastSeen was last written.
	LastHeartbeat time.Time
	// Reregistrations counts registrations after the first; Fenced the
	// removals survived (each also a re-registration).
	Reregistrations, Fenced uint64
	// LastLoss says why the node last registered again ("" if never).
	LastLoss string
}

// Keeper keeps one node registered and alive.
type Keeper struct {
	cfg  Config
	log  *slog.Logger
	done chan struct{}

	mu    sync.Mutex
	reg   store.Registration
	state State
	// deadRemoved counts the dead nodes removed by this ipamd's release.
	deadRemoved uint64
}

// Register registers the node (or adopts its registration: a restart,
// same epoch) and returns its Keeper; Run keeps it. A node name taken by
// a live ipamd of another machine is a *store.InUseError.
func Register(ctx context.Context, cfg Config) (*Keeper, error) {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = cfg.TTL
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.MachineID == "" {
		cfg.MachineID = store.MachineID()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	k := &Keeper{cfg: cfg, log: cfg.Log.With("component", "node"), done: make(chan struct{})}
	reg, err := cfg.Store.RegisterNode(ctx, store.Node{Name: cfg.Node, MachineID: cfg.MachineID}, cfg.TTL)
	if err != nil {
		return nil, err
	}
	if !reg.Adopted {
		if tomb, err := cfg.Store.Tombstone(ctx, cfg.Node); err == nil && tomb != nil {
			// Removed while this ipamd was stopped: what its containers
			// had was released; they get no addresses back.
			k.log.Warn("node was removed while ipamd was stopped; registered anew", "node", cfg.Node,
				"removedAt", tomb.At.Format(time.RFC3339), "reason", tomb.Reason, "attachmentsReleased", tomb.Attachments, "epoch", reg.Node.Epoch)
		}
	}
	k.log.Info("node registered", "node", cfg.Node, "epoch", reg.Node.Epoch, "adopted", reg.Adopted, "ttl", cfg.TTL)
	k.set(*reg)
	return k, nil
}

func (k *Keeper) set(reg store.Registration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reg = reg
	k.state.Node, k.state.Registered, k.state.Epoch = reg.Node.Name, true, reg.Node.Epoch
	k.state.Since, k.state.LastHeartbeat = time.Now(), time.Now()
}

func (k *Keeper) current() store.Registration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reg
}

// Epoch is the node's current epoch.
func (k *Keeper) Epoch() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reg.Node.Epoch
}

// State is the node's registration as this ipamd keeps it.
func (k *Keeper) State() State {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.state
}

// Metrics is the state for the metrics (ipammetrics.Metrics.SetNode);
// orphans (allocator.Orphans, may be nil) adds the orphan count.
func (k *Keeper) Metrics(orphans func() int) func() ipammetrics.NodeState {
	return func() ipammetrics.NodeState {
		k.mu.Lock()
		st := ipammetrics.NodeState{
			Node: k.state.Node, Registered: k.state.Registered, Epoch: k.state.Epoch,
			Reregistrations: k.state.Reregistrations, Fenced: k.state.Fenced, DeadNodesRemoved: k.deadRemoved,
		}
		k.mu.Unlock()
		if orphans != nil {
			st.Orphans = orphans()
		}
		return st
	}
}

// lostReg says how the registration was lost.
type lostReg struct {
	// removed: the registration was deleted or replaced (else only the
	// lease was lost).
	removed bool
	// rev is the revision of the deletion, when seen (0: unknown).
	rev int64
	why string
}

// Run keeps the node registered until ctx ends: keeps the lease alive,
// writes the heartbeat, watches the registration, and registers again
// when the lease or the registration is lost. Stop ends the registration's
// liveness afterwards.
func (k *Keeper) Run(ctx context.Context, h Hooks) {
	defer close(k.done)
	for {
		lost, ok := k.hold(ctx, h)
		if !ok {
			return
		}
		if !k.registerAgain(ctx, h, lost) {
			return
		}
	}
}

// Stop waits for Run to end (its ctx must be done) and revokes the lease:
// the node shows dead at once instead of after the TTL.
func (k *Keeper) Stop(ctx context.Context) error {
	select {
	case <-k.done:
	case <-ctx.Done():
		return fmt.Errorf("stop node keeper: %w", ctx.Err())
	}
	reg := k.current()
	if err := k.cfg.Store.Revoke(ctx, reg.Lease); err != nil {
		return fmt.Errorf("revoke the lease of node %s: %w", k.cfg.Node, err)
	}
	k.mu.Lock()
	k.state.Registered = false
	k.mu.Unlock()
	k.log.Info("node liveness ended", "node", k.cfg.Node, "epoch", reg.Node.Epoch)
	return nil
}

// hold keeps the current registration until it is lost (ok) or ctx ends.
func (k *Keeper) hold(ctx context.Context, h Hooks) (lostReg, bool) {
	reg := k.current()
	epoch := reg.Node.Epoch
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := k.cfg.Store.KeepAlive(hctx, reg.Lease)
	if err != nil {
		if ctx.Err() != nil {
			return lostReg{}, false
		}
		return lostReg{why: fmt.Sprintf("keep the lease alive: %v", err)}, true
	}
	watchRev := reg.Revision + 1
	wch := k.cfg.Store.WatchNode(hctx, k.cfg.Node, watchRev)
	hb := time.NewTicker(k.cfg.Heartbeat)
	defer hb.Stop()
	// recheck reads the registration when the watch cannot tell (it
	// ended, a revision was compacted, a write was refused).
	recheck := func() (lostReg, bool) {
		cctx, ccancel := context.WithTimeout(hctx, k.callTimeout())
		defer ccancel()
		n, rev, err := k.cfg.Store.NodeRegistrationAt(cctx, k.cfg.Node)
		if err != nil {
			k.log.Warn("read the node's registration", "node", k.cfg.Node, "error", err)
			return lostReg{}, false
		}
		if n == nil {
			return lostReg{removed: true, why: "registration removed"}, true
		}
		if n.Epoch != epoch {
			return lostReg{removed: true, why: fmt.Sprintf("registration replaced (epoch %d)", n.Epoch)}, true
		}
		watchRev = rev + 1
		return lostReg{}, false
	}
	for {
		select {
		case <-ctx.Done():
			return lostReg{}, false
		case _, open := <-ka:
			if !open {
				if ctx.Err() != nil {
					return lostReg{}, false
				}
				return lostReg{why: "lease lost (etcd unreachable for longer than the TTL, or revoked)"}, true
			}
		case wr, open := <-wch:
			if !open || wr.Err() != nil || wr.Canceled {
				if ctx.Err() != nil {
					return lostReg{}, false
				}
				if l, lost := recheck(); lost {
					return l, true
				}
				select {
				case <-ctx.Done():
					return lostReg{}, false
				case <-time.After(k.cfg.MinBackoff):
				}
				wch = k.cfg.Store.WatchNode(hctx, k.cfg.Node, watchRev)
				continue
			}
			for _, ev := range wr.Events {
				switch {
				case ev.Type == clientv3.EventTypeDelete:
					return lostReg{removed: true, rev: ev.Kv.ModRevision, why: "registration removed"}, true
				case ev.Kv.CreateRevision != epoch:
					return lostReg{removed: true, why: fmt.Sprintf("registration replaced (epoch %d)", ev.Kv.CreateRevision)}, true
				}
				watchRev = ev.Kv.ModRevision + 1
			}
		case <-hb.C:
			// Bounded: etcd calls wait while etcd is unreachable, and the
			// loop must still see the lease's end.
			cctx, ccancel := context.WithTimeout(hctx, k.callTimeout())
			err := k.cfg.Store.Heartbeat(cctx, reg.Node)
			ccancel()
			switch {
			case errors.Is(err, store.ErrFenced):
				if l, lost := recheck(); lost {
					return l, true
				}
			case err != nil:
				k.log.Warn("node heartbeat", "node", k.cfg.Node, "error", err)
			default:
				k.mu.Lock()
				k.state.LastHeartbeat = time.Now()
				k.mu.Unlock()
			}
		case <-h.Refused:
			if l, lost := recheck(); lost {
				return l, true
			}
		}
	}
}

// callTimeout bounds one etcd call of the keeping loop.
func (k *Keeper) callTimeout() time.Duration {
	return max(k.cfg.TTL/2, time.Second)
}

// registerAgain registers the node again after lost, retrying with
// backoff, and fences when the epoch changed. It reports false when ctx
// ended first.
func (k *Keeper) registerAgain(ctx context.Context, h Hooks, lost lostReg) bool {
	old := k.current()
	k.mu.Lock()
	k.state.Registered = false
	k.mu.Unlock()
	k.log.Warn("node registration lost: registering again", "node", k.cfg.Node, "epoch", old.Node.Epoch, "why", lost.why)
	if h.Unregistered != nil {
		h.Unregistered(lost.why)
	}
	// registered tells the hook, before the state says so.
	registered := func() {
		if h.Unregistered != nil {
			h.Unregistered("")
		}
	}
	// The old lease may still hold a liveness record (a registration
	// deleted by hand): end it, or it would outlive this incarnation.
	rctx, cancel := context.WithTimeout(ctx, k.cfg.MinBackoff+5*time.Second)
	_ = k.cfg.Store.Revoke(rctx, old.Lease)
	cancel()
	wait := k.cfg.MinBackoff
	var reg *store.Registration
	for {
		var err error
		actx, acancel := context.WithTimeout(ctx, max(k.cfg.TTL, 5*time.Second))
		reg, err = k.cfg.Store.RegisterNode(actx, store.Node{Name: k.cfg.Node, MachineID: k.cfg.MachineID}, k.cfg.TTL)
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		k.log.Warn("register the node again", "node", k.cfg.Node, "error", err, "retryIn", wait)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, k.cfg.MaxBackoff)
	}
	if reg.Node.Epoch == old.Node.Epoch {
		registered()
		k.set(*reg)
		k.mu.Lock()
		k.state.Reregistrations++
		k.state.LastLoss = lost.why
		k.mu.Unlock()
		k.log.Warn("node registered again: same epoch, blocks and attachments kept", "node", k.cfg.Node, "epoch", reg.Node.Epoch, "why", lost.why)
		return true
	}
	loss := k.loss(ctx, old.Node.Epoch, lost.rev)
	if h.OnLoss != nil {
		if err := h.OnLoss(ctx, loss, reg.Node.Epoch); err != nil {
			k.log.Error("drop what the removed registration held", "node", k.cfg.Node, "error", err)
		}
	}
	if h.Fenced != nil {
		h.Fenced.SetEpoch(reg.Node.Epoch)
	}
	registered()
	k.set(*reg)
	k.mu.Lock()
	k.state.Reregistrations++
	k.state.Fenced++
	k.state.LastLoss = fmt.Sprintf("%s: removed at %s (%s)", lost.why, loss.At.UTC().Format(time.RFC3339), loss.Reason)
	k.mu.Unlock()
	k.log.Error("node was removed while running: registered anew; new ADDs get new blocks", "node", k.cfg.Node,
		"oldEpoch", old.Node.Epoch, "epoch", reg.Node.Epoch, "removedAt", loss.At.Format(time.RFC3339), "reason", loss.Reason,
		"attachmentsLost", len(loss.Handles))
	// Finish the removal's release if it was interrupted: everything of
	// the old epoch goes, nothing of the new one (bound = its epoch).
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if atts, blocks, err := k.cfg.Store.SweepNode(sctx, k.cfg.Node, reg.Node.Epoch); err != nil {
		k.log.Warn("release what the removed registration left", "node", k.cfg.Node, "error", err)
	} else if atts+blocks > 0 {
		k.log.Info("released what the removed registration left", "node", k.cfg.Node, "attachments", atts, "blocks", blocks)
	}
	return true
}

// loss reads what the removal of epoch took: the tombstone's when and why,
// and the node's attachments just before the removal.
func (k *Keeper) loss(ctx context.Context, epoch, rev int64) allocator.Loss {
	l := allocator.Loss{Epoch: epoch}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tomb, err := k.cfg.Store.Tombstone(rctx, k.cfg.Node)
	if err != nil {
		k.log.Warn("read the node's tombstone", "node", k.cfg.Node, "error", err)
	}
	if tomb != nil && tomb.Epoch == epoch {
		l.At, l.Reason = tomb.At, tomb.Reason
		if tomb.Revision > 0 {
			rev = tomb.Revision
		}
	}
	if l.At.IsZero() {
		l.At = time.Now().UTC()
		l.Reason = "registration deleted without a tombstone"
	}
	at := int64(0)
	if rev > 1 {
		at = rev - 1
	}
	hs, err := k.cfg.Store.HandlesAt(rctx, k.cfg.Node, at)
	if err != nil && at > 0 {
		// Compacted: what is left of them (the removal's sweep may have
		// released some already).
		k.log.Warn("read the node's attachments before its removal; using those left", "node", k.cfg.Node, "revision", at, "error", err)
		hs, err = k.cfg.Store.HandlesAt(rctx, k.cfg.Node, 0)
	}
	if err != nil {
		k.log.Error("read the attachments the node lost; they cannot be reported", "node", k.cfg.Node, "error", err)
	}
	l.Handles = hs
	return l
}

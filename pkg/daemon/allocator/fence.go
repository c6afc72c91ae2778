package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// This file: what the node does when it learns that its registration was
// removed behind its back (`ipamd node remove --force`, or a removal while
// this ipamd was cut off from etcd): the blocks it holds are no longer its
// own, so it drops them (their announcements and gateways go), remembers
// the attachments that lost their addresses (orphans: their containers
// still run with those addresses) and, once registered again under a new
// epoch, claims new blocks for new ADDs.

// Loss describes a removal of this node's registration that it survived.
type Loss struct {
	// Epoch is the registration that was removed.
	Epoch int64
	// At and Reason come from the removal's tombstone (zero and "" when
	// there is none).
	At     time.Time
	Reason string
	// Handles are the node's attachments just before the removal.
	Handles []store.Handle
}

// Orphans is what the node lost by a removal and has not yet been told to
// forget: the attachments whose containers still run with addresses that
// are no longer this node's. Reason is "" when there are none.
type Orphans struct {
	Reason  string
	Handles []store.Handle
}

// fenceState is the allocator's memory of its losses. Its own mutex, not
// the node lock: an ADD asks about orphans before it may wait for the node
// lock (bounded by its deadline). Taken after a.mu when both are held.
type fenceState struct {
	mu sync.Mutex
	// unregistered, when not "", says why the node has no registration
	// now (it registers again): STATUS says so.
	unregistered string
	reason       string
	orphans      map[store.AttachmentID]store.Handle
	// addrs are the orphans' addresses: never handed out again by this
	// node (a block claimed again may hold them), so two containers on one
	// bridge never share one.
	addrs map[netip.Addr]store.AttachmentID
}

// FencedSignal signals (coalesced) that a write of this allocator was
// refused with store.ErrFenced: package nodes then checks the
// registration and, if it was removed, calls Fence.
func (a *Allocator) FencedSignal() <-chan struct{} { return a.fencedCh }

// noteFenced signals the keeper when err is a lost fence and restates err
// as KindFenced, which the runtime retries.
func (a *Allocator) noteFenced(err error) error {
	if !a.signalFenced(err) {
		return err
	}
	return &Error{Kind: KindFenced, Msg: fmt.Sprintf("node %s: %v", a.node, err),
		Details: "the node's registration is being renewed; retry", Err: err}
}

// signalFenced signals the keeper if err (possibly joined) holds a lost
// fence, and reports whether it did.
func (a *Allocator) signalFenced(err error) bool {
	if !errors.Is(err, store.ErrFenced) {
		return false
	}
	select {
	case a.fencedCh <- struct{}{}:
	default:
	}
	return true
}

// Fence drops every block of the node from memory (they are no longer
// its own: a removal released them in etcd), records the attachments of
// loss as orphans, and binds the allocator's store to epoch, the node's
// new registration. unconfigure (if not nil) removes what the node set up
// for a block (its gateway address on the bridge); its failures are
// returned but do not keep the block. The BGP announcements follow
// BlocksChanged. Fence waits for ADDs and DELs in flight: they were made
// under the old epoch and fail, and none made after Fence sees an old
// block. It returns the dropped blocks.
func (a *Allocator) Fence(ctx context.Context, loss Loss, epoch int64, unconfigure func(netip.Prefix) error) ([]store.Block, error) {
	a.epochMu.Lock()
	defer a.epochMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	var dropped []store.Block
	var errs []error
	for cidr, b := range a.blocks {
		if unconfigure != nil {
			if err := unconfigure(cidr); err != nil {
				errs = append(errs, fmt.Errorf("drop block %s: %w", cidr, err))
			}
		}
		delete(a.blocks, cidr)
		dropped = append(dropped, b.Block)
	}
	slices.SortFunc(dropped, func(x, y store.Block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
	clear(a.kept)
	a.fence.mu.Lock()
	defer a.fence.mu.Unlock()
	if a.fence.orphans == nil {
		a.fence.orphans = map[store.AttachmentID]store.Handle{}
		a.fence.addrs = map[netip.Addr]store.AttachmentID{}
	}
	for _, h := range loss.Handles {
		if h.Node != a.node {
			continue
		}
		a.fence.orphans[h.AttachmentID] = h
		for _, ip := range h.IPs {
			a.fence.addrs[ip.Address.Addr()] = h.AttachmentID
		}
	}
	a.fence.reason = lossReason(a.node, loss)
	a.store.SetEpoch(epoch)
	a.notify()
	if n := len(a.fence.orphans); n > 0 {
		a.log.Error("node registration removed: blocks dropped; attachments lost their addresses: delete and re-create these pods",
			"node", a.node, "reason", a.fence.reason, "blocks", len(dropped), "orphans", n, "attachments", orphanNames(a.fence.orphans, 20))
	} else {
		a.log.Warn("node registration removed: blocks dropped", "node", a.node, "reason", a.fence.reason, "blocks", len(dropped))
	}
	return dropped, errors.Join(errs...)
}

func lossReason(node string, loss Loss) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node %s was removed", node)
	if !loss.At.IsZero() {
		fmt.Fprintf(&b, " at %s", loss.At.UTC().Format(time.RFC3339))
	}
	if loss.Reason != "" {
		fmt.Fprintf(&b, " (%s)", loss.Reason)
	}
	return b.String()
}

// orphanNames names up to max orphans (the pod when known), sorted.
func orphanNames(orphans map[store.AttachmentID]store.Handle, max int) string {
	names := make([]string, 0, len(orphans))
	for id, h := range orphans {
		n := id.String()
		if h.Pod != "" {
			n = h.Pod + " (" + n + ")"
		}
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) > max {
		names = append(names[:max], fmt.Sprintf("and %d more", len(names)-max))
	}
	return strings.Join(names, ", ")
}

// Orphans lists the attachments that lost their addresses with a removal
// of this node and have not been deleted since (`ipamd nodes`, STATUS).
func (a *Allocator) Orphans() Orphans {
	a.fence.mu.Lock()
	defer a.fence.mu.Unlock()
	if len(a.fence.orphans) == 0 {
		return Orphans{}
	}
	o := Orphans{Reason: a.fence.reason, Handles: make([]store.Handle, 0, len(a.fence.orphans))}
	for _, h := range a.fence.orphans {
		o.Handles = append(o.Handles, h)
	}
	slices.SortFunc(o.Handles, func(x, y store.Handle) int { return strings.Compare(x.AttachmentID.String(), y.AttachmentID.String()) })
	return o
}

// SetUnregistered tells the allocator whether the node is registered:
// why it is not (package nodes, while it registers again), or "" once it
// is. While not registered, STATUS says 50 with why.
func (a *Allocator) SetUnregistered(why string) {
	a.fence.mu.Lock()
	defer a.fence.mu.Unlock()
	a.fence.unregistered = why
}

// orphanStatus is STATUS's verdict while the node is not registered or
// orphans remain (a.mu held).
func (a *Allocator) orphanStatus() error {
	a.fence.mu.Lock()
	defer a.fence.mu.Unlock()
	if a.fence.unregistered != "" {
		return newError(KindUnavailable, "node %s is not registered (%s): registering again", a.node, a.fence.unregistered)
	}
	n := len(a.fence.orphans)
	if n == 0 {
		return nil
	}
	return newError(KindUnavailable, "%s; %d attachment(s) lost their addresses: delete and re-create these pods", a.fence.reason, n).
		withDetails(orphanNames(a.fence.orphans, 10))
}

// dropOrphan forgets an orphan whose DEL came (or whose container was
// added again): its addresses may be handed out again.
func (a *Allocator) dropOrphan(id store.AttachmentID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fence.mu.Lock()
	defer a.fence.mu.Unlock()
	o, ok := a.fence.orphans[id]
	if !ok {
		return
	}
	delete(a.fence.orphans, id)
	for _, ip := range o.IPs {
		delete(a.fence.addrs, ip.Address.Addr())
	}
	a.forget(&o)
	if len(a.fence.orphans) == 0 {
		a.log.Info("no attachment is left without its addresses", "node", a.node, "after", a.fence.reason)
	}
}

// orphanOf returns the orphan id is, if it is one.
func (a *Allocator) orphanOf(id store.AttachmentID) (store.Handle, bool) {
	a.fence.mu.Lock()
	defer a.fence.mu.Unlock()
	o, ok := a.fence.orphans[id]
	return o, ok
}

// sameHandle reports whether h is o as recorded (an orphan's handle that
// the removal's sweep has not deleted yet), not a new attachment.
func sameHandle(h, o *store.Handle) bool {
	return h.Created.Equal(o.Created) && slices.Equal(h.IPs, o.IPs)
}

// newBlock is a freshly claimed block's cache entry (a.mu held): the
// orphans' addresses in it count as used.
func (a *Allocator) newBlock(b store.Block) *block {
	nb := &block{Block: b, used: map[netip.Addr]struct{}{}}
	a.fence.mu.Lock()
	defer a.fence.mu.Unlock()
	for addr := range a.fence.addrs {
		if b.CIDR.Contains(addr) {
			nb.used[addr] = struct{}{}
		}
	}
	return nb
}

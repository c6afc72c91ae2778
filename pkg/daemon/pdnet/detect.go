package pdnet

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
)

// This file: telling, from two successive bindings, that the node's
// attachments must move from one delegated prefix to another
// (docs/design/pd-ha-renumbering.md §3.1), and handing the moves to the
// netns workers.

// Kind is how a renumbering was caused (the kind label of
// pd_renumberings_total).
type Kind string

// Kinds of renumbering.
const (
	// Graceful: a Reply brought a new prefix and gave the old one
	// preferred lifetime 0 (still valid).
	Graceful Kind = "graceful"
	// Rebind: a new prefix became current while the old one, unmentioned
	// (another server answered a Rebind), is still usable: it is treated
	// as deprecated locally.
	Rebind Kind = "rebind"
	// Abrupt: the old prefix left the binding before its valid end (the
	// server said valid 0): its addresses go now.
	Abrupt Kind = "abrupt"
	// Expiry: the old prefix reached its valid end while attachments still
	// used it as their current prefix.
	Expiry Kind = "expiry"
)

// Event is one renumbering to do: this node's attachments in Old move to
// New.
type Event struct {
	Kind     Kind
	Old, New netip.Prefix
}

// Detect classifies the change from prev to next, two bindings of the same
// IA_PD, at now. The target is next's current prefix (allocator.Current:
// newest Reply, then longest preferred lifetime); without one nothing is
// renumbered (as today: attachments are lost when their prefix expires).
// A prefix that was not current in prev was renumbered then (or was never
// used for new addresses) and gives no new event. With an empty prev (a
// restart) every valid non-current prefix gives one, so unfinished work is
// found again (Renumber is idempotent).
func Detect(prev, next dhcp6pd.Binding, now time.Time) []Event {
	cur, ok := allocator.Current(delegated(next), now)
	if !ok {
		return nil
	}
	target := cur.Prefix.Masked()
	prevCur, hadCur := allocator.Current(delegated(prev), prevNow(prev, now))
	// wasCurrent: a prefix whose attachments have not been moved away.
	wasCurrent := func(p netip.Prefix) bool {
		if len(prev.Prefixes) == 0 {
			return true
		}
		return hadCur && prevCur.Prefix.Masked() == p
	}
	var out []Event
	seen := map[netip.Prefix]bool{}
	for _, np := range next.Prefixes {
		p := np.Prefix.Masked()
		seen[p] = true
		if p == target || p.Overlaps(target) || !now.Before(np.ValidUntil()) || !wasCurrent(p) {
			continue
		}
		kind := Graceful
		if now.Before(np.PreferredUntil()) {
			kind = Rebind
		}
		out = append(out, Event{Kind: kind, Old: p, New: target})
	}
	for _, pp := range prev.Prefixes {
		p := pp.Prefix.Masked()
		if seen[p] || p.Overlaps(target) || !wasCurrent(p) {
			continue
		}
		seen[p] = true
		kind := Abrupt
		if !now.Before(pp.ValidUntil()) {
			kind = Expiry
		}
		out = append(out, Event{Kind: kind, Old: p, New: target})
	}
	for _, np := range next.Prefixes {
		// Listed but past its valid end (the client drops it at its next
		// step): as if gone.
		p := np.Prefix.Masked()
		if now.Before(np.ValidUntil()) || p.Overlaps(target) || !wasCurrent(p) || slices.ContainsFunc(out, func(e Event) bool { return e.Old == p }) {
			continue
		}
		if _, inPrev := prefixIn(prev, p); inPrev || len(prev.Prefixes) == 0 {
			out = append(out, Event{Kind: Expiry, Old: p, New: target})
		}
	}
	slices.SortFunc(out, func(x, y Event) int { return x.Old.Addr().Compare(y.Old.Addr()) })
	return out
}

// prevNow is the time prev's current prefix is judged at: when it was
// last updated (its Reply), so a prefix deprecated only since then still
// counts as prev's current one.
func prevNow(prev dhcp6pd.Binding, now time.Time) time.Time {
	var t time.Time
	for _, p := range prev.Prefixes {
		if p.Updated.After(t) {
			t = p.Updated
		}
	}
	if t.IsZero() || t.After(now) {
		return now
	}
	return t
}

func prefixIn(b dhcp6pd.Binding, p netip.Prefix) (dhcp6pd.Prefix, bool) {
	for _, x := range b.Prefixes {
		if x.Prefix.Masked() == p {
			return x, true
		}
	}
	return dhcp6pd.Prefix{}, false
}

// delegated is the binding's prefixes as the allocator sees them.
func delegated(b dhcp6pd.Binding) []allocator.Delegated {
	out := make([]allocator.Delegated, 0, len(b.Prefixes))
	for _, p := range b.Prefixes {
		out = append(out, allocator.Delegated{Prefix: p.Prefix, Preferred: p.PreferredUntil(), Valid: p.ValidUntil(), Updated: p.Updated})
	}
	return out
}

// Renumberer does the netns side of renumbering: ipamd wires
// pkg/daemon/renumber's Workers here through an adapter from
// allocator.Move to renumber.Job (the same fields, plus the attachment ID).
type Renumberer interface {
	Submit(moves ...allocator.Move)
}

// renumberTimeout bounds one Renumber (etcd writes per attachment).
const renumberTimeout = 30 * time.Second

// SetRenumberer turns renumbering on: until it is set, a prefix change
// renumbers nothing and an expired prefix's attachments are lost, as
// before. Setting it also resumes what a previous run left unfinished
// (allocator.PendingRenumbers).
func (d *Delegation) SetRenumberer(r Renumberer) {
	d.mu.Lock()
	d.renumberer = r
	d.mu.Unlock()
	if r == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), renumberTimeout)
		defer cancel()
		moves, err := d.alloc.PendingRenumbers(ctx)
		if err != nil {
			d.log.Error("pd: resume renumbering", "error", err)
		}
		if len(moves) > 0 {
			d.log.Info("pd: resuming renumbering", "attachments", len(moves))
			r.Submit(moves...)
		}
	}()
}

// Renumberings counts the renumberings run, by kind
// (pd_renumberings_total{kind}).
func (d *Delegation) Renumberings() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]uint64, len(d.renumberings))
	for k, n := range d.renumberings {
		out[string(k)] = n
	}
	return out
}

// renumber follows a binding change: each event's attachments are moved
// (allocator.Renumber) and handed to the netns workers. A prefix leaving
// the binding while another is current is renumbered first even without
// an event (a renumbering that failed before is retried), so the drop that
// follows loses no attachment that has a successor.
func (d *Delegation) renumber(prev, next dhcp6pd.Binding, now time.Time) {
	d.mu.Lock()
	r := d.renumberer
	d.mu.Unlock()
	if r == nil {
		return
	}
	events := Detect(prev, next, now)
	gone := map[netip.Prefix]bool{}
	if cur, ok := allocator.Current(delegated(next), now); ok {
		for _, p := range prev.Prefixes {
			old := p.Prefix.Masked()
			x, listed := prefixIn(next, old)
			if listed && now.Before(x.ValidUntil()) || old.Overlaps(cur.Prefix) {
				continue
			}
			gone[old] = true
			if !slices.ContainsFunc(events, func(e Event) bool { return e.Old == old }) {
				events = append(events, Event{Old: old, New: cur.Prefix.Masked()})
			}
		}
	}
	for _, e := range events {
		ctx, cancel := context.WithTimeout(context.Background(), renumberTimeout)
		moves, err := d.alloc.Renumber(ctx, e.Old, e.New)
		cancel()
		if err != nil {
			d.log.Error("pd: renumber (some attachments keep only their old address)", "from", e.Old, "to", e.New, "kind", e.Kind, "error", err)
		}
		if e.Kind != "" && len(prev.Prefixes) > 0 {
			// Not counted: a restart's re-derivation and retries.
			d.mu.Lock()
			if d.renumberings == nil {
				d.renumberings = map[Kind]uint64{}
			}
			d.renumberings[e.Kind]++
			d.mu.Unlock()
		}
		if gone[e.Old] {
			// The old prefix is gone now, not at the valid end recorded
			// when its attachments were renumbered: the workers remove
			// the old addresses at once.
			for i := range moves {
				if moves[i].OldValidUntil.IsZero() || moves[i].OldValidUntil.After(now) {
					moves[i].OldValidUntil = now
				}
			}
		}
		d.log.Info("pd: renumbering", "kind", e.Kind, "from", e.Old, "to", e.New, "attachments", len(moves))
		if len(moves) > 0 {
			r.Submit(moves...)
		}
	}
}

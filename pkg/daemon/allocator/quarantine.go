package allocator

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// This file: addresses that duplicate address detection found in use by a
// host v6cni does not know (a provider network's segment). The ADD that
// found one fails and its rollback releases the attachment; released, the
// address would be the next one handed out often enough (after an ipamd
// restart the sequential cursor starts at the first free address; stable
// and eui64 addressing give a retried attachment the same address), and
// one foreign host would fail ADD after ADD. So the DEL of that rollback
// names the duplicates and they are quarantined: held by a record of their
// own for a while, then freed.

// ReasonDuplicate is the reason of a quarantine record for an address
// another host holds.
const ReasonDuplicate = "duplicate"

// Quarantine is Del for an attachment whose ADD failed because duplicate
// address detection found dups (some of its addresses) in use by another
// host: those addresses stay held, each by a quarantine record, for hold;
// the others are released as Del releases them. Addresses of dups the
// attachment does not hold are ignored (the plugin's word is not trusted
// to reserve other addresses). With hold 0, or nothing to quarantine, it
// is Del.
func (a *Allocator) Quarantine(ctx context.Context, id store.AttachmentID, dups []netip.Addr, hold time.Duration) (*store.Handle, []store.Quarantined, error) {
	a.epochMu.RLock()
	defer a.epochMu.RUnlock()
	h, recs, err := a.quarantine(ctx, id, dups, hold)
	return h, recs, a.noteFenced(err)
}

func (a *Allocator) quarantine(ctx context.Context, id store.AttachmentID, dups []netip.Addr, hold time.Duration) (*store.Handle, []store.Quarantined, error) {
	h, err := a.store.Handle(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	var held []netip.Addr
	if h != nil {
		for _, ip := range h.IPs {
			if slices.Contains(dups, ip.Address.Addr()) {
				held = append(held, ip.Address.Addr())
			}
		}
	}
	if _, orphan := a.orphanOf(id); orphan || h == nil || h.Node != a.node || len(held) == 0 || hold <= 0 {
		// Nothing of this node's to keep: a plain DEL, with its rules.
		h, err := a.del(ctx, id, 0)
		return h, nil, err
	}
	recs, err := a.store.Quarantine(ctx, *h, held, ReasonDuplicate, time.Now().Add(hold))
	if errors.Is(err, store.ErrGone) {
		return nil, nil, nil // a concurrent DEL released it
	}
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	freed := store.Handle{}
	for _, ip := range h.IPs {
		if !slices.Contains(held, ip.Address.Addr()) {
			freed.IPs = append(freed.IPs, ip)
		}
	}
	// The quarantined addresses stay in the cache's used set.
	a.forget(&freed)
	a.mu.Unlock()
	for _, q := range recs {
		a.log.Warn("address quarantined: another host on the link holds it", "addr", q.IP.Address.Addr(),
			"network", q.Network, "attachment", id, "until", q.Expires.Format(time.RFC3339))
	}
	return h, recs, nil
}

// ExpireQuarantine frees this node's quarantined addresses whose time is
// up.
func (a *Allocator) ExpireQuarantine(ctx context.Context) ([]store.Quarantined, error) {
	all, err := a.store.Quarantines(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var expired []store.Quarantined
	var errs []error
	now := time.Now()
	for _, q := range all {
		if q.Node != a.node || now.Before(q.Expires) {
			continue
		}
		if err := a.store.ReleaseQuarantine(ctx, q); errors.Is(err, store.ErrExists) {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		a.forget(&store.Handle{IPs: []store.IP{q.IP}})
		expired = append(expired, q)
	}
	return expired, errors.Join(errs...)
}

// Quarantines lists the quarantined addresses of every node.
func (a *Allocator) Quarantines(ctx context.Context) ([]store.Quarantined, error) {
	return a.store.Quarantines(ctx)
}

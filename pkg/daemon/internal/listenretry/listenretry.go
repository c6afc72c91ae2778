// Package listenretry is the one backoff of ipamd's per-bridge servers
// (pkg/daemon/ra, pkg/daemon/dhcp6server) while their interface, its
// usable link-local address or their socket is missing.
package listenretry

import (
	"context"
	"time"
)

const (
	// Min is the first pause.
	Min = 100 * time.Millisecond
	// Max caps the pause. A bridge appears when its first container is
	// attached, right after IPAM asked ipamd to serve it (and a new
	// bridge's link-local address is tentative for about a second): look
	// again often, briefly. A longer cap would delay the first RA and
	// DHCPv6 answers of that container by up to the cap; the cost of this
	// one is a failed lookup a second per bridge that stays missing.
	Max = time.Second
)

// Backoff is the pause between attempts: Min, doubling up to Max, back to
// Min after Reset. The zero value is ready.
type Backoff struct {
	next time.Duration
}

// Wait pauses for the current delay and doubles the next one (up to Max);
// it returns false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.step())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Reset makes the next Wait pause Min again: call it once the server
// listens, so a later failure retries quickly.
func (b *Backoff) Reset() { b.next = Min }

// step returns the current delay and doubles the next one (up to Max).
func (b *Backoff) step() time.Duration {
	if b.next <= 0 {
		b.next = Min
	}
	d := b.next
	b.next = min(2*b.next, Max)
	return d
}

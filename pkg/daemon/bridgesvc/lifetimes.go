package bridgesvc

import (
	"net/netip"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
)

// LifetimeFunc tells when the preferred and valid lifetimes of the
// delegated prefix holding block end (a zero time: never); ok is false for
// a block of no delegated prefix (a pool block: advertised with the
// defaults). A preferredUntil not after now marks the block deprecated:
// the old block of a renumbering. It is called with the Services' lock
// held, so it must not call back into them.
type LifetimeFunc func(block netip.Prefix) (preferredUntil, validUntil time.Time, ok bool)

// lifetimeCheck is how often the lifetimes of the delegated blocks served
// are compared with what the servers were given: a Reply that extended
// them, or a block whose preferred lifetime ended, reaches the RA within
// it.
const lifetimeCheck = time.Second

// SetLifetimes gives the Services the lifetimes of delegated blocks
// (ipamd sets it when it runs a DHCPv6-PD client): their RAs then carry
// min(default, time left), the old block of a renumbering preferred 0
// with its remaining valid lifetime, its gateway address on the bridge
// goes preferred 0 too, and DHCPv6 hands out the old address deprecated
// beside the new one. From then on the lifetimes are checked every second
// and the servers updated when they change. A membership change (the
// second address an allocator renumbering gives an attachment, a block
// dropped at its valid end) is learnt, as any, at Attached, Detached and
// Sync: whoever renumbers calls Sync after it.
func (s *Services) SetLifetimes(f LifetimeFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetimes = f
	for _, b := range s.bridges {
		s.configure(b)
	}
	if f != nil && !s.watching {
		s.watching = true
		go s.watchLifetimes()
	}
}

// watchLifetimes reconfigures a bridge whose delegated blocks' lifetimes
// (or deprecation) changed since its last configure, until root ends.
func (s *Services) watchLifetimes() {
	t := time.NewTicker(lifetimeCheck)
	defer t.Stop()
	for {
		select {
		case <-s.root.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		now := time.Now()
		for _, b := range s.bridges {
			for blk, was := range b.served {
				if s.served(blk, now) != was {
					s.configure(b)
					break
				}
			}
		}
		s.mu.Unlock()
	}
}

// PDLifetimes is the LifetimeFunc of the node's delegated prefixes as the
// allocator sees them (its PDSource: the DHCPv6-PD client): a block's
// lifetimes are those of the delegated prefix that contains it. A prefix
// that is no longer the current one (another server's Rebind brought a
// new prefix and left the old one unmentioned) is deprecated at once,
// whatever preferred lifetime it still has: its addresses are being
// renumbered away, so new connections must not pick them. Its preferred
// end is the arrival of the current prefix, a fixed time, so the
// once-a-second lifetime watcher sees no change on every tick.
func PDLifetimes(src allocator.PDSource) LifetimeFunc {
	return func(block netip.Prefix) (time.Time, time.Time, bool) {
		held := src.Delegated()
		cur, haveCur := allocator.Current(held, time.Now())
		for _, d := range held {
			if d.Prefix.Bits() <= block.Bits() && d.Prefix.Contains(block.Addr()) {
				preferred := d.Preferred
				if haveCur && cur.Prefix != d.Prefix && !cur.Updated.IsZero() && (preferred.IsZero() || preferred.After(cur.Updated)) {
					preferred = cur.Updated
				}
				return preferred, d.Valid, true
			}
		}
		return time.Time{}, time.Time{}, false
	}
}

// blockLifetime is a delegated block's lifetimes (zero: infinite), in
// wall-clock time only (comparable with ==).
type blockLifetime struct {
	preferredUntil, validUntil time.Time
}

// servedBlock is what a bridge's servers were given for a block.
type servedBlock struct {
	lt                           blockLifetime
	delegated, deprecated, ended bool
}

// served (s.mu held) is block's state at now.
func (s *Services) served(block netip.Prefix, now time.Time) servedBlock {
	lt, ok := s.lifetimeOf(block, now)
	if !ok {
		return servedBlock{}
	}
	return servedBlock{lt: lt, delegated: true, deprecated: lt.deprecated(now), ended: lt.expired(now)}
}

// lifetimeOf (s.mu held) asks the LifetimeFunc about block.
func (s *Services) lifetimeOf(block netip.Prefix, now time.Time) (blockLifetime, bool) {
	if s.lifetimes == nil {
		return blockLifetime{}, false
	}
	p, v, ok := s.lifetimes(block)
	return blockLifetime{preferredUntil: p.Round(0).UTC(), validUntil: v.Round(0).UTC()}, ok
}

// deprecated: less than a second of preferred lifetime left (what goes on
// the wire in whole seconds is 0).
func (l blockLifetime) deprecated(now time.Time) bool {
	return !l.preferredUntil.IsZero() && l.preferredUntil.Sub(now) < time.Second
}

func (l blockLifetime) expired(now time.Time) bool {
	return !l.validUntil.IsZero() && l.validUntil.Sub(now) < time.Second
}

// left is what to hand out at now: min(default, time left) of each
// lifetime, preferred 0 (deprecated) past its end.
func (l blockLifetime) left(now time.Time, defPreferred, defValid time.Duration) (preferred, valid time.Duration, deprecated bool) {
	preferred, valid = defPreferred, defValid
	if !l.validUntil.IsZero() {
		valid = min(valid, l.validUntil.Sub(now))
	}
	if !l.preferredUntil.IsZero() {
		preferred = min(preferred, l.preferredUntil.Sub(now))
	}
	preferred = min(preferred, valid)
	if l.deprecated(now) || preferred < time.Second {
		return 0, valid, true
	}
	return preferred, valid, false
}

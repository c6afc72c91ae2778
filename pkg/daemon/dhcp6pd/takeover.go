package dhcp6pd

import (
	"errors"
	"time"
)

// ErrNotOwner is wrapped by a Persister.Save error when this client no
// longer owns the binding (another node leads the segment: its fence, not
// this client's, guards the record). Run then returns it at once and sends
// nothing more: no retransmission, no Release. A stale owner must neither
// overwrite the binding nor talk to the server in its name.
var ErrNotOwner = errors.New("dhcp6pd: this client no longer owns the binding")

// Take-over transmission parameters (Config.TakeOver): the Confirm timers
// of RFC 8415 §7.6 (CNF_TIMEOUT, CNF_MAX_RT, CNF_MAX_RD), which RFC 8415
// §18.2.5 prescribes for the Rebind of a client that "may have moved". A
// binding that changed hands is such a case; with REN_TIMEOUT (10 s) one
// lost Renew would cost 10 s of a take-over budget of 5 s.
const (
	takeoverTimeout = 1 * time.Second
	takeoverMaxRT   = 4 * time.Second
	takeoverMaxRD   = 10 * time.Second
)

// fast reports whether a Renew or Rebind begun at now uses the take-over
// timers: the client took the binding over less than takeoverMaxRD ago and
// no Reply has refreshed it since.
func (m *machine) fast(now time.Time) bool {
	return !m.fastUntil.IsZero() && now.Before(m.fastUntil)
}

// fastEnded reports whether the take-over window closed at or before now
// without a Reply: the exchange in progress then falls back to the normal
// REN/REB schedule.
func (m *machine) fastEnded(now time.Time) bool {
	return !m.fastUntil.IsZero() && !now.Before(m.fastUntil)
}

// exchangeTimers returns IRT, MRT and the end (MRD) of a Renew or Rebind
// begun at now whose normal end is end. A window that has closed is
// forgotten, so that it never ends a later exchange.
func (m *machine) exchangeTimers(now time.Time, irt, mrt time.Duration, end time.Time) (time.Duration, time.Duration, time.Time) {
	if !m.fast(now) {
		m.fastUntil = time.Time{}
		return irt, mrt, end
	}
	if end.IsZero() || m.fastUntil.Before(end) {
		end = m.fastUntil
	}
	return takeoverTimeout, takeoverMaxRT, end
}

// holding reports whether a take-over client holds a valid prefix: it then
// never Solicits (a Solicit may bring another prefix and orphan the held
// one on every node of the segment); it Rebinds instead, after the usual
// back-off. m.b.Prefixes holds only prefixes not yet expired (expire runs
// before every event).
func (m *machine) holding() bool {
	return m.takeOver && len(m.b.Prefixes) > 0
}

package dhcp6pd

import (
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Transmission parameters of RFC 8415 §7.6.
const (
	solMaxDelay = 1 * time.Second
	solTimeout  = 1 * time.Second
	solMaxRT    = 3600 * time.Second
	reqTimeout  = 1 * time.Second
	reqMaxRT    = 30 * time.Second
	reqMaxRC    = 10
	renTimeout  = 10 * time.Second
	renMaxRT    = 600 * time.Second
	rebTimeout  = 10 * time.Second
	rebMaxRT    = 600 * time.Second
	relTimeout  = 1 * time.Second
	relMaxRC    = 4
)

// exchange is one message exchange in progress: the message, its
// transaction ID and the retransmission state of RFC 8415 §15.
type exchange struct {
	typ      dhcpv6.MessageType
	xid      [3]byte
	start    time.Time // first transmission
	count    int       // transmissions so far
	rt       time.Duration
	next     time.Time // next retransmission
	end      time.Time // MRD: the exchange ends here (zero: no limit)
	irt, mrt time.Duration
	mrc      int // 0: no limit
	serverID DUID
	hints    []netip.Prefix
}

// nextRT advances the retransmission timeout (RFC 8415 §15). rnd returns a
// number in [0, 1); RAND is uniform in [-0.1, 0.1], strictly positive for
// the first Solicit.
func (e *exchange) nextRT(rnd func() float64) time.Duration {
	r := rnd()*0.2 - 0.1
	if e.count == 0 {
		if e.typ == dhcpv6.MessageTypeSolicit {
			r = 0.001 + rnd()*0.099
		}
		e.rt = e.irt + time.Duration(r*float64(e.irt))
	} else {
		e.rt = 2*e.rt + time.Duration(r*float64(e.rt))
	}
	if e.mrt > 0 && e.rt > e.mrt {
		e.rt = e.mrt + time.Duration(r*float64(e.mrt))
	}
	return e.rt
}

// effectiveTimers returns T1 and T2 for an IA_PD: the server's values, or
// when it sends 0, 0.5 and 0.8 of the shortest preferred lifetime (RFC 8415
// §18.2.4, §21.21). T1 is at least one second and never after T2.
func effectiveTimers(t1, t2 time.Duration, prefixes []Prefix) (time.Duration, time.Duration) {
	if t1 == 0 || t2 == 0 {
		base := Infinity
		for _, p := range prefixes {
			if p.Preferred > 0 && p.Preferred < base {
				base = p.Preferred
			}
		}
		if base == Infinity { // all deprecated: fall back to the valid lifetimes
			for _, p := range prefixes {
				if p.Valid > 0 && p.Valid < base {
					base = p.Valid
				}
			}
		}
		scale := func(num int64) time.Duration {
			if base == Infinity {
				return Infinity
			}
			return time.Duration(int64(base) / 10 * num)
		}
		if t1 == 0 {
			t1 = scale(5)
		}
		if t2 == 0 {
			t2 = scale(8)
		}
	}
	if t1 < time.Second {
		t1 = time.Second
	}
	if t2 < t1 {
		t2 = t1
	}
	return t1, t2
}

package dhcp6pd

// The client state machine of RFC 8415 for one IA_PD. It does no I/O and
// reads no clock: every event carries its time, packets to send are queued in
// out, and deadline says when it wants the next timer event. Client.Run (the
// driver) feeds it; the unit tests feed it directly.

import (
	"crypto/rand"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

type state int

const (
	stInitDelay  state = iota // random delay before the first Solicit
	stSoliciting              // Solicit sent, collecting Advertises
	stRequesting
	stBound
	stRenewing
	stRebinding
	stReleasing
	stReleased // Release done: the machine does nothing more
)

func (s state) String() string {
	return [...]string{"init", "soliciting", "requesting", "bound", "renewing", "rebinding", "releasing", "released"}[s]
}

type advert struct {
	msg  *inMsg
	from netip.Addr
}

type machine struct {
	iface    string
	clientID DUID
	iaid     uint32
	hintLen  int
	rnd      func() float64 // [0, 1)
	log      *slog.Logger

	st           state
	b            Binding
	ex           *exchange
	startAt      time.Time // stInitDelay: when to Solicit
	advs         []advert  // stSoliciting: Advertises so far
	collectUntil time.Time // stSoliciting: end of the first RT
	solMaxRT     time.Duration
	backoff      time.Duration // after a Reply with no prefix
	lastUsable   []netip.Prefix

	// takeOver is Config.TakeOver: take-over timers for the first
	// Renew/Rebind of a restored binding, and no Solicit while a prefix is
	// held (takeover.go).
	takeOver bool
	// fastUntil ends the take-over timers (zero: not in use).
	fastUntil time.Time

	// Outputs, taken by the driver after each event.
	out     [][]byte
	changed bool
	stats   Stats
}

func newMachine(iface string, clientID DUID, iaid uint32, hintLen int, rnd func() float64, log *slog.Logger) *machine {
	return &machine{
		iface: iface, clientID: clientID, iaid: iaid, hintLen: hintLen, rnd: rnd, log: log,
		solMaxRT: solMaxRT,
		stats:    newStats(),
	}
}

// start begins at now, from a saved binding if it is ours and still valid:
// then the client Renews it at once (Rebinds after T2) instead of Soliciting.
// A take-over client does so with the take-over timers for takeoverMaxRD.
func (m *machine) start(now time.Time, saved Binding) {
	m.b = Binding{Interface: m.iface, ClientDUID: m.clientID, IAID: m.iaid}
	if saved.ClientDUID.Equal(m.clientID) && saved.IAID == m.iaid && len(saved.Prefixes) > 0 {
		b := saved.Clone()
		b.Interface = m.iface
		b.Prefixes = slices.DeleteFunc(b.Prefixes, func(p Prefix) bool { return !now.Before(p.ValidUntil()) })
		if len(b.Prefixes) > 0 {
			m.b = b
			m.changed = true
			m.log.Info("restored PD binding", "prefixes", prefixList(b.Prefixes), "server", b.ServerDUID, "takeOver", m.takeOver)
			if m.takeOver {
				m.fastUntil = now.Add(takeoverMaxRD)
			}
			if len(b.ServerDUID) > 0 && now.Before(b.RebindAt()) {
				m.beginRenew(now)
			} else {
				m.beginRebind(now)
			}
			m.noteUsable(now)
			return
		}
	}
	m.st = stInitDelay
	m.startAt = now.Add(time.Duration(m.rnd() * float64(solMaxDelay)))
}

// deadline is when the machine wants the next timer event.
func (m *machine) deadline() time.Time {
	t := farFuture
	consider := func(u time.Time) {
		if !u.IsZero() && u.Before(t) {
			t = u
		}
	}
	switch m.st {
	case stReleased:
		return farFuture
	case stInitDelay:
		consider(m.startAt)
	case stBound:
		consider(m.b.RenewAt())
	case stRenewing:
		consider(m.b.RebindAt())
	}
	if m.ex != nil {
		consider(m.ex.next)
		consider(m.ex.end)
	}
	if m.st == stSoliciting && len(m.advs) > 0 {
		consider(m.collectUntil)
	}
	for _, p := range m.b.Prefixes {
		consider(p.ValidUntil())
		if pu := p.PreferredUntil(); pu.After(m.b.ReplyTime) && slices.Contains(m.lastUsable, p.Prefix) {
			consider(pu)
		}
	}
	return t
}

// timer handles the passing of time up to now.
func (m *machine) timer(now time.Time) {
	m.expire(now)
	switch m.st {
	case stInitDelay:
		if !now.Before(m.startAt) {
			if m.holding() {
				m.beginRebind(now)
			} else {
				m.beginSolicit(now)
			}
		}
	case stSoliciting:
		if len(m.advs) > 0 && !now.Before(m.collectUntil) {
			m.chooseAdvertise(now)
		} else if !now.Before(m.ex.next) {
			m.transmit(now)
		}
	case stRequesting:
		if !now.Before(m.ex.next) {
			if m.ex.count >= m.ex.mrc {
				m.count(m.ex.typ, "timeout")
				m.log.Warn("no Reply to Request; soliciting again")
				m.solicitAgain(now)
			} else {
				m.transmit(now)
			}
		}
	case stBound:
		if !now.Before(m.b.RebindAt()) {
			m.beginRebind(now)
		} else if !now.Before(m.b.RenewAt()) {
			m.beginRenew(now)
		}
	case stRenewing:
		if !now.Before(m.b.RebindAt()) {
			m.count(dhcpv6.MessageTypeRenew, "timeout")
			m.log.Warn("no Reply to Renew before T2; rebinding", "server", m.b.ServerDUID)
			m.beginRebind(now)
		} else if m.fastEnded(now) {
			m.count(dhcpv6.MessageTypeRenew, "timeout")
			m.log.Warn("no Reply to the take-over Renew; renewing on the normal schedule", "server", m.b.ServerDUID)
			m.beginRenew(now)
		} else if !now.Before(m.ex.next) {
			m.transmit(now)
		}
	case stRebinding:
		if m.fastEnded(now) {
			m.count(dhcpv6.MessageTypeRebind, "timeout")
			m.log.Warn("no Reply to the take-over Rebind; rebinding on the normal schedule")
			m.beginRebind(now)
		} else if !now.Before(m.ex.next) {
			m.transmit(now)
		}
	case stReleasing:
		if !now.Before(m.ex.next) {
			if m.ex.count >= m.ex.mrc {
				m.count(m.ex.typ, "timeout")
				m.finishRelease()
			} else {
				m.transmit(now)
			}
		}
	}
	m.noteUsable(now)
}

// expire drops prefixes whose valid lifetime ran out; with none left, the
// client solicits again.
func (m *machine) expire(now time.Time) {
	before := len(m.b.Prefixes)
	m.b.Prefixes = slices.DeleteFunc(m.b.Prefixes, func(p Prefix) bool {
		if now.Before(p.ValidUntil()) {
			return false
		}
		m.log.Warn("delegated prefix expired", "prefix", p.Prefix)
		m.stats.Expired++
		return true
	})
	if len(m.b.Prefixes) == before {
		return
	}
	m.changed = true
	if len(m.b.Prefixes) == 0 {
		switch m.st {
		case stBound, stRenewing, stRebinding:
			if m.st == stRebinding {
				m.count(dhcpv6.MessageTypeRebind, "timeout")
			}
			m.b.ServerDUID, m.b.Server, m.b.T1, m.b.T2 = nil, netip.Addr{}, 0, 0
			m.beginSolicit(now)
		}
	}
}

// noteUsable marks a change when the set of usable (preferred) prefixes
// changed without a Reply: a prefix became deprecated.
func (m *machine) noteUsable(now time.Time) {
	u := m.b.Usable(now)
	if !slices.Equal(u, m.lastUsable) {
		m.changed = true
		m.lastUsable = u
	}
}

// packet handles a datagram from a server.
func (m *machine) packet(now time.Time, data []byte, from netip.Addr) {
	defer m.noteUsable(now)
	m.expire(now)
	msg, err := decodeServerMsg(data)
	if err != nil {
		m.stats.Invalid++
		m.log.Debug("dropped invalid DHCPv6 message", "from", from, "err", err)
		return
	}
	if m.ex == nil || msg.xid != m.ex.xid || !msg.clientID.Equal(m.clientID) {
		m.stats.Invalid++
		m.log.Debug("dropped DHCPv6 message for another exchange", "from", from, "type", msg.typ)
		return
	}
	if msg.solMaxRT > 0 {
		m.solMaxRT = msg.solMaxRT
	}
	switch m.st {
	case stSoliciting:
		switch {
		case msg.typ == dhcpv6.MessageTypeReply && msg.rapidCommit:
			m.reply(now, msg, from)
		case msg.typ == dhcpv6.MessageTypeAdvertise:
			m.advertise(now, msg, from)
		}
	case stRequesting, stRenewing, stRebinding:
		if msg.typ == dhcpv6.MessageTypeReply {
			m.reply(now, msg, from)
		}
	case stReleasing:
		if msg.typ == dhcpv6.MessageTypeReply {
			m.count(m.ex.typ, msg.status.String())
			m.finishRelease()
		}
	}
}

// advertise collects an Advertise (RFC 8415 §18.2.9): one without a prefix
// for our IA_PD is ignored; Preference 255, or any Advertise after the first
// RT, ends the collection.
func (m *machine) advertise(now time.Time, msg *inMsg, from netip.Addr) {
	ia := msg.ia(m.iaid)
	if ia == nil || ia.status != StatusSuccess || !hasValidPrefix(ia.prefixes) {
		result := "NoPrefixAvail"
		if ia != nil && ia.status != StatusSuccess {
			result = ia.status.String()
		}
		m.count(dhcpv6.MessageTypeSolicit, result)
		m.log.Debug("Advertise without a prefix", "server", msg.serverID, "status", result, "message", firstNonEmpty(ia.statusText(), msg.statusMsg))
		return
	}
	m.count(dhcpv6.MessageTypeSolicit, "advertise")
	m.advs = append(m.advs, advert{msg: msg, from: from})
	if msg.preference == 255 || !now.Before(m.collectUntil) {
		m.chooseAdvertise(now)
	}
}

func (ia *inIA) statusText() string {
	if ia == nil {
		return ""
	}
	return ia.statusMsg
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func hasValidPrefix(ps []Prefix) bool {
	for _, p := range ps {
		if p.Valid > 0 {
			return true
		}
	}
	return false
}

// chooseAdvertise requests from the server with the highest preference (the
// first of equals).
func (m *machine) chooseAdvertise(now time.Time) {
	best := m.advs[0]
	for _, a := range m.advs[1:] {
		if a.msg.preference > best.msg.preference {
			best = a
		}
	}
	m.advs = nil
	var hints []netip.Prefix
	for _, p := range best.msg.ia(m.iaid).prefixes {
		if p.Valid > 0 {
			hints = append(hints, p.Prefix)
		}
	}
	m.beginRequest(now, best.msg.serverID, hints)
}

// reply processes a Reply to Solicit (rapid commit), Request, Renew or
// Rebind (RFC 8415 §18.2.10).
func (m *machine) reply(now time.Time, msg *inMsg, from netip.Addr) {
	typ := m.ex.typ
	switch msg.status {
	case StatusUnspecFail, StatusUseMulticast:
		// Keep retransmitting on the usual schedule: that limits the rate.
		m.count(typ, msg.status.String())
		return
	case StatusNotOnLink:
		m.count(typ, msg.status.String())
		if typ == dhcpv6.MessageTypeRequest {
			m.solicitAgain(now)
		}
		return
	}
	ia := msg.ia(m.iaid)
	if ia == nil {
		m.count(typ, "noIA")
		return
	}
	switch ia.status {
	case StatusSuccess:
	case StatusNoBinding:
		m.count(typ, ia.status.String())
		if typ == dhcpv6.MessageTypeRenew || typ == dhcpv6.MessageTypeRebind {
			m.log.Info("server has no binding; requesting it again", "server", msg.serverID)
			m.beginRequest(now, msg.serverID, heldPrefixes(m.b.Prefixes))
		}
		return
	case StatusNoPrefixAvail:
		m.count(typ, ia.status.String())
		if typ == dhcpv6.MessageTypeRequest {
			m.retryLater(now)
		}
		// To a Solicit: as an Advertise without prefix, ignored. To a
		// Renew/Rebind: keep what is held until its valid lifetime.
		return
	default:
		m.count(typ, ia.status.String())
		return
	}
	if len(ia.prefixes) == 0 {
		// Some servers answer a Rebind with an empty IA_PD: nothing learned,
		// keep the held prefixes and keep trying.
		m.count(typ, "empty")
		if typ == dhcpv6.MessageTypeRequest {
			m.retryLater(now)
		}
		return
	}
	if typ == dhcpv6.MessageTypeSolicit && !hasValidPrefix(ia.prefixes) {
		m.count(typ, "empty")
		return
	}
	m.count(typ, "success")
	for _, p := range ia.prefixes {
		i := slices.IndexFunc(m.b.Prefixes, func(h Prefix) bool { return h.Prefix == p.Prefix })
		if p.Valid == 0 {
			if i >= 0 {
				m.b.Prefixes = slices.Delete(m.b.Prefixes, i, i+1)
			}
			continue
		}
		p.Updated = now
		if i >= 0 {
			m.b.Prefixes[i] = p
		} else {
			m.b.Prefixes = append(m.b.Prefixes, p)
		}
	}
	m.b.T1, m.b.T2 = effectiveTimers(ia.t1, ia.t2, ia.prefixes)
	m.b.ServerDUID = slices.Clone(msg.serverID)
	m.b.Server = from
	m.b.ReplyTime = now
	if len(msg.dns) > 0 {
		m.b.DNS = msg.dns
	}
	m.changed = true
	m.ex = nil
	m.fastUntil = time.Time{}
	if len(m.b.Prefixes) == 0 {
		m.retryLater(now)
		return
	}
	m.backoff = 0
	m.st = stBound
	m.log.Info("PD binding updated", "after", typ.String(), "prefixes", prefixList(m.b.Prefixes), "t1", m.b.T1, "t2", m.b.T2, "server", m.b.ServerDUID)
}

// retryLater solicits again after a growing delay, when a server answered
// but gave no prefix.
func (m *machine) retryLater(now time.Time) {
	if m.backoff == 0 {
		m.backoff = solTimeout
	} else {
		m.backoff = min(2*m.backoff, m.solMaxRT)
	}
	m.ex = nil
	m.advs = nil
	m.st = stInitDelay
	m.startAt = now.Add(m.backoff + time.Duration(m.rnd()*0.1*float64(m.backoff)))
	if m.holding() {
		m.log.Info("no prefix delegated; rebinding the held ones later", "in", m.startAt.Sub(now))
		return
	}
	m.log.Info("no prefix delegated; soliciting again later", "in", m.startAt.Sub(now))
}

// solicitAgain starts over where the exchange failed: a Solicit, or for a
// take-over client that still holds a prefix, a Rebind after a back-off.
func (m *machine) solicitAgain(now time.Time) {
	if m.holding() {
		m.retryLater(now)
		return
	}
	m.beginSolicit(now)
}

func heldPrefixes(ps []Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Prefix)
	}
	return out
}

func (m *machine) hints() []netip.Prefix {
	if len(m.b.Prefixes) > 0 {
		return heldPrefixes(m.b.Prefixes)
	}
	return []netip.Prefix{netip.PrefixFrom(netip.IPv6Unspecified(), m.hintLen)}
}

func (m *machine) newExchange(now time.Time, typ dhcpv6.MessageType, irt, mrt time.Duration, mrc int, end time.Time, serverID DUID, hints []netip.Prefix) {
	if typ != dhcpv6.MessageTypeRenew && typ != dhcpv6.MessageTypeRebind {
		m.fastUntil = time.Time{} // the take-over Renew/Rebind is over
	}
	ex := &exchange{typ: typ, start: now, irt: irt, mrt: mrt, mrc: mrc, end: end, serverID: serverID, hints: hints}
	if _, err := rand.Read(ex.xid[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	m.ex = ex
	m.transmit(now)
}

func (m *machine) beginSolicit(now time.Time) {
	m.st = stSoliciting
	m.advs = nil
	m.newExchange(now, dhcpv6.MessageTypeSolicit, solTimeout, m.solMaxRT, 0, time.Time{}, nil, m.hints())
	m.collectUntil = m.ex.next
}

func (m *machine) beginRequest(now time.Time, serverID DUID, hints []netip.Prefix) {
	m.st = stRequesting
	m.newExchange(now, dhcpv6.MessageTypeRequest, reqTimeout, reqMaxRT, reqMaxRC, time.Time{}, serverID, hints)
}

func (m *machine) beginRenew(now time.Time) {
	m.st = stRenewing
	irt, mrt, end := m.exchangeTimers(now, renTimeout, renMaxRT, m.b.RebindAt())
	m.newExchange(now, dhcpv6.MessageTypeRenew, irt, mrt, 0, end, m.b.ServerDUID, m.hints())
}

func (m *machine) beginRebind(now time.Time) {
	m.st = stRebinding
	irt, mrt, end := m.exchangeTimers(now, rebTimeout, rebMaxRT, m.b.Expiry())
	m.newExchange(now, dhcpv6.MessageTypeRebind, irt, mrt, 0, end, nil, m.hints())
}

// release gives the prefixes back (RFC 8415 §18.2.7). They are unusable
// from now on; the machine ends in stReleased.
func (m *machine) release(now time.Time) {
	defer m.noteUsable(now)
	held := heldPrefixes(m.b.Prefixes)
	server := m.b.ServerDUID
	m.b.Prefixes, m.b.ServerDUID, m.b.Server, m.b.T1, m.b.T2, m.b.ReplyTime = nil, nil, netip.Addr{}, 0, 0, time.Time{}
	m.changed = true
	if len(held) == 0 || len(server) == 0 {
		m.finishRelease()
		return
	}
	m.log.Info("releasing delegated prefixes", "prefixes", held, "server", server)
	m.st = stReleasing
	m.newExchange(now, dhcpv6.MessageTypeRelease, relTimeout, 0, relMaxRC, time.Time{}, server, held)
}

func (m *machine) finishRelease() {
	m.st = stReleased
	m.ex = nil
}

// transmit sends (or resends) the current exchange's message and schedules
// the next retransmission.
func (m *machine) transmit(now time.Time) {
	ex := m.ex
	out := outMsg{
		typ:         ex.typ,
		xid:         ex.xid,
		clientID:    m.clientID,
		serverID:    ex.serverID,
		elapsed:     now.Sub(ex.start),
		iaid:        m.iaid,
		hints:       ex.hints,
		rapidCommit: true,
	}
	m.out = append(m.out, out.encode())
	m.stats.Sent[msgName(ex.typ)]++
	ex.next = now.Add(ex.nextRT(m.rnd))
	ex.count++
}

// takeOutput returns what the last events produced and clears it.
func (m *machine) takeOutput() (out [][]byte, changed bool) {
	out, changed = m.out, m.changed
	m.out, m.changed = nil, false
	return out, changed
}

func (m *machine) count(typ dhcpv6.MessageType, result string) {
	m.stats.Exchanges[Exchange{Message: msgName(typ), Result: result}]++
}

func msgName(t dhcpv6.MessageType) string {
	switch t {
	case dhcpv6.MessageTypeSolicit:
		return "solicit"
	case dhcpv6.MessageTypeRequest:
		return "request"
	case dhcpv6.MessageTypeRenew:
		return "renew"
	case dhcpv6.MessageTypeRebind:
		return "rebind"
	case dhcpv6.MessageTypeRelease:
		return "release"
	}
	return t.String()
}

func prefixList(ps []Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Prefix.String())
	}
	return out
}

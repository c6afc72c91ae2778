package dhcp6pd

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

var (
	testEpoch  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	testServer = netip.MustParseAddr("fe80::1")
)

func newTestMachine(t testing.TB) *machine {
	return newMachine("up0", fixtureClientDUID, 1, 64, func() float64 { return 0.5 }, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// withXID returns a server message rewritten to answer the current exchange.
func withXID(m *machine, b []byte) []byte {
	out := append([]byte(nil), b...)
	copy(out[1:4], m.ex.xid[:])
	return out
}

// sent decodes the messages the machine queued and clears the queue.
func sent(t *testing.T, m *machine) []*dhcpv6.Message {
	t.Helper()
	out, _ := m.takeOutput()
	var msgs []*dhcpv6.Message
	for _, b := range out {
		msg, err := dhcpv6.MessageFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

func wantSent(t *testing.T, m *machine, typ dhcpv6.MessageType) *dhcpv6.Message {
	t.Helper()
	msgs := sent(t, m)
	if len(msgs) != 1 || msgs[0].MessageType != typ {
		var got []string
		for _, x := range msgs {
			got = append(got, x.MessageType.String())
		}
		t.Fatalf("sent %v, want one %s (state %s)", got, typ, m.st)
	}
	return msgs[0]
}

// obtain walks a machine through Solicit/Advertise/Request/Reply with the
// Kea fixtures and returns the time of the Reply.
func obtain(t *testing.T, m *machine) time.Time {
	t.Helper()
	m.start(testEpoch, Binding{})
	if len(sent(t, m)) != 0 {
		t.Fatal("sent before the initial delay")
	}
	now := m.deadline()
	if d := now.Sub(testEpoch); d < 0 || d > solMaxDelay {
		t.Fatalf("initial delay %v", d)
	}
	m.timer(now)
	sol := wantSent(t, m, dhcpv6.MessageTypeSolicit)
	if sol.GetOneOption(dhcpv6.OptionServerID) != nil || sol.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
		t.Fatal("Solicit with Server ID or without Rapid Commit")
	}
	m.packet(now.Add(time.Millisecond), withXID(m, readFixture(t, "kea/full/02-recv-advertise.bin")), testServer)
	if m.st != stSoliciting || len(sent(t, m)) != 0 {
		t.Fatal("Advertise of preference 0 ended the collection early")
	}
	now = m.deadline()
	if d := now.Sub(testEpoch); d < time.Second {
		t.Fatalf("collected Advertises only until %v", d)
	}
	m.timer(now)
	req := wantSent(t, m, dhcpv6.MessageTypeRequest)
	if sid := req.Options.ServerID(); sid == nil || !DUID(sid.ToBytes()).Equal(fixtureServerDUID) {
		t.Fatalf("Request server ID %v", sid)
	}
	if ps := req.Options.OneIAPD().Options.Prefixes(); len(ps) != 1 || ps[0].Prefix.String() != "2001:db8:100::/64" {
		t.Fatalf("Request hints %v", ps)
	}
	now = now.Add(time.Millisecond)
	m.packet(now, withXID(m, readFixture(t, "kea/full/04-recv-reply.bin")), testServer)
	if _, changed := m.takeOutput(); !changed || m.st != stBound {
		t.Fatalf("after Reply: changed %v state %s", changed, m.st)
	}
	return now
}

func TestMachineFullExchangeRenewRebindExpire(t *testing.T) {
	m := newTestMachine(t)
	t0 := obtain(t, m)
	b := m.b
	if len(b.Prefixes) != 1 || b.Prefixes[0].Prefix != netip.MustParsePrefix("2001:db8:100::/64") || b.T1 != 150*time.Second || b.T2 != 240*time.Second {
		t.Fatalf("binding %+v", b)
	}
	if !b.ServerDUID.Equal(fixtureServerDUID) || b.Prefixes[0].ValidUntil() != t0.Add(600*time.Second) {
		t.Fatalf("binding %+v", b)
	}
	if m.deadline() != t0.Add(150*time.Second) {
		t.Fatalf("next event %v after the Reply, want T1", m.deadline().Sub(t0))
	}

	// T1: Renew to the server, answered: lifetimes count from the new Reply.
	now := t0.Add(150 * time.Second)
	m.timer(now)
	ren := wantSent(t, m, dhcpv6.MessageTypeRenew)
	if ren.Options.ServerID() == nil || ren.Options.OneIAPD().Options.Prefixes()[0].Prefix.String() != "2001:db8:100::/64" {
		t.Fatal("Renew without Server ID or exact prefix")
	}
	now = now.Add(time.Millisecond)
	m.packet(now, withXID(m, readFixture(t, "kea/full/06-recv-reply.bin")), testServer)
	if _, changed := m.takeOutput(); !changed || m.st != stBound || m.b.Prefixes[0].ValidUntil() != now.Add(600*time.Second) {
		t.Fatalf("renew: state %s binding %+v", m.st, m.b)
	}

	// Server gone: Renew retransmits with growing Elapsed Time until T2,
	// then Rebind without Server ID until the valid lifetime ends.
	t1 := now
	now = t1.Add(150 * time.Second)
	m.timer(now)
	wantSent(t, m, dhcpv6.MessageTypeRenew)
	var lastElapsed time.Duration
	for m.st == stRenewing {
		now = m.deadline()
		m.timer(now)
		for _, msg := range sent(t, m) {
			if msg.MessageType == dhcpv6.MessageTypeRenew {
				if e := msg.Options.ElapsedTime(); e <= lastElapsed {
					t.Fatalf("elapsed time %v after %v", e, lastElapsed)
				} else {
					lastElapsed = e
				}
			}
			if msg.MessageType == dhcpv6.MessageTypeRebind && msg.GetOneOption(dhcpv6.OptionServerID) != nil {
				t.Fatal("Rebind with Server ID")
			}
		}
	}
	if m.st != stRebinding || now != t1.Add(240*time.Second) {
		t.Fatalf("state %s at %v, want rebinding at T2", m.st, now.Sub(t1))
	}
	if m.stats.Exchanges[Exchange{"renew", "timeout"}] != 1 {
		t.Errorf("stats %+v", m.stats)
	}
	var changes int
	for m.st == stRebinding {
		now = m.deadline()
		m.timer(now)
		if _, changed := m.takeOutput(); changed {
			changes++
		}
	}
	if now != t1.Add(600*time.Second) || len(m.b.Prefixes) != 0 || m.st != stSoliciting || m.stats.Expired != 1 {
		t.Fatalf("at %v: state %s binding %+v expired %d", now.Sub(t1), m.st, m.b, m.stats.Expired)
	}
	if changes < 2 { // deprecated at 300 s, gone at 600 s
		t.Errorf("%d changes reported while rebinding", changes)
	}
}

func TestMachinePreference255EndsCollection(t *testing.T) {
	m := newTestMachine(t)
	m.start(testEpoch, Binding{})
	now := m.deadline()
	m.timer(now)
	sent(t, m)
	adv := serverMsg{typ: dhcpv6.MessageTypeAdvertise, xid: m.ex.xid, clientID: fixtureClientDUID, serverID: DUID{0, 3, 0, 1, 9, 9, 9, 9, 9, 9}, preference: 255,
		ias: []serverIA{{iaid: 1, t1: 10, t2: 20, prefixes: []serverPrefix{{"2001:db8:9::/64", 30, 60}}}}}
	m.packet(now.Add(time.Millisecond), withXID(m, readFixture(t, "kea/full/02-recv-advertise.bin")), testServer)
	m.packet(now.Add(2*time.Millisecond), adv.encode(), testServer)
	req := wantSent(t, m, dhcpv6.MessageTypeRequest)
	if !DUID(req.Options.ServerID().ToBytes()).Equal(adv.serverID) {
		t.Fatal("did not request from the preference-255 server")
	}
}

func TestMachineHighestPreferenceWins(t *testing.T) {
	m := newTestMachine(t)
	m.start(testEpoch, Binding{})
	now := m.deadline()
	m.timer(now)
	sent(t, m)
	for i, pref := range []int{3, 10, 5} {
		adv := serverMsg{typ: dhcpv6.MessageTypeAdvertise, xid: m.ex.xid, clientID: fixtureClientDUID, serverID: DUID{0, 3, 0, 1, 9, 9, 9, 9, 9, byte(i)}, preference: pref,
			ias: []serverIA{{iaid: 1, t1: 10, t2: 20, prefixes: []serverPrefix{{"2001:db8:9::/64", 30, 60}}}}}
		m.packet(now.Add(time.Millisecond), adv.encode(), testServer)
	}
	m.timer(m.deadline())
	req := wantSent(t, m, dhcpv6.MessageTypeRequest)
	if got := DUID(req.Options.ServerID().ToBytes()); got[len(got)-1] != 1 {
		t.Fatalf("requested from %s", got)
	}
}

func TestMachineRapidCommit(t *testing.T) {
	for _, f := range []string{"kea/rapid/02-recv-reply.bin", "dhcpd/rapid/02-recv-reply.bin"} {
		m := newTestMachine(t)
		m.start(testEpoch, Binding{})
		now := m.deadline()
		m.timer(now)
		wantSent(t, m, dhcpv6.MessageTypeSolicit)
		m.packet(now.Add(time.Millisecond), withXID(m, readFixture(t, f)), testServer)
		if _, changed := m.takeOutput(); !changed || m.st != stBound || len(m.b.Prefixes) != 1 {
			t.Fatalf("%s: state %s binding %+v", f, m.st, m.b)
		}
		if m.stats.Sent["request"] != 0 || m.stats.Exchanges[Exchange{"solicit", "success"}] != 1 {
			t.Errorf("%s: stats %+v", f, m.stats)
		}
	}
}

func TestMachineIgnoresOtherTransactionsAndClients(t *testing.T) {
	m := newTestMachine(t)
	m.start(testEpoch, Binding{})
	now := m.deadline()
	m.timer(now)
	sent(t, m)
	m.packet(now, readFixture(t, "kea/rapid/02-recv-reply.bin"), testServer) // stale xid
	other := serverMsg{typ: dhcpv6.MessageTypeReply, xid: m.ex.xid, clientID: DUID{0, 3, 0, 1, 1, 1, 1, 1, 1, 1}, serverID: fixtureServerDUID, preference: -1, rapid: true,
		ias: []serverIA{{iaid: 1, prefixes: []serverPrefix{{"2001:db8:9::/64", 30, 60}}}}}
	m.packet(now, other.encode(), testServer)
	m.packet(now, []byte{7, 0}, testServer)
	if m.st != stSoliciting || m.stats.Invalid != 3 {
		t.Fatalf("state %s invalid %d", m.st, m.stats.Invalid)
	}
}

func replyTo(m *machine, ias ...serverIA) []byte {
	return serverMsg{typ: dhcpv6.MessageTypeReply, xid: m.ex.xid, clientID: fixtureClientDUID, serverID: fixtureServerDUID, preference: -1, ias: ias}.encode()
}

func TestMachineNoBindingOnRenewRequests(t *testing.T) {
	m := newTestMachine(t)
	t0 := obtain(t, m)
	now := t0.Add(150 * time.Second)
	m.timer(now)
	wantSent(t, m, dhcpv6.MessageTypeRenew)
	m.packet(now, replyTo(m, serverIA{iaid: 1, status: statusPtr(StatusNoBinding)}), testServer)
	req := wantSent(t, m, dhcpv6.MessageTypeRequest)
	if ps := req.Options.OneIAPD().Options.Prefixes(); len(ps) != 1 || ps[0].Prefix.String() != "2001:db8:100::/64" {
		t.Fatalf("Request hints %v", ps)
	}
	if len(m.b.Prefixes) != 1 {
		t.Fatal("held prefix dropped on NoBinding")
	}
	m.packet(now, replyTo(m, serverIA{iaid: 1, t1: 50, t2: 80, prefixes: []serverPrefix{{"2001:db8:100::/64", 100, 200}}}), testServer)
	if m.st != stBound || m.b.T1 != 50*time.Second || m.stats.Exchanges[Exchange{"renew", "NoBinding"}] != 1 {
		t.Fatalf("state %s binding %+v stats %+v", m.st, m.b, m.stats)
	}
}

func TestMachineNoPrefixAvail(t *testing.T) {
	m := newTestMachine(t)
	m.start(testEpoch, Binding{})
	now := m.deadline()
	m.timer(now)
	sent(t, m)
	// An Advertise with NoPrefixAvail is ignored: Solicit goes on, backing off.
	adv := serverMsg{typ: dhcpv6.MessageTypeAdvertise, xid: m.ex.xid, clientID: fixtureClientDUID, serverID: fixtureServerDUID, preference: -1,
		ias: []serverIA{{iaid: 1, status: statusPtr(StatusNoPrefixAvail)}}}
	m.packet(now, adv.encode(), testServer)
	if m.st != stSoliciting || m.stats.Exchanges[Exchange{"solicit", "NoPrefixAvail"}] != 1 {
		t.Fatalf("state %s stats %+v", m.st, m.stats)
	}
	var gaps []time.Duration
	last := now
	for range 4 {
		now = m.deadline()
		m.timer(now)
		wantSent(t, m, dhcpv6.MessageTypeSolicit)
		gaps = append(gaps, now.Sub(last))
		last = now
	}
	for i := 1; i < len(gaps); i++ {
		if gaps[i] < gaps[i-1]*19/10 {
			t.Fatalf("Solicit intervals %v do not back off", gaps)
		}
	}
	// A Reply to Request with NoPrefixAvail: retry later, growing.
	m.packet(now, withXID(m, readFixture(t, "kea/full/02-recv-advertise.bin")), testServer)
	wantSent(t, m, dhcpv6.MessageTypeRequest)
	m.packet(now, replyTo(m, serverIA{iaid: 1, status: statusPtr(StatusNoPrefixAvail)}), testServer)
	if m.st != stInitDelay || m.startAt.Sub(now) < time.Second || len(m.b.Prefixes) != 0 {
		t.Fatalf("state %s retry in %v", m.st, m.startAt.Sub(now))
	}
}

func TestMachineReplyIsTheTruth(t *testing.T) {
	m := newTestMachine(t)
	t0 := obtain(t, m)
	now := t0.Add(150 * time.Second)
	m.timer(now)
	sent(t, m)
	// The Reply adds a prefix (host bits masked), and does not mention the
	// held one: both are kept, each with its own lifetimes.
	m.packet(now, replyTo(m, serverIA{iaid: 1, t1: 0, t2: 0, prefixes: []serverPrefix{{"2001:db8:200::1/64", 100, 200}}}), testServer)
	if len(m.b.Prefixes) != 2 || m.b.Prefixes[1].Prefix != netip.MustParsePrefix("2001:db8:200::/64") {
		t.Fatalf("binding %+v", m.b)
	}
	if m.b.Prefixes[0].ValidUntil() != t0.Add(600*time.Second) {
		t.Fatal("unmentioned prefix lifetimes changed")
	}
	// T1 = T2 = 0: 0.5 and 0.8 of the shortest preferred lifetime.
	if m.b.T1 != 50*time.Second || m.b.T2 != 80*time.Second {
		t.Fatalf("T1 %v T2 %v", m.b.T1, m.b.T2)
	}
	// Valid lifetime 0 removes a prefix at once.
	now = now.Add(50 * time.Second)
	m.timer(now)
	sent(t, m)
	m.packet(now, replyTo(m, serverIA{iaid: 1, t1: 10, t2: 20, prefixes: []serverPrefix{{"2001:db8:100::/64", 0, 0}, {"2001:db8:200::/64", 100, 200}}}), testServer)
	if len(m.b.Prefixes) != 1 || m.b.Prefixes[0].Prefix != netip.MustParsePrefix("2001:db8:200::/64") {
		t.Fatalf("binding %+v", m.b)
	}
}

func TestMachineEmptyRebindReplyKeepsPrefixes(t *testing.T) {
	m := newTestMachine(t)
	t0 := obtain(t, m)
	now := t0.Add(240 * time.Second)
	m.timer(now)
	wantSent(t, m, dhcpv6.MessageTypeRebind)
	m.packet(now, replyTo(m, serverIA{iaid: 1}), testServer)
	m.packet(now, serverMsg{typ: dhcpv6.MessageTypeReply, xid: m.ex.xid, clientID: fixtureClientDUID, serverID: fixtureServerDUID, preference: -1, status: statusPtr(StatusUnspecFail)}.encode(), testServer)
	if m.st != stRebinding || len(m.b.Prefixes) != 1 {
		t.Fatalf("state %s binding %+v", m.st, m.b)
	}
	if m.stats.Exchanges[Exchange{"rebind", "empty"}] != 1 || m.stats.Exchanges[Exchange{"rebind", "UnspecFail"}] != 1 {
		t.Fatalf("stats %+v", m.stats)
	}
}

func TestMachineRestoreRenews(t *testing.T) {
	m := newTestMachine(t)
	t0 := obtain(t, m)
	saved := m.b.Clone()

	// Restarted 100 s later: no Solicit, an immediate Renew of the same prefix.
	r := newTestMachine(t)
	now := t0.Add(100 * time.Second)
	r.start(now, saved)
	ren := wantSent(t, r, dhcpv6.MessageTypeRenew)
	if !DUID(ren.Options.ServerID().ToBytes()).Equal(fixtureServerDUID) || ren.Options.OneIAPD().Options.Prefixes()[0].Prefix.String() != "2001:db8:100::/64" {
		t.Fatal("Renew not for the saved binding")
	}
	if _, changed := r.takeOutput(); changed {
		t.Fatal("changed flag survived takeOutput")
	}
	if len(r.b.Prefixes) != 1 {
		t.Fatal("restored prefix not held")
	}

	// After T2: Rebind. After the valid lifetime: Solicit.
	r = newTestMachine(t)
	r.start(t0.Add(250*time.Second), saved)
	wantSent(t, r, dhcpv6.MessageTypeRebind)
	r = newTestMachine(t)
	r.start(t0.Add(601*time.Second), saved)
	if r.st != stInitDelay || len(r.b.Prefixes) != 0 {
		t.Fatalf("expired binding restored: %s", r.st)
	}
	// Another client's binding is not taken.
	other := saved.Clone()
	other.ClientDUID = DUID{0, 3, 0, 1, 1, 1, 1, 1, 1, 1}
	r = newTestMachine(t)
	r.start(now, other)
	if r.st != stInitDelay {
		t.Fatalf("foreign binding restored: %s", r.st)
	}
}

func TestMachineRequestGivesUpAfterMRC(t *testing.T) {
	m := newTestMachine(t)
	m.start(testEpoch, Binding{})
	m.timer(m.deadline())
	m.packet(m.deadline(), withXID(m, readFixture(t, "kea/full/02-recv-advertise.bin")), testServer)
	var requests int
	for m.st == stRequesting {
		for _, msg := range sent(t, m) {
			if msg.MessageType == dhcpv6.MessageTypeRequest {
				requests++
			}
		}
		m.timer(m.deadline())
	}
	if requests != reqMaxRC || m.st != stSoliciting || m.stats.Exchanges[Exchange{"request", "timeout"}] != 1 {
		t.Fatalf("%d Requests, state %s", requests, m.st)
	}
}

func TestMachineRelease(t *testing.T) {
	m := newTestMachine(t)
	t0 := obtain(t, m)
	m.release(t0.Add(time.Second))
	rel := wantSent(t, m, dhcpv6.MessageTypeRelease)
	if rel.Options.ServerID() == nil || len(rel.Options.OneIAPD().Options.Prefixes()) != 1 {
		t.Fatal("Release without Server ID or prefix")
	}
	if len(m.b.Prefixes) != 0 || m.st != stReleasing {
		t.Fatal("prefixes still usable while releasing")
	}
	m.packet(t0.Add(time.Second), withXID(m, readFixture(t, "kea/full/10-recv-reply.bin")), testServer)
	if m.st != stReleased {
		t.Fatalf("state %s", m.st)
	}
}

func TestRetransmissionTimeouts(t *testing.T) {
	for _, r := range []float64{0, 0.5, 0.999} {
		e := &exchange{typ: dhcpv6.MessageTypeSolicit, irt: solTimeout, mrt: 10 * time.Second}
		rt := e.nextRT(func() float64 { return r })
		if rt <= solTimeout || rt > solTimeout*11/10 {
			t.Errorf("first Solicit RT %v", rt)
		}
		for range 10 {
			e.count++
			rt = e.nextRT(func() float64 { return r })
		}
		if rt < 9*time.Second || rt > 11*time.Second {
			t.Errorf("capped RT %v", rt)
		}
	}
}

func TestEffectiveTimers(t *testing.T) {
	p := func(pref, valid time.Duration) Prefix { return Prefix{Preferred: pref, Valid: valid} }
	for _, tt := range []struct {
		t1, t2       time.Duration
		prefixes     []Prefix
		want1, want2 time.Duration
	}{
		{10 * time.Second, 20 * time.Second, []Prefix{p(100*time.Second, 200*time.Second)}, 10 * time.Second, 20 * time.Second},
		{0, 0, []Prefix{p(100*time.Second, 200*time.Second), p(60*time.Second, 70*time.Second)}, 30 * time.Second, 48 * time.Second},
		{0, 0, []Prefix{p(Infinity, Infinity)}, Infinity, Infinity},
		{0, 0, []Prefix{p(0, 100*time.Second)}, 50 * time.Second, 80 * time.Second},
		{Infinity, Infinity, []Prefix{p(100*time.Second, 200*time.Second)}, Infinity, Infinity},
	} {
		g1, g2 := effectiveTimers(tt.t1, tt.t2, tt.prefixes)
		if g1 != tt.want1 || g2 != tt.want2 {
			t.Errorf("effectiveTimers(%v, %v) = %v, %v; want %v, %v", tt.t1, tt.t2, g1, g2, tt.want1, tt.want2)
		}
	}
}

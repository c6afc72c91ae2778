package dhcp6pd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// savedBinding returns a Kea binding (T1 150 s, T2 240 s, valid 600 s) and
// the time of its Reply.
func savedBinding(t *testing.T) (Binding, time.Time) {
	t.Helper()
	m := newTestMachine(t)
	t0 := obtain(t, m)
	return m.b.Clone(), t0
}

// takeoverMachine is a fresh take-over machine whose RAND source returns rnd
// (0: RAND = -0.1, 0.5: 0, 0.9999: ≈ +0.1).
func takeoverMachine(takeOver bool, rnd float64) *machine {
	m := newMachine("up0", fixtureClientDUID, 1, 64, func() float64 { return rnd }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.takeOver = takeOver
	return m
}

// rtBounds are the retransmission timeouts of the take-over exchange with
// RAND anywhere in [-0.1, 0.1] (RFC 8415 §15: RT = 2·RTprev + RAND·RTprev,
// capped at MRT + RAND·MRT), and their nominal values (RAND = 0).
var rtBounds = []struct{ lo, nominal, hi time.Duration }{
	{900 * time.Millisecond, 1 * time.Second, 1100 * time.Millisecond},
	{1710 * time.Millisecond, 2 * time.Second, 2310 * time.Millisecond},
	{3249 * time.Millisecond, 4 * time.Second, 4400 * time.Millisecond},
	{3600 * time.Millisecond, 4 * time.Second, 4400 * time.Millisecond},
}

// fastExchange follows the take-over exchange begun at start until its MRD
// and checks its timeouts and that every transmission is the same message.
// It returns the time the window closed.
func fastExchange(t *testing.T, m *machine, start time.Time, typ dhcpv6.MessageType, rnd float64) time.Time {
	t.Helper()
	xid := m.ex.xid
	var rts []time.Duration
	for {
		rts = append(rts, m.ex.rt)
		now := m.deadline()
		if !now.Before(start.Add(takeoverMaxRD)) {
			break
		}
		if now != m.ex.next {
			t.Fatalf("next event at %v, want the retransmission at %v", now.Sub(start), m.ex.next.Sub(start))
		}
		m.timer(now)
		if msg := wantSent(t, m, typ); msg.TransactionID != xid {
			t.Fatalf("retransmission at %v is a new exchange", now.Sub(start))
		}
	}
	if len(rts) < len(rtBounds) {
		t.Fatalf("take-over RTs %v: fewer than %d transmissions in %v", rts, len(rtBounds), takeoverMaxRD)
	}
	for i, rt := range rts {
		b := rtBounds[min(i, len(rtBounds)-1)]
		if rt < b.lo || rt > b.hi || (rnd == 0.5 && i < len(rtBounds) && rt != b.nominal) {
			t.Fatalf("take-over RTs %v: RT %d out of [%v, %v] (nominal %v)", rts, i+1, b.lo, b.hi, b.nominal)
		}
	}
	return start.Add(takeoverMaxRD)
}

// wantNormalRT checks that the exchange in progress uses the normal
// REN/REB schedule: first RT 10 s ± 10 %.
func wantNormalRT(t *testing.T, m *machine, what string) {
	t.Helper()
	if m.ex.rt < 9*time.Second || m.ex.rt > 11*time.Second || m.ex.mrt != renMaxRT {
		t.Fatalf("%s: RT %v MRT %v, want the normal 10 s/600 s", what, m.ex.rt, m.ex.mrt)
	}
}

func TestTakeoverTimers(t *testing.T) {
	saved, t0 := savedBinding(t)
	for _, rnd := range []float64{0, 0.5, 0.9999} {
		for _, tc := range []struct {
			name  string
			after time.Duration // restart this long after the Reply
			first dhcpv6.MessageType
		}{
			{"renew", 100 * time.Second, dhcpv6.MessageTypeRenew},
			{"past T2", 250 * time.Second, dhcpv6.MessageTypeRebind},
		} {
			t.Run(fmt.Sprintf("%s/rnd=%v", tc.name, rnd), func(t *testing.T) {
				m := takeoverMachine(true, rnd)
				start := t0.Add(tc.after)
				m.start(start, saved)
				if _, changed := m.takeOutput(); !changed {
					t.Fatal("restored binding not reported")
				}
				// takeOutput cleared the first message; start again to see it.
				m = takeoverMachine(true, rnd)
				m.start(start, saved)
				msg := wantSent(t, m, tc.first)
				if (tc.first == dhcpv6.MessageTypeRenew) != (msg.Options.ServerID() != nil) {
					t.Fatalf("%s with Server ID %v", tc.first, msg.Options.ServerID())
				}
				end := fastExchange(t, m, start, tc.first, rnd)

				// MRD: a new exchange of the same kind, on the normal schedule.
				m.timer(end)
				wantSent(t, m, tc.first)
				wantNormalRT(t, m, "after the take-over window")
				if m.stats.Exchanges[Exchange{msgName(tc.first), "timeout"}] != 1 {
					t.Fatalf("stats %+v", m.stats.Exchanges)
				}
				if tc.first == dhcpv6.MessageTypeRenew {
					// As usual: Renew until T2, then Rebind at T2.
					for now := m.deadline(); now.Before(saved.RebindAt()); now = m.deadline() {
						m.timer(now)
						wantSent(t, m, dhcpv6.MessageTypeRenew)
					}
					m.timer(saved.RebindAt())
					wantSent(t, m, dhcpv6.MessageTypeRebind)
					wantNormalRT(t, m, "Rebind at T2")
				}
				if m.stats.Sent["solicit"] != 0 || m.stats.Sent["request"] != 0 {
					t.Fatalf("sent %v", m.stats.Sent)
				}
			})
		}
	}
}

// T2 passes during the take-over Renew: the Rebind keeps the fast timers
// until the window closes.
func TestTakeoverT2DuringFastRenew(t *testing.T) {
	saved, t0 := savedBinding(t)
	m := takeoverMachine(true, 0.5)
	start := t0.Add(237 * time.Second) // T2 at 240 s
	m.start(start, saved)
	wantSent(t, m, dhcpv6.MessageTypeRenew)
	m.timer(m.deadline()) // +1 s
	wantSent(t, m, dhcpv6.MessageTypeRenew)
	if d := m.deadline(); d != saved.RebindAt() {
		t.Fatalf("next event %v, want T2 %v", d.Sub(start), saved.RebindAt().Sub(start))
	}
	m.timer(saved.RebindAt())
	wantSent(t, m, dhcpv6.MessageTypeRebind)
	if m.ex.rt != takeoverTimeout || !m.ex.end.Equal(start.Add(takeoverMaxRD)) {
		t.Fatalf("Rebind in the window: RT %v end %v", m.ex.rt, m.ex.end.Sub(start))
	}
	for now := m.deadline(); now.Before(start.Add(takeoverMaxRD)); now = m.deadline() {
		m.timer(now)
		wantSent(t, m, dhcpv6.MessageTypeRebind)
	}
	m.timer(start.Add(takeoverMaxRD))
	wantSent(t, m, dhcpv6.MessageTypeRebind)
	wantNormalRT(t, m, "Rebind after the window")
}

// Without TakeOver a restored binding is renewed as before: REN_TIMEOUT,
// one exchange until T2.
func TestTakeoverOffUnchanged(t *testing.T) {
	saved, t0 := savedBinding(t)
	m := takeoverMachine(false, 0.5)
	start := t0.Add(100 * time.Second)
	m.start(start, saved)
	wantSent(t, m, dhcpv6.MessageTypeRenew)
	if m.ex.rt != renTimeout || m.ex.mrt != renMaxRT || !m.ex.end.Equal(saved.RebindAt()) || !m.fastUntil.IsZero() {
		t.Fatalf("RT %v MRT %v end %v", m.ex.rt, m.ex.mrt, m.ex.end.Sub(start))
	}
	xid := m.ex.xid
	m.timer(m.deadline())
	if msg := wantSent(t, m, dhcpv6.MessageTypeRenew); msg.TransactionID != xid {
		t.Fatal("a new Renew exchange after 10 s")
	}
}

// A Reply ends the take-over timers: the next Renew at T1 is a normal one.
func TestTakeoverReplyEndsFastTimers(t *testing.T) {
	saved, t0 := savedBinding(t)
	m := takeoverMachine(true, 0.5)
	start := t0.Add(100 * time.Second)
	m.start(start, saved)
	wantSent(t, m, dhcpv6.MessageTypeRenew)
	m.packet(start.Add(time.Millisecond), replyTo(m, serverIA{iaid: 1, t1: 5, t2: 8, prefixes: []serverPrefix{{"2001:db8:100::/64", 10, 20}}}), testServer)
	if m.st != stBound {
		t.Fatalf("state %s", m.st)
	}
	now := m.deadline()
	if now != start.Add(time.Millisecond+5*time.Second) {
		t.Fatalf("next event %v, want T1", now.Sub(start))
	}
	m.timer(now)
	wantSent(t, m, dhcpv6.MessageTypeRenew)
	wantNormalRT(t, m, "Renew at T1")
}

// Where today's client Solicits again (Request unanswered, NotOnLink,
// NoPrefixAvail) a take-over client holding a valid prefix Rebinds after
// the back-off instead; once nothing valid is left it Solicits.
func TestTakeoverNeverSolicitsWhileHolding(t *testing.T) {
	saved, t0 := savedBinding(t)
	noBinding := func(m *machine, now time.Time) {
		t.Helper()
		m.packet(now, replyTo(m, serverIA{iaid: 1, status: statusPtr(StatusNoBinding)}), testServer)
		wantSent(t, m, dhcpv6.MessageTypeRequest)
	}
	for _, tc := range []struct {
		name string
		fail func(m *machine, now time.Time) time.Time // makes the Request fail
	}{
		{"request unanswered", func(m *machine, now time.Time) time.Time {
			for m.st == stRequesting {
				sent(t, m)
				now = m.deadline()
				m.timer(now)
			}
			return now
		}},
		{"NotOnLink", func(m *machine, now time.Time) time.Time {
			status := StatusNotOnLink
			m.packet(now, serverMsg{typ: dhcpv6.MessageTypeReply, xid: m.ex.xid, clientID: fixtureClientDUID, serverID: fixtureServerDUID, preference: -1, status: &status}.encode(), testServer)
			return now
		}},
		{"NoPrefixAvail", func(m *machine, now time.Time) time.Time {
			m.packet(now, replyTo(m, serverIA{iaid: 1, status: statusPtr(StatusNoPrefixAvail)}), testServer)
			return now
		}},
	} {
		for _, takeOver := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/takeOver=%v", tc.name, takeOver), func(t *testing.T) {
				m := takeoverMachine(takeOver, 0.5)
				now := t0.Add(100 * time.Second)
				m.start(now, saved)
				wantSent(t, m, dhcpv6.MessageTypeRenew)
				noBinding(m, now)
				now = tc.fail(m, now)
				if !takeOver {
					// Today's behaviour: Solicit (at once, or after the back-off).
					if m.st == stInitDelay {
						m.timer(m.deadline())
					}
					wantSent(t, m, dhcpv6.MessageTypeSolicit)
					return
				}
				if m.st != stInitDelay || len(sent(t, m)) != 0 {
					t.Fatalf("state %s after the failed Request", m.st)
				}
				now = m.deadline()
				m.timer(now)
				wantSent(t, m, dhcpv6.MessageTypeRebind)
				wantNormalRT(t, m, "Rebind after the back-off")
				// Nothing valid left: Solicit is the only way.
				expiry := m.b.Expiry()
				for now = m.deadline(); now.Before(expiry); now = m.deadline() {
					m.timer(now)
					for _, msg := range sent(t, m) { // none at deprecation
						if msg.MessageType != dhcpv6.MessageTypeRebind {
							t.Fatalf("sent %s at %v while holding", msg.MessageType, now.Sub(t0))
						}
					}
				}
				m.timer(expiry)
				wantSent(t, m, dhcpv6.MessageTypeSolicit)
				if m.stats.Sent["solicit"] != 1 {
					t.Fatalf("sent %v", m.stats.Sent)
				}
			})
		}
	}
}

// persister is a Persister whose Save fails with err once armed.
type persister struct {
	MemoryPersister
	mu    sync.Mutex
	err   error
	saves int
}

func (p *persister) Save(ctx context.Context, b Binding) error {
	p.mu.Lock()
	p.saves++
	err := p.err
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return p.MemoryPersister.Save(ctx, b)
}

func (p *persister) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.saves
}

func (p *persister) fail(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

// runErr runs c until it returns by itself, bounded.
func runErr(t *testing.T, c *Client) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	return errc
}

func wantReturn(t *testing.T, errc <-chan error, want error) {
	t.Helper()
	select {
	case err := <-errc:
		if !errors.Is(err, want) {
			t.Fatalf("Run returned %v, want %v", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

func noneSent(t *testing.T, tr *fakeTransport) {
	t.Helper()
	select {
	case b := <-tr.sent:
		m, _ := dhcpv6.MessageFromBytes(b)
		t.Fatalf("sent %v after ErrNotOwner", m)
	default:
	}
}

func TestClientErrNotOwner(t *testing.T) {
	saved, t0 := savedBinding(t)
	notOwner := fmt.Errorf("fenced save: %w", ErrNotOwner)

	t.Run("at start", func(t *testing.T) {
		// The restored binding's Save fails: not even its Renew goes out.
		p := &persister{}
		p.MemoryPersister.Save(context.Background(), saved)
		p.fail(notOwner)
		c, clk, tr := newFakeClient(t, Config{Persister: p, TakeOver: true})
		clk.now = t0.Add(100 * time.Second)
		wantReturn(t, runErr(t, c), ErrNotOwner)
		noneSent(t, tr)
		if st := c.Stats(); len(st.Sent) != 0 || st.SaveErrors != 1 {
			t.Fatalf("stats %+v", st)
		}
	})

	t.Run("after a Reply", func(t *testing.T) {
		p := &persister{}
		p.MemoryPersister.Save(context.Background(), saved)
		var changes int
		c, clk, tr := newFakeClient(t, Config{Persister: p, TakeOver: true, OnChange: func(Binding) { changes++ }})
		clk.now = t0.Add(100 * time.Second)
		errc := runErr(t, c)
		ren := tr.next(t, dhcpv6.MessageTypeRenew)
		waitFor(t, 5*time.Second, "the restored binding saved", func() bool { return p.count() == 1 })
		p.fail(notOwner)
		tr.answer(t, ren, "kea/rapid/04-recv-reply.bin")
		wantReturn(t, errc, ErrNotOwner)
		noneSent(t, tr)
		if st := c.Stats(); st.Sent["renew"] != 1 || st.Exchanges[Exchange{"renew", "success"}] != 1 || st.SaveErrors != 1 {
			t.Fatalf("stats %+v", st)
		}
		if changes != 1 {
			t.Fatalf("%d OnChange calls, want 1 (the restore; none for the unsaved Reply)", changes)
		}
	})

	t.Run("on Release", func(t *testing.T) {
		p := &persister{}
		c, clk, tr := newFakeClient(t, Config{Persister: p})
		errc := runErr(t, c)
		clk.fireNext(t)
		sol := tr.next(t, dhcpv6.MessageTypeSolicit)
		tr.answer(t, sol, "kea/rapid/02-recv-reply.bin")
		waitFor(t, 5*time.Second, "the binding", func() bool { return len(c.Binding().Prefixes) == 1 })
		p.fail(notOwner)
		if err := c.Release(context.Background()); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("Release: %v", err)
		}
		wantReturn(t, errc, ErrNotOwner)
		noneSent(t, tr)
	})

	t.Run("other Save errors only count", func(t *testing.T) {
		p := &persister{}
		p.fail(errors.New("etcd unavailable"))
		c, clk, tr := newFakeClient(t, Config{Persister: p})
		startRun(t, c)
		clk.fireNext(t)
		sol := tr.next(t, dhcpv6.MessageTypeSolicit)
		tr.answer(t, sol, "kea/rapid/02-recv-reply.bin")
		waitFor(t, 5*time.Second, "the binding", func() bool { return len(c.Binding().Prefixes) == 1 && c.Stats().SaveErrors == 1 })
		clk.fireNext(t) // T1: the client goes on
		tr.next(t, dhcpv6.MessageTypeRenew)
	})
}

// The driver applies the take-over timers: the first retransmission of the
// restored binding's Renew is due about 1 s after the first one.
func TestClientTakeOverRetransmitsAfterOneSecond(t *testing.T) {
	saved, t0 := savedBinding(t)
	for _, tc := range []struct {
		takeOver bool
		lo, hi   time.Duration
	}{{true, 900 * time.Millisecond, 1100 * time.Millisecond}, {false, 9 * time.Second, 11 * time.Second}} {
		t.Run(fmt.Sprintf("takeOver=%v", tc.takeOver), func(t *testing.T) {
			p := &MemoryPersister{}
			p.Save(context.Background(), saved)
			c, clk, tr := newFakeClient(t, Config{Persister: p, TakeOver: tc.takeOver})
			start := t0.Add(100 * time.Second)
			clk.now = start
			startRun(t, c)
			first := tr.next(t, dhcpv6.MessageTypeRenew)
			clk.fireNext(t)
			again := tr.next(t, dhcpv6.MessageTypeRenew)
			if d := clk.Now().Sub(start); d < tc.lo || d > tc.hi || again.TransactionID != first.TransactionID {
				t.Fatalf("retransmission after %v, want [%v, %v]", d, tc.lo, tc.hi)
			}
		})
	}
}

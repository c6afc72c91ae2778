package dhcp6pd

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       chan time.Time
	at      time.Time
	stopped bool
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{c: make(chan time.Time, 1), at: f.now.Add(d)}
	if d <= 0 {
		t.c <- f.now
		t.stopped = true
	} else {
		f.timers = append(f.timers, t)
	}
	return fakeTimerRef{f, t}
}

type fakeTimerRef struct {
	f *fakeClock
	t *fakeTimer
}

func (r fakeTimerRef) C() <-chan time.Time { return r.t.c }
func (r fakeTimerRef) Stop() bool {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	was := !r.t.stopped
	r.t.stopped = true
	return was
}

// fireNext waits (bounded) for a pending timer, moves the clock to it and
// fires it.
func (f *fakeClock) fireNext(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		var next *fakeTimer
		for _, tm := range f.timers {
			if !tm.stopped && (next == nil || tm.at.Before(next.at)) {
				next = tm
			}
		}
		if next != nil {
			f.now = next.at
			next.stopped = true
			next.c <- next.at
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no timer pending")
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeTransport hands sent messages to the test and delivers its answers.
type fakeTransport struct {
	sent    chan []byte
	packets chan packet
	fail    error // returned by the next Send
}

func newFakeTransport() *fakeTransport {
	return &fakeTransport{sent: make(chan []byte, 16), packets: make(chan packet, 16)}
}

func (f *fakeTransport) Send(b []byte) error {
	if f.fail != nil {
		err := f.fail
		f.fail = nil
		return err
	}
	f.sent <- b
	return nil
}
func (f *fakeTransport) Packets() <-chan packet { return f.packets }
func (f *fakeTransport) Err() error             { return nil }
func (f *fakeTransport) Close() error           { return nil }

func (f *fakeTransport) next(t *testing.T, typ dhcpv6.MessageType) *dhcpv6.Message {
	t.Helper()
	select {
	case b := <-f.sent:
		m, err := dhcpv6.MessageFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		if m.MessageType != typ {
			t.Fatalf("sent %s, want %s", m.MessageType, typ)
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s sent", typ)
	}
	return nil
}

func (f *fakeTransport) answer(t *testing.T, to *dhcpv6.Message, fixture string) {
	b := readFixture(t, fixture)
	copy(b[1:4], to.TransactionID[:])
	f.packets <- packet{data: b, from: testServer}
}

func newFakeClient(t *testing.T, cfg Config) (*Client, *fakeClock, *fakeTransport) {
	t.Helper()
	cfg.Interface = "up0"
	cfg.IAID = 1
	cfg.Logger = testLogger(t)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: testEpoch}
	tr := newFakeTransport()
	c.clock = clk
	c.open = func(context.Context, string) (transport, error) { return tr, nil }
	c.hwaddr = func(string) (net.HardwareAddr, error) { return net.HardwareAddr{2, 0, 0, 0, 0, 2}, nil }
	return c, clk, tr
}

func startRun(t *testing.T, c *Client) (cancel func() error) {
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	var once sync.Once
	var err error
	cancel = func() error {
		once.Do(func() {
			stop()
			select {
			case err = <-errc:
			case <-time.After(5 * time.Second):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { cancel() })
	return cancel
}

func TestClientRunPersistRestartRelease(t *testing.T) {
	store := FilePersister{Path: filepath.Join(t.TempDir(), "pd.json")}
	var mu sync.Mutex
	var changes []Binding
	onChange := func(b Binding) { mu.Lock(); changes = append(changes, b); mu.Unlock() }

	c, clk, tr := newFakeClient(t, Config{Persister: store, OnChange: onChange})
	stop := startRun(t, c)
	clk.fireNext(t) // the initial delay
	sol := tr.next(t, dhcpv6.MessageTypeSolicit)
	if !DUID(sol.Options.ClientID().ToBytes()).Equal(fixtureClientDUID) {
		t.Fatalf("client ID %s, want the DUID-LL of the MAC", sol.Options.ClientID())
	}
	tr.answer(t, sol, "kea/rapid/02-recv-reply.bin")
	waitFor(t, 5*time.Second, "the binding", func() bool { return len(c.Binding().Prefixes) == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	saved, err := store.Load(context.Background())
	if err != nil || len(saved.Prefixes) != 1 || saved.Prefixes[0].Prefix.String() != "2001:db8:100:1::/64" || !saved.ServerDUID.Equal(fixtureServerDUID) {
		t.Fatalf("saved %+v, %v", saved, err)
	}
	mu.Lock()
	if len(changes) != 1 {
		t.Fatalf("%d OnChange calls", len(changes))
	}
	mu.Unlock()

	// Restart: the saved binding is reported at once and renewed at once.
	c2, _, tr2 := newFakeClient(t, Config{Persister: store, OnChange: onChange})
	startRun(t, c2)
	ren := tr2.next(t, dhcpv6.MessageTypeRenew)
	if ps := ren.Options.OneIAPD().Options.Prefixes(); len(ps) != 1 || ps[0].Prefix.String() != "2001:db8:100:1::/64" {
		t.Fatalf("Renew hints %v", ps)
	}
	waitFor(t, 5*time.Second, "the restored binding", func() bool { return len(c2.Binding().Prefixes) == 1 })
	tr2.answer(t, ren, "kea/rapid/04-recv-reply.bin")
	waitFor(t, 5*time.Second, "the renewal", func() bool { return c2.Stats().Exchanges[Exchange{"renew", "success"}] == 1 })

	// Release: prefixes gone, Run returns, the store keeps DUID and IAID only.
	relDone := make(chan error, 1)
	go func() { relDone <- c2.Release(context.Background()) }()
	rel := tr2.next(t, dhcpv6.MessageTypeRelease)
	tr2.answer(t, rel, "kea/rapid/08-recv-reply.bin")
	select {
	case err := <-relDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Release did not return")
	}
	saved, _ = store.Load(context.Background())
	if len(saved.Prefixes) != 0 || !saved.ClientDUID.Equal(fixtureClientDUID) || saved.IAID != 1 {
		t.Fatalf("saved after release %+v", saved)
	}
	mu.Lock()
	if last := changes[len(changes)-1]; len(last.Prefixes) != 0 {
		t.Fatalf("last OnChange %+v", last)
	}
	mu.Unlock()
	if err := c2.Release(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Release after Run: %v", err)
	}
}

func TestConfigValidateAndJSON(t *testing.T) {
	var cfg Config
	if err := json.Unmarshal([]byte(`{"interface": "eth1", "prefixLength": 56, "duid": "00:04:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10"}`), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Interface != "eth1" || cfg.PrefixLength != 56 || len(cfg.DUID) != 18 || cfg.Validate() != nil {
		t.Fatalf("%+v: %v", cfg, cfg.Validate())
	}
	for _, bad := range []Config{{}, {Interface: "eth1", PrefixLength: 129}, {Interface: "a-very-long-interface-name"}, {Interface: "eth1", DUID: DUID{1}}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
}

func TestBindingJSONRoundTrip(t *testing.T) {
	m := newTestMachine(t)
	obtain(t, m)
	b := m.b
	b.Prefixes[0].Preferred = Infinity
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Binding
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Prefixes[0] != b.Prefixes[0] || !back.ServerDUID.Equal(b.ServerDUID) || back.T1 != b.T1 || !back.ReplyTime.Equal(b.ReplyTime) {
		t.Fatalf("%s\n%+v", data, back)
	}
}

func TestClientReopensWhenTheAddressIsGone(t *testing.T) {
	c, clk, tr := newFakeClient(t, Config{})
	tr.fail = syscall.EADDRNOTAVAIL
	var opens atomic.Int32
	open := c.open
	c.open = func(ctx context.Context, iface string) (transport, error) {
		opens.Add(1)
		return open(ctx, iface)
	}
	startRun(t, c)
	clk.fireNext(t) // the initial delay: the Solicit fails, the socket is reopened
	waitFor(t, 5*time.Second, "a reopen", func() bool { return opens.Load() == 2 })
	clk.fireNext(t) // the retransmission goes out
	sol := tr.next(t, dhcpv6.MessageTypeSolicit)
	tr.answer(t, sol, "kea/rapid/02-recv-reply.bin")
	waitFor(t, 5*time.Second, "the binding", func() bool { return len(c.Binding().Prefixes) == 1 })
	if c.Stats().SendErrors != 1 {
		t.Fatalf("stats %+v", c.Stats())
	}
}

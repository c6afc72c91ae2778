package dhcp6pd

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"testing"
	"time"
)

// Server timers in these tests: T1 2 s, T2 3 s, preferred 4 s, valid 6 s.

func newTestClient(t *testing.T, cfg Config) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg.Interface = nodeIf
	cfg.Logger = testLogger(t)
	cfg.OnChange = rec.onChange
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

// waitPrefix waits for a first usable prefix and returns it with the time it
// took from start.
func waitPrefix(t *testing.T, c *Client, start time.Time) (Prefix, time.Duration) {
	t.Helper()
	waitFor(t, 15*time.Second, "a delegated prefix", func() bool { return len(c.Binding().Usable(time.Now())) > 0 })
	took := time.Since(start)
	return c.Binding().Prefixes[0], took
}

func (c *Client) exchanges(msg, result string) uint64 {
	return c.Stats().Exchanges[Exchange{Message: msg, Result: result}]
}

func TestKeaObtainRenewRestart(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	dir := t.TempDir()
	kea := newKea(t, dir, keaConfig{serverID: "0a01", pool: "2001:db8:100::", poolLen: 56, delLen: 64})
	kea.start(t, tp)

	store := &MemoryPersister{}
	c, rec := newTestClient(t, Config{Persister: store})
	start := time.Now()
	stop := tp.runClient(t, c)
	p, took := waitPrefix(t, c, start)
	t.Logf("kea: first prefix %s after %v (4-message exchange)", p.Prefix, took)
	if p.Prefix.Bits() != 64 || !netip.MustParsePrefix("2001:db8:100::/56").Overlaps(p.Prefix) {
		t.Fatalf("prefix %s not a /64 of the pool", p.Prefix)
	}
	if st := c.Stats(); st.Sent["request"] != 1 || c.exchanges("request", "success") != 1 {
		t.Fatalf("stats %+v", st)
	}

	// Renew at T1: same prefix, lifetimes counted from the new Reply.
	first := c.Binding()
	waitFor(t, 10*time.Second, "a renewal", func() bool { return c.exchanges("renew", "success") >= 1 })
	b := c.Binding()
	if b.Prefixes[0].Prefix != p.Prefix || !b.Prefixes[0].ValidUntil().After(first.Prefixes[0].ValidUntil()) {
		t.Fatalf("after renew: %+v (before %+v)", b.Prefixes, first.Prefixes)
	}
	t.Logf("kea: renew after %v: preferred %v valid %v T1 %v T2 %v", b.ReplyTime.Sub(first.ReplyTime), b.Prefixes[0].Preferred, b.Prefixes[0].Valid, b.T1, b.T2)
	if _, n := rec.last(); n < 2 {
		t.Fatalf("OnChange called %d times", n)
	}

	// A plain stop does not release; a restarted server and a restarted
	// client with the persisted binding: Renew, same prefix, no Solicit.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := c.Stats(); st.Sent["release"] != 0 {
		t.Fatal("released on a plain stop")
	}
	kea.stop(t)
	kea.start(t, tp)
	c2, _ := newTestClient(t, Config{Persister: store})
	start = time.Now()
	tp.runClient(t, c2)
	waitFor(t, 10*time.Second, "a Reply to the restarted client's Renew", func() bool { return c2.exchanges("renew", "success") >= 1 })
	b2 := c2.Binding()
	t.Logf("kea: restarted client renewed %v in %v", b2.Prefixes[0].Prefix, time.Since(start))
	if st := c2.Stats(); st.Sent["solicit"] != 0 || len(b2.Prefixes) != 1 || b2.Prefixes[0].Prefix != p.Prefix || !b2.ClientDUID.Equal(first.ClientDUID) {
		t.Fatalf("restarted client: stats %+v binding %+v", st, b2)
	}
}

func TestKeaRebindThenExpire(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	// Valid 15 s: a first Rebind lost while server B starts is retried
	// (REB_TIMEOUT 10 s) before the prefix expires.
	a := newKea(t, t.TempDir(), keaConfig{serverID: "0a02", pool: "2001:db8:100::", poolLen: 56, delLen: 64, preferred: 10, valid: 15})
	a.start(t, tp)
	c, rec := newTestClient(t, Config{})
	tp.runClient(t, c)
	p, _ := waitPrefix(t, c, time.Now())
	serverA := c.Binding().ServerDUID

	// The granting server goes away, another one (its own leases, its own
	// DUID) comes: Renew goes unanswered, Rebind at T2 is answered.
	a.stop(t)
	b := newKea(t, t.TempDir(), keaConfig{serverID: "0b02", pool: "2001:db8:100::", poolLen: 56, delLen: 64, preferred: 10, valid: 15})
	b.start(t, tp)
	waitFor(t, 20*time.Second, "a Reply to Rebind", func() bool { return c.exchanges("rebind", "success") >= 1 })
	bd := c.Binding()
	if bd.ServerDUID.Equal(serverA) || len(bd.Prefixes) != 1 || bd.Prefixes[0].Prefix != p.Prefix {
		t.Fatalf("after rebind: %+v (server A %s)", bd, serverA)
	}
	t.Logf("kea: rebound %s to server %s", bd.Prefixes[0].Prefix, bd.ServerDUID)

	// No server at all: the prefix is reported gone at its valid lifetime.
	b.stop(t)
	expiry := c.Binding().Expiry()
	waitFor(t, time.Until(expiry)+10*time.Second, "the prefix to expire", func() bool {
		last, _ := rec.last()
		return len(last.Prefixes) == 0
	})
	if now := time.Now(); now.Before(expiry) {
		t.Fatalf("prefix reported gone %v before its valid lifetime ended", expiry.Sub(now))
	}
	if c.Stats().Expired != 1 || len(c.Binding().Prefixes) != 0 {
		t.Fatalf("stats %+v binding %+v", c.Stats(), c.Binding())
	}
	waitFor(t, 5*time.Second, "a new Solicit", func() bool { return c.Stats().Sent["solicit"] >= 2 })
}

func TestKeaRapidCommit(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	kea := newKea(t, t.TempDir(), keaConfig{serverID: "0a03", pool: "2001:db8:100::", poolLen: 56, delLen: 64, rapid: true})
	kea.start(t, tp)
	c, _ := newTestClient(t, Config{})
	start := time.Now()
	tp.runClient(t, c)
	p, took := waitPrefix(t, c, start)
	t.Logf("kea: first prefix %s after %v (rapid commit)", p.Prefix, took)
	if st := c.Stats(); st.Sent["request"] != 0 || c.exchanges("solicit", "success") != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKeaNoPrefixAvail(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	// A pool of exactly one /64, taken by a first client that then stops
	// (lease valid 60 s: it is not reclaimed during the test).
	kea := newKea(t, t.TempDir(), keaConfig{serverID: "0a04", pool: "2001:db8:100::", poolLen: 64, delLen: 64, preferred: 40, valid: 60})
	kea.start(t, tp)
	first, _ := newTestClient(t, Config{DUID: DUID{0, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}})
	stop := tp.runClient(t, first)
	waitPrefix(t, first, time.Now())
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	second, rec := newTestClient(t, Config{DUID: DUID{0, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}})
	tp.runClient(t, second)
	waitFor(t, 10*time.Second, "NoPrefixAvail", func() bool { return second.exchanges("solicit", "NoPrefixAvail") >= 2 })
	if b, n := rec.last(); n != 0 || len(second.Binding().Prefixes) != 0 {
		t.Fatalf("got a binding from an empty pool: %+v", b)
	}
	t.Logf("kea: empty pool: stats %+v", second.Stats())
}

func TestDhcpdObtainRenewRebind(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	dir := t.TempDir()
	// Valid 20 s: long enough to outlive the first, lost, Rebind and be
	// rebound by the retransmission (REB_TIMEOUT 10 s).
	d := newDhcpd(t, dir, false, 15, 20)
	d.start(t, tp)
	c, _ := newTestClient(t, Config{})
	start := time.Now()
	tp.runClient(t, c)
	p, took := waitPrefix(t, c, start)
	t.Logf("dhcpd: first prefix %s after %v (4-message exchange)", p.Prefix, took)
	if p.Prefix.Bits() != 64 || !netip.MustParsePrefix("2001:db8:300::/48").Overlaps(p.Prefix) {
		t.Fatalf("prefix %s", p.Prefix)
	}
	first := c.Binding()
	waitFor(t, 10*time.Second, "a renewal", func() bool { return c.exchanges("renew", "success") >= 1 })
	b := c.Binding()
	t.Logf("dhcpd: renew after %v: preferred %v valid %v T1 %v T2 %v", b.ReplyTime.Sub(first.ReplyTime), b.Prefixes[0].Preferred, b.Prefixes[0].Valid, b.T1, b.T2)
	if b.Prefixes[0].Prefix != p.Prefix || b.ReplyTime.Equal(first.ReplyTime) {
		t.Fatalf("after renew %+v", b)
	}

	// dhcpd stops; once the Renew went unanswered and Rebind began it comes
	// back (same leases, same DUID) and answers a Rebind.
	d.stop(t)
	waitFor(t, 10*time.Second, "a Rebind", func() bool { return c.Stats().Sent["rebind"] >= 1 })
	d.start(t, tp)
	waitFor(t, 20*time.Second, "a Reply to Rebind", func() bool { return c.exchanges("rebind", "success") >= 1 })
	if bd := c.Binding(); len(bd.Valid(time.Now())) != 1 || bd.Prefixes[0].Prefix != p.Prefix {
		t.Fatalf("after rebind %+v", bd)
	}
}

func TestDhcpdLengthHint56AndPortInUse(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	d := newDhcpd(t, t.TempDir(), true, 4, 6)
	d.start(t, tp)
	c, _ := newTestClient(t, Config{PrefixLength: 56})
	start := time.Now()
	tp.runClient(t, c)
	p, took := waitPrefix(t, c, start)
	t.Logf("dhcpd: first prefix %s after %v (rapid commit, /56 hint)", p.Prefix, took)
	if p.Prefix.Bits() != 56 || !netip.MustParsePrefix("2001:db8:400::/48").Overlaps(p.Prefix) {
		t.Fatalf("prefix %s", p.Prefix)
	}
	if c.Stats().Sent["request"] != 0 {
		t.Fatalf("no rapid commit: %+v", c.Stats())
	}

	// A second client on the same link is refused.
	c2, _ := newTestClient(t, Config{})
	err := tp.runClient(t, c2)()
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("second client: %v, want ErrPortInUse", err)
	}
	t.Logf("second client: %v", err)
}

func TestWaitsForTentativeLinkLocal(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, true)
	kea := newKea(t, t.TempDir(), keaConfig{serverID: "0a05", pool: "2001:db8:100::", poolLen: 56, delLen: 64, rapid: true})
	kea.start(t, tp)
	c, _ := newTestClient(t, Config{})
	// Link down and up: the link-local address comes back tentative.
	run(t, "ip", "-n", tp.node, "link", "set", nodeIf, "down")
	run(t, "ip", "-n", tp.node, "link", "set", nodeIf, "up")
	start := time.Now()
	out, _ := exec.Command("ip", "-n", tp.node, "-6", "addr", "show", "dev", nodeIf, "tentative").Output()
	t.Logf("tentative addresses at start: %q", out)
	tp.runClient(t, c)
	p, took := waitPrefix(t, c, start)
	t.Logf("kea: first prefix %s after %v (link-local through DAD first)", p.Prefix, took)
}

func TestDhcpdReleaseAndNoBinding(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	duid := `server-duid EN 2495 "v6cni";` // the same server DUID across lease files
	d := newDhcpd(t, t.TempDir(), false, 40, 60, duid)
	d.start(t, tp)
	store := &MemoryPersister{}
	c, _ := newTestClient(t, Config{Persister: store})
	stop := tp.runClient(t, c)
	p, _ := waitPrefix(t, c, time.Now())
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The server loses its leases: the restarted client's Renew gets
	// NoBinding, and a Request brings the prefix back without a Solicit.
	d.stop(t)
	d = newDhcpd(t, t.TempDir(), false, 40, 60, duid)
	d.start(t, tp)
	c2, rec := newTestClient(t, Config{Persister: store})
	tp.runClient(t, c2)
	waitFor(t, 10*time.Second, "a Reply to Request after NoBinding", func() bool { return c2.exchanges("request", "success") >= 1 })
	if c2.exchanges("renew", "NoBinding") != 1 || c2.Stats().Sent["solicit"] != 0 || c2.Binding().Prefixes[0].Prefix != p.Prefix {
		t.Fatalf("stats %+v binding %+v", c2.Stats(), c2.Binding())
	}

	// Release on purpose: the prefixes are reported gone and Run returns.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if last, _ := rec.last(); len(last.Prefixes) != 0 || c2.exchanges("release", "Success") != 1 {
		t.Fatalf("after Release: %+v stats %+v", last, c2.Stats())
	}
	if b, _ := store.Load(ctx); len(b.Prefixes) != 0 {
		t.Fatalf("persisted after Release: %+v", b)
	}
}

// TestKeaRenewsThroughBridge: the bound client's interface is enslaved to
// a bridge (as a provider network's bridge-v6 does with the node's
// uplink), later released: the client keeps renewing (its socket follows
// the interface to the bridge and back), same prefix, no Rebind.
func TestKeaRenewsThroughBridge(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	dir := t.TempDir()
	kea := newKea(t, dir, keaConfig{serverID: "0a05", pool: "2001:db8:500::", poolLen: 56, delLen: 60, preferred: 30, valid: 60})
	kea.start(t, tp)
	c, _ := newTestClient(t, Config{})
	tp.runClient(t, c)
	p, _ := waitPrefix(t, c, time.Now())
	waitFor(t, 10*time.Second, "a renewal before the move", func() bool { return c.exchanges("renew", "success") >= 1 })

	const br = "pdbr0"
	run(t, "ip", "-n", tp.node, "link", "add", br, "type", "bridge", "mcast_snooping", "0")
	run(t, "ip", "netns", "exec", tp.node, "sysctl", "-qw", "net.ipv6.conf."+br+".accept_dad=0")
	run(t, "ip", "-n", tp.node, "link", "set", nodeIf, "master", br)
	run(t, "ip", "-n", tp.node, "link", "set", br, "up")
	for _, step := range []string{"enslaved to " + br, "released from " + br} {
		n := c.exchanges("renew", "success")
		// T1 2 s, T2 3 s: two more Renews answered take about 4 s.
		waitFor(t, 15*time.Second, "two renewals with the interface "+step, func() bool { return c.exchanges("renew", "success") >= n+2 })
		st := c.Stats()
		if b := c.Binding(); len(b.Prefixes) != 1 || b.Prefixes[0].Prefix != p.Prefix || st.Sent["rebind"] != 0 || st.Sent["solicit"] != 1 {
			t.Fatalf("interface %s: binding %+v, stats %+v (want %s, no Rebind, one Solicit)", step, b.Prefixes, st, p.Prefix)
		}
		t.Logf("interface %s: renewals %d", step, c.exchanges("renew", "success"))
		if step == "enslaved to "+br {
			run(t, "ip", "-n", tp.node, "link", "set", nodeIf, "nomaster")
		}
	}
}

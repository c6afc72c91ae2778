package dhcp6pd

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// S0 of docs/design/pd-ha-renumbering.md: node A binds a prefix with DUID D
// and IAID I; node B (another netns on the same segment, other MAC and
// link-local) then Renews, and Rebinds, A's binding (D, I, A's Server ID),
// and Renews it once more after a server restart. Pass: every Reply is
// Success with the same prefix (Kea: fresh lifetimes), and the server's lease
// file holds exactly one live binding, for D/I. B is an ordinary Client whose Persister holds A's binding: a
// persisted binding makes the client Renew at once (Rebind without a Server
// ID), with the persisted DUID and IAID. Last, B runs the client as a new
// cluster leader does (Config.TakeOver) on A's binding: one Renew answered,
// the same prefix, no Solicit or Request; the time from Run's start to the
// saved renewed binding is logged.
func TestTakeoverRenewFromOtherLink(t *testing.T) {
	t.Run("kea", func(t *testing.T) {
		t.Parallel()
		r, a, b := newSharedSegment(t)
		dir := t.TempDir()
		s := newKea(t, dir, keaConfig{serverID: "0a14", pool: "2001:db8:100::", poolLen: 56, delLen: 64, preferred: 40, valid: 60})
		s.start(t, r)
		takeover(t, "kea", s, r, a, b, func() map[netip.Prefix]string { return keaBindings(t, filepath.Join(dir, "leases6.csv")) })
	})
	t.Run("dhcpd", func(t *testing.T) {
		t.Parallel()
		r, a, b := newSharedSegment(t)
		dir := t.TempDir()
		s := newDhcpd(t, dir, false, 40, 60)
		s.start(t, r)
		takeover(t, "dhcpd", s, r, a, b, func() map[netip.Prefix]string { return dhcpdBindings(t, filepath.Join(dir, "dhcpd6.leases")) })
	})
}

// newSharedSegment builds a router netns whose bridge (named routerIf, so
// newKea/newDhcpd configs apply) joins two node netns, each with its own
// veth (named nodeIf there). It returns topos for the router, node A and
// node B (a topo's router field is unused by runClient).
func newSharedSegment(t *testing.T) (router, a, b *topo) {
	t.Helper()
	requireRoot(t)
	var id [4]byte
	rand.Read(id[:])
	sfx := hex.EncodeToString(id[:])
	r := "s0r-" + sfx
	nodes := []string{"s0a-" + sfx, "s0b-" + sfx}
	for _, ns := range append([]string{r}, nodes...) {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	}
	run(t, "ip", "-n", r, "link", "add", routerIf, "type", "bridge", "mcast_snooping", "0")
	run(t, "ip", "-n", r, "link", "set", routerIf, "up")
	run(t, "ip", "-n", r, "link", "set", "lo", "up")
	for i, ns := range nodes {
		port := fmt.Sprintf("s0p%d", i)
		run(t, "ip", "-n", r, "link", "add", port, "type", "veth", "peer", "name", nodeIf, "netns", ns)
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf."+nodeIf+".accept_dad=0")
		run(t, "ip", "-n", r, "link", "set", port, "master", routerIf)
		run(t, "ip", "-n", r, "link", "set", port, "up")
		run(t, "ip", "-n", ns, "link", "set", nodeIf, "up")
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", r, "addr", "add", "2001:db8:ffff::1/64", "dev", routerIf, "nodad")
	return &topo{router: r}, &topo{router: r, node: nodes[0]}, &topo{router: r, node: nodes[1]}
}

func linkInfo(t *testing.T, ns string) string {
	out, err := exec.Command("ip", "-n", ns, "-br", "-6", "addr", "show", "dev", nodeIf).Output()
	if err != nil {
		t.Fatalf("ip addr in %s: %v", ns, err)
	}
	mac, _ := exec.Command("ip", "-n", ns, "-br", "link", "show", "dev", nodeIf).Output()
	f := strings.Fields(string(mac))
	m := ""
	if len(f) >= 3 {
		m = f[2]
	}
	return fmt.Sprintf("mac %s addr %s", m, strings.Join(strings.Fields(string(out))[2:], " "))
}

// takeover runs S0 against the started server s on router r.
func takeover(t *testing.T, name string, s *server, r, a, b *topo, bindings func() map[netip.Prefix]string) {
	t.Helper()
	start := time.Now()
	t.Logf("%s: node A %s: %s", name, a.node, linkInfo(t, a.node))
	t.Logf("%s: node B %s: %s", name, b.node, linkInfo(t, b.node))

	// Node A binds, then stops without Release (as a crashed leader).
	storeA := &MemoryPersister{}
	ca, _ := newTestClient(t, Config{Persister: storeA})
	stopA := a.runClient(t, ca)
	p, took := waitPrefix(t, ca, time.Now())
	if err := stopA(); err != nil {
		t.Fatalf("A: Run: %v", err)
	}
	bindA, _ := storeA.Load(context.Background())
	t.Logf("%s: A bound %s after %v: DUID %s IAID %#x server %s (%s), preferred %v valid %v",
		name, p.Prefix, took, bindA.ClientDUID, bindA.IAID, bindA.ServerDUID, bindA.Server, p.Preferred, p.Valid)
	want := bindA.ClientDUID.String() + "/" + strconv.FormatUint(uint64(bindA.IAID), 10)
	checkOne := func(when string) {
		t.Helper()
		got := bindings()
		t.Logf("%s: server bindings %s: %v", name, when, got)
		if len(got) != 1 || got[p.Prefix] != want {
			t.Errorf("%s: server bindings %s: %v, want exactly {%s: %s}\nserver log:\n%s", name, when, got, p.Prefix, want, tail(s.logText(), 40))
		}
	}
	checkOne("after A")
	// A stays dead for a while before B takes over, so that fresh and
	// remaining lifetimes differ in B's Reply.
	time.Sleep(2 * time.Second)

	for _, tc := range []struct {
		msg     string
		restart bool // restart the server first
	}{{"renew", false}, {"rebind", false}, {"renew", true}} {
		msg, what := tc.msg, tc.msg
		if tc.restart {
			what += " after a server restart"
			s.stop(t)
			s.start(t, r)
		}
		saved := bindA.Clone()
		if msg == "renew" {
			// Renew at once: T2 not reached (the Server ID is A's).
			saved.T1, saved.T2 = time.Hour, 2*time.Hour
		} else {
			// No Server ID: the client Rebinds.
			saved.ServerDUID, saved.Server = nil, netip.Addr{}
		}
		store := &MemoryPersister{}
		store.Save(context.Background(), saved)
		cb, _ := newTestClient(t, Config{Persister: store})
		t0 := time.Now()
		stopB := b.runClient(t, cb)
		deadline := time.Now().Add(8 * time.Second)
		for time.Now().Before(deadline) {
			st := cb.Stats()
			n := uint64(0)
			for ex, v := range st.Exchanges {
				if ex.Message == msg {
					n += v
				}
			}
			if n > 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		rtt := time.Since(t0)
		st := cb.Stats()
		bb := cb.Binding()
		if err := stopB(); err != nil {
			t.Fatalf("B: Run: %v", err)
		}
		if cb.exchanges(msg, "success") != 1 || st.Sent["request"] != 0 || st.Sent["solicit"] != 0 {
			t.Fatalf("%s: %s from B refused or unanswered after %v: exchanges %v sent %v (status codes are the results)\nserver log:\n%s",
				name, what, rtt, st.Exchanges, st.Sent, tail(s.logText(), 40))
		}
		if len(bb.Prefixes) != 1 || bb.Prefixes[0].Prefix != p.Prefix || !bb.ClientDUID.Equal(bindA.ClientDUID) || bb.IAID != bindA.IAID {
			t.Fatalf("%s: %s from B: binding %+v, want only %s", name, what, bb, p.Prefix)
		}
		t.Logf("%s: %s from B: Reply Success in %v, same prefix %s, preferred %v valid %v T1 %v T2 %v, server %s from %s",
			name, what, rtt, bb.Prefixes[0].Prefix, bb.Prefixes[0].Preferred, bb.Prefixes[0].Valid, bb.T1, bb.T2, bb.ServerDUID, bb.Server)
		if name == "kea" && (bb.Prefixes[0].Valid != 60*time.Second || bb.Prefixes[0].Preferred != 40*time.Second) {
			t.Errorf("kea: %s from B: lifetimes %v/%v, want fresh 40s/1m0s", what, bb.Prefixes[0].Preferred, bb.Prefixes[0].Valid)
		}
		checkOne("after B's " + what)
	}

	// The client as a new leader runs it (Config.TakeOver): Renew at once
	// with the take-over timers, answered, same prefix, no Solicit/Request.
	saved := bindA.Clone()
	saved.T1, saved.T2 = time.Hour, 2*time.Hour
	store := &timedPersister{}
	store.MemoryPersister.Save(context.Background(), saved)
	cb, _ := newTestClient(t, Config{Persister: store, TakeOver: true})
	store.start = time.Now()
	stopB := b.runClient(t, cb)
	waitFor(t, 8*time.Second, "the take-over Renew answered", func() bool { return store.renewedAfter() > 0 })
	st, bb := cb.Stats(), cb.Binding()
	if err := stopB(); err != nil {
		t.Fatalf("B (take-over): Run: %v", err)
	}
	if cb.exchanges("renew", "success") != 1 || st.Sent["solicit"] != 0 || st.Sent["request"] != 0 || st.Sent["rebind"] != 0 {
		t.Fatalf("%s: take-over from B: exchanges %v sent %v, want one successful Renew and nothing else\nserver log:\n%s",
			name, st.Exchanges, st.Sent, tail(s.logText(), 40))
	}
	for ex := range st.Exchanges {
		if ex.Message != "renew" {
			t.Fatalf("%s: take-over from B: exchange %v", name, ex)
		}
	}
	if len(bb.Prefixes) != 1 || bb.Prefixes[0].Prefix != p.Prefix {
		t.Fatalf("%s: take-over from B: binding %+v, want only %s", name, bb, p.Prefix)
	}
	restored, renewed := store.times()
	t.Logf("%s: take-over from B (TakeOver): Run start → restored binding saved %v, → renewed binding saved %v (Renews sent %d), same prefix %s",
		name, restored, renewed, st.Sent["renew"], bb.Prefixes[0].Prefix)
	checkOne("after B's take-over Renew")
	t.Logf("%s: S0 took %v", name, time.Since(start))
}

// timedPersister records when the client saved: the restored binding (its
// first Save) and the first binding of a Reply after start.
type timedPersister struct {
	MemoryPersister
	start time.Time

	mu                sync.Mutex
	restored, renewed time.Duration
}

func (p *timedPersister) Save(ctx context.Context, b Binding) error {
	p.mu.Lock()
	d := time.Since(p.start)
	if p.restored == 0 {
		p.restored = d
	} else if p.renewed == 0 && b.ReplyTime.After(p.start) {
		p.renewed = d
	}
	p.mu.Unlock()
	return p.MemoryPersister.Save(ctx, b)
}

func (p *timedPersister) renewedAfter() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.renewed
}

func (p *timedPersister) times() (restored, renewed time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restored, p.renewed
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// keaBindings reads Kea's memfile CSV (append-only, last line per prefix
// wins) and returns the live PD leases as prefix → "DUID/IAID".
func keaBindings(t *testing.T, path string) map[netip.Prefix]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	last := map[netip.Prefix][]string{}
	for _, r := range rows[1:] {
		if r[col["lease_type"]] != "2" {
			continue
		}
		p, err := netip.ParsePrefix(r[col["address"]] + "/" + r[col["prefix_len"]])
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		last[p] = r
	}
	out := map[netip.Prefix]string{}
	for p, r := range last {
		if r[col["state"]] != "0" || r[col["valid_lifetime"]] == "0" {
			continue
		}
		t.Logf("kea lease line for %s: %s", p, strings.Join(r, ","))
		d, err := hex.DecodeString(strings.ReplaceAll(r[col["duid"]], ":", ""))
		if err != nil {
			t.Fatalf("%s: duid %q: %v", path, r[col["duid"]], err)
		}
		out[p] = DUID(d).String() + "/" + r[col["iaid"]]
	}
	return out
}

var (
	dhcpdIAPD   = regexp.MustCompile(`^ia-pd "((?:[^"\\]|\\.)*)" \{`)
	dhcpdPrefix = regexp.MustCompile(`^\s*iaprefix (\S+) \{`)
	dhcpdState  = regexp.MustCompile(`^\s*binding state (\w+);`)
)

// dhcpdBindings reads dhcpd's lease file (append-only, last record per
// prefix wins) and returns the active prefixes as prefix → "DUID/IAID".
// The ia-pd key is the IAID in host byte order followed by the DUID, with
// non-printable bytes written as \ooo.
func dhcpdBindings(t *testing.T, path string) map[netip.Prefix]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type rec struct{ owner, state string }
	last := map[netip.Prefix]rec{}
	var owner string
	var cur netip.Prefix
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := dhcpdIAPD.FindStringSubmatch(line); m != nil {
			key, err := unescapeDhcpd(m[1])
			if err != nil || len(key) < 5 {
				t.Fatalf("%s: ia-pd key %q: %v", path, m[1], err)
			}
			owner = DUID(key[4:]).String() + "/" + strconv.FormatUint(uint64(binary.LittleEndian.Uint32(key[:4])), 10)
			continue
		}
		if m := dhcpdPrefix.FindStringSubmatch(line); m != nil {
			p, err := netip.ParsePrefix(m[1])
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			cur = p
			last[p] = rec{owner: owner}
			continue
		}
		if m := dhcpdState.FindStringSubmatch(line); m != nil && cur.IsValid() {
			r := last[cur]
			r.state = m[1]
			last[cur] = r
			cur = netip.Prefix{}
		}
	}
	out := map[netip.Prefix]string{}
	for p, r := range last {
		if r.state == "active" {
			out[p] = r.owner
		}
	}
	return out
}

func unescapeDhcpd(s string) ([]byte, error) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '7' {
			if i+3 >= len(s) {
				return nil, fmt.Errorf("short escape")
			}
			v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
			if err != nil {
				return nil, err
			}
			b = append(b, byte(v))
			i += 3
			continue
		}
		if i+1 < len(s) {
			b = append(b, s[i+1])
			i++
		}
	}
	return b, nil
}

package pdha

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/v6cni/v6cni/internal/testutil/netlab"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// This file: renumbering of the cluster's delegated prefix under running
// pods (docs/design/pd-ha-renumbering.md §3, §5.2 renumber-*,
// tcp-survives, slaac-renumber). The server starts delegating from
// another pool; the old prefix P1 is replaced by P2 from it:
//
//   - TestRenumberExpiry (dhcpd): the server forgets P1 (restarted with
//     the new pool), the leader's Renew gets NoBinding, its Request P2;
//     P1 is not renewed and runs out: make-before-break. (dhcpd answers
//     every Renew that still lists P1 NoBinding: each one of the overlap
//     is followed by a Request that renews P2.)
//   - TestRenumberAbrupt (Kea): Kea reloads a new pool; the Reply to the
//     next Renew carries P2 and P1 with lifetimes 0: P1 goes at once.
//   - TestRenumberSLAAC (dhcpd): as Expiry on a network in ipv6Mode slaac:
//     the RAs carry P1 with preferred lifetime 0 and P2; the pods' kernels
//     form their P2 addresses.
//   - TestRenumberTakeover (dhcpd): as Expiry, the leader's ipamd killed
//     and restarted during the overlap.
//
// Each logs one line starting "RENUM-FIGURES": the time from the Reply
// carrying P2 to every pod holding a preferred P2 address, P1's removal
// against its valid end and (Expiry) the last echo of a TCP connection
// opened before the change against P1's valid end.

// newPool is the pool the server delegates from after the change; the
// labs start with netlab's default 2001:db8:a00::/48.
var newPool = netip.MustParsePrefix("2001:db8:b00::/48")

// expiryLifetimes are the server's lifetimes for the make-before-break
// tests: P1 is renewed every 3 s until the change, so it has at most 20 s
// left when P2 comes.
var expiryLifetimes = netlab.DHCPOptions{Preferred: 12 * time.Second, Valid: 20 * time.Second, T1: 3 * time.Second, T2: 5 * time.Second}

// scenario is one renumbering test.
type scenario struct {
	name  string
	kind  netlab.DHCPKind
	nodes int
	// podsPerNode: pods on every node before the change (default 1).
	podsPerNode int
	// mode is the pods' ipv6Mode ("": static).
	mode string
	// dhcp: the server's options at the start.
	dhcp netlab.DHCPOptions
	// change makes the server delegate from newPool.
	change func(ctx context.Context, lab *netlab.Lab) error
	// overlap: P1 stays, deprecated, until its valid end (make-before-
	// break); false: it goes at the Reply that brings P2.
	overlap bool
	// tcp: open a TCP connection from each pod to a host behind the
	// router before the change and follow it.
	tcp bool
	// metricKind, when set, is the pd_renumberings_total kind every node
	// must count.
	metricKind string
	// midway, when set, runs during the overlap, once every pod holds P2
	// and P1 deprecated; it returns the nodes whose ipamd it restarted
	// (their counters start again from 0).
	midway func(t *testing.T, ctx context.Context, lab *netlab.Lab, w *watcher) (restarted []string)
}

// TestRenumberExpiry: dhcpd forgets P1 and delegates P2 from a new pool;
// P1 runs out. In every pod's kernel: P2 preferred and P1 deprecated,
// then only P2; a TCP connection opened before keeps echoing until P1
// goes, new ones leave from P2; the router's table moves from P1's blocks
// to P2's; a new pod gets P2; CHECK and `ipamd check` pass; `ipamd pd`
// shows P1 deprecated and P2 current; no Solicit.
func TestRenumberExpiry(t *testing.T) {
	t.Parallel()
	runScenario(t, scenario{
		name: "expiry", kind: netlab.Dhcpd, nodes: 2, podsPerNode: 3, dhcp: expiryLifetimes,
		change: func(_ context.Context, lab *netlab.Lab) error {
			return lab.DHCP.Restart(netlab.DHCPOptions{Pool: newPool})
		},
		overlap: true, tcp: true,
	})
}

// TestRenumberAbrupt: Kea reloads a new pool; its Reply to the next Renew
// brings P2 and gives P1 lifetimes 0: pods get P2 preferred and lose P1
// at once; every node counts pd_renumberings_total{kind="abrupt"}.
func TestRenumberAbrupt(t *testing.T) {
	t.Parallel()
	runScenario(t, scenario{
		name: "abrupt", kind: netlab.Kea, nodes: 2, podsPerNode: 3,
		dhcp: netlab.DHCPOptions{T1: 3 * time.Second, T2: 5 * time.Second},
		change: func(ctx context.Context, lab *netlab.Lab) error {
			return lab.DHCP.Reconfigure(ctx, netlab.DHCPOptions{Pool: newPool})
		},
		metricKind: "abrupt",
	})
}

// TestRenumberSLAAC: TestRenumberExpiry's change on a network in ipv6Mode
// slaac: rdisc6 in a pod sees P1 with preferred lifetime 0 and P2; the
// pods' kernels form their P2 addresses (the EUI-64 the record says).
func TestRenumberSLAAC(t *testing.T) {
	t.Parallel()
	runScenario(t, scenario{
		name: "slaac", kind: netlab.Dhcpd, nodes: 2, podsPerNode: 2, mode: "slaac", dhcp: expiryLifetimes,
		change: func(_ context.Context, lab *netlab.Lab) error {
			return lab.DHCP.Restart(netlab.DHCPOptions{Pool: newPool})
		},
		overlap: true,
	})
}

// TestRenumberTakeover: TestRenumberExpiry with the leader's ipamd killed
// (kill -9) during the overlap and started again: the new leader Renews
// the binding (P2, P1 still listed), the restarted ipamd takes up the
// renumbering from etcd (PendingRenumbers, Detect with no previous
// binding) without undoing it: P1 still goes at its valid end, the TCP
// connections hold until then, no Solicit.
func TestRenumberTakeover(t *testing.T) {
	t.Parallel()
	runScenario(t, scenario{
		name: "expiry-takeover", kind: netlab.Dhcpd, nodes: 2, dhcp: expiryLifetimes,
		change: func(_ context.Context, lab *netlab.Lab) error {
			return lab.DHCP.Restart(netlab.DHCPOptions{Pool: newPool})
		},
		overlap: true, tcp: true,
		midway: func(t *testing.T, ctx context.Context, lab *netlab.Lab, w *watcher) []string {
			leader, before := waitSettled(t, ctx, lab)
			victim := nodeByName(lab, leader.node)
			t0 := time.Now()
			victim.Kill()
			to := w.waitTakeover(t, t0, leader.key, leader.node, before.ReplyTime, waitLong)
			var held []netip.Prefix
			for _, p := range to.binding.Prefixes {
				held = append(held, p.Prefix)
			}
			if !slices.ContainsFunc(held, func(p netip.Prefix) bool { return newPool.Contains(p.Addr()) }) {
				t.Errorf("the new leader %s holds %v, want P2 of %s", to.newLeader, held, newPool)
			}
			t.Logf("during the overlap: %s killed, %s renewed %v after %v", victim.Name, to.newLeader, held, to.saved.Sub(t0).Round(time.Millisecond))
			if err := victim.Start(); err != nil {
				t.Fatal(err)
			}
			if err := lab.Router.WaitEstablished(lab.Nodes, waitLong); err != nil {
				t.Fatal(err)
			}
			return []string{victim.Name}
		},
	})
}

func runScenario(t *testing.T, sc scenario) {
	lab := netlab.New(t, netlab.Options{Nodes: sc.nodes, DHCP: sc.kind, DHCPServer: sc.dhcp, RestartTime: 10,
		PD: netlab.ClusterPD(segment, delegatedLen, subnetLen)})
	t.Logf("lab %s up (%s, %d nodes): %s", lab.ID, sc.kind, sc.nodes, lab.Timings)
	ctx := testCtx(t)
	waitBinding(t, ctx, lab)
	var pods []*netlab.Pod
	for range max(sc.podsPerNode, 1) {
		pods = append(pods, addPodsMode(t, ctx, lab, sc.mode)...)
	}
	_, before := waitSettled(t, ctx, lab)
	p1 := before.prefix()
	for _, p := range pods {
		if !p1.Contains(p.Addr(6)) {
			t.Fatalf("pod %s: address %s not in the delegated %s", p.ID, p.Addr(6), p1)
		}
	}
	if newPool.Overlaps(p1) {
		t.Fatalf("P1 %s in the new pool %s", p1, newPool)
	}

	var srv *echoServer
	var conns []*echoConn
	farEnd := lab.Router.Addr6
	if sc.tcp {
		host, err := lab.Router.AddHost()
		if err != nil {
			t.Fatal(err)
		}
		srv = startEcho(t, host.NS, host.Addr6)
		farEnd = host.Addr6
		for _, p := range pods {
			c, err := dialEcho(p, srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.stop)
			conns = append(conns, c)
			if from := srv.waitPeer(t, c.local); from.Addr() != p.Addr(6) {
				t.Fatalf("pod %s: the host sees the connection from %s, want %s", p.ID, from, p.Addr(6))
			}
			go c.run(200 * time.Millisecond)
		}
	}
	msgs := messages(t, lab)
	kindsBefore := renumberings(t, ctx, lab)

	w := watch(t, lab)
	stored, err := lab.Etcd.Client.Get(ctx, bindingKey)
	if err != nil || len(stored.Kvs) == 0 {
		t.Fatalf("stored binding: %v", err)
	}
	obs := observe(t, lab, pods)
	changed := time.Now()
	if err := sc.change(ctx, lab); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: server now delegates from %s", sc.kind, newPool)

	// The Reply that brought P2: the first binding saved with it.
	var reply time.Time
	var p2 netip.Prefix
	var p1ValidEnd time.Time
	if !netlab.Poll(waitLong, 50*time.Millisecond, func() bool {
		for _, e := range w.since(changed) {
			if !e.put || e.key != bindingKey {
				continue
			}
			var b storedBinding
			if json.Unmarshal(e.value, &b) != nil {
				continue
			}
			for _, p := range b.Prefixes {
				if newPool.Contains(p.Prefix.Addr()) && p.Valid > 0 {
					reply, p2 = b.ReplyTime, p.Prefix
					return true
				}
			}
		}
		return false
	}) {
		t.Fatalf("no binding with a prefix of %s within %v of the change; events: %s", newPool, waitLong, w.dump(changed))
	}
	p1ValidEnd = p1End(t, stored.Kvs[0].Value, w, p1)
	t.Logf("P2 %s arrived with the Reply at +%v; P1 %s valid until +%v", p2, reply.Sub(changed).Round(time.Millisecond),
		p1, p1ValidEnd.Sub(changed).Round(time.Millisecond))

	restarted := map[string]bool{}
	// Every pod: P2 preferred (and, make-before-break, P1 deprecated).
	want := make([]netip.Addr, len(pods))
	for i, p := range pods {
		want[i] = successor(p.Addr(6), p2)
	}
	s := obs.wait(t, waitLong, "every pod holds its P2 address preferred", func(s *sample) bool {
		for i, p := range pods {
			if a, ok := s.addr(i, want[i]); !ok || a.deprecated() {
				return false
			}
			// Make-before-break: P1 deprecated by the same step (the
			// netns job, or the RA that brought P2); checked below.
			if a, ok := s.addr(i, p.Addr(6)); sc.overlap && ok && !a.deprecated() {
				return false
			}
		}
		return true
	})
	allPreferred := obs.firstAll(func(s *sample, i int) bool {
		a, ok := s.addr(i, want[i])
		return ok && !a.deprecated()
	})
	if sc.overlap {
		for i, p := range pods {
			if a, ok := s.addr(i, p.Addr(6)); !ok || !a.deprecated() || a.Valid == forever {
				t.Errorf("pod %s: P2 %s preferred, P1 %s: %+v (present %t), want it deprecated with a finite valid lifetime",
					p.ID, want[i], p.Addr(6), a, ok)
			}
		}
		requirePDStates(t, ctx, lab, p1, p2)
		if sc.midway != nil {
			for _, n := range sc.midway(t, ctx, lab, w) {
				restarted[n] = true
			}
		}
	} else {
		obs.wait(t, waitLong, "every pod lost its P1 address", func(s *sample) bool {
			for i, p := range pods {
				if _, ok := s.addr(i, p.Addr(6)); ok {
					return false
				}
			}
			return true
		})
	}
	for i, p := range pods {
		if got := s.addrsIn(i, p2); len(got) != 1 {
			t.Errorf("pod %s: addresses in P2 %s: %v, want exactly %s (P1's interface ID)", p.ID, p2, got, want[i])
		}
	}
	if sc.mode == "slaac" {
		requireRA(t, ctx, pods[0], p1, p2)
	}

	// New connections leave from P2.
	for i, p := range pods {
		out, err := p.Exec(ctx, "ip", "-6", "route", "get", farEnd.String())
		if err != nil || !strings.Contains(string(out), " src "+want[i].String()+" ") {
			t.Errorf("pod %s: route to %s %q (%v), want source %s", p.ID, farEnd, out, err, want[i])
		}
		if srv != nil {
			c, err := dialEcho(p, srv.addr)
			if err != nil {
				t.Errorf("pod %s: a new connection: %v", p.ID, err)
				continue
			}
			if from := srv.waitPeer(t, c.local); from.Addr() != want[i] {
				t.Errorf("pod %s: the host sees a new connection from %s, want P2's %s", p.ID, from, want[i])
			}
			c.stop()
		}
	}
	for _, p := range pods {
		if err := p.Check(ctx); err != nil {
			t.Errorf("CHECK of renumbered pod %s (prevResult with P1's %s): %v", p.ID, p.Addr(6), err)
		}
	}
	fresh, err := lab.Nodes[0].AddPDPodMode(ctx, podSubnet(lab.Nodes[0]), sc.mode)
	if err != nil {
		t.Fatalf("a new pod after the change: %v", err)
	}
	if !p2.Contains(fresh.Addr(6)) {
		t.Errorf("new pod %s: address %s, want one of P2 %s", fresh.ID, fresh.Addr(6), p2)
	}
	requireClean(t, lab)

	// P1 runs out: only P2 in the pods, only P2's blocks at the router.
	obs.wait(t, waitLong, "no pod holds a P1 address", func(s *sample) bool {
		for i := range pods {
			if len(s.addrsIn(i, p1)) > 0 {
				return false
			}
		}
		return true
	})
	p1Gone := obs.firstAll(func(s *sample, i int) bool { return len(s.addrsIn(i, p1)) == 0 })
	all := append(pods[:len(pods):len(pods)], fresh)
	if _, _, err := lab.Router.WaitRoutes(waitLong, func(m map[netip.Prefix]netip.Addr) bool {
		for pfx := range m {
			if p1.Overlaps(pfx) {
				return false
			}
		}
		for i, p := range all {
			a := fresh.Addr(6)
			if i < len(pods) {
				a = want[i]
			}
			if nh, ok := lookup(m, a); !ok || nh != p.Node.Addr6 {
				return false
			}
		}
		return true
	}); err != nil {
		t.Errorf("router: P1's blocks withdrawn and P2's announced: %v", err)
	}
	obs.stop()
	for i, p := range pods {
		if a, ok := obs.last().addr(i, want[i]); !ok || a.deprecated() {
			t.Errorf("pod %s: after P1's end its P2 address %s is %+v (present %t), want preferred", p.ID, want[i], a, ok)
		}
	}

	// The TCP connections: every echo answered while P1 was still in the
	// pod and routed at the router; none after it was gone.
	var lastEcho time.Time
	for i, c := range conns {
		failed, last, echoes, err := c.waitFailed(30 * time.Second)
		if failed.IsZero() {
			t.Errorf("pod %s: the connection from P1's %s still echoes after P1's end (%d echoes)", pods[i].ID, pods[i].Addr(6), echoes)
			continue
		}
		present := obs.lastWith(i, func(s *sample, i int) bool {
			_, ok := s.addr(i, pods[i].Addr(6))
			_, routed := lookup(s.routes, pods[i].Addr(6))
			return ok && routed
		})
		// An echo in flight when P1 went is lost: one interval of slack.
		if failed.Before(present.Add(-time.Second)) {
			t.Errorf("pod %s: the connection from P1 stopped echoing at +%v (%v) while P1 was still in the pod and routed at +%v",
				pods[i].ID, failed.Sub(changed).Round(time.Millisecond), err, present.Sub(changed).Round(time.Millisecond))
		}
		if !last.After(allPreferred) {
			t.Errorf("pod %s: the connection from P1 echoed last at +%v, before every pod held P2 (+%v)",
				pods[i].ID, last.Sub(changed).Round(time.Millisecond), allPreferred.Sub(changed).Round(time.Millisecond))
		}
		t.Logf("pod %s: %d echoes, last at P1's valid end %+v, then %v", pods[i].ID, echoes, last.Sub(p1ValidEnd).Round(time.Millisecond), err)
		if lastEcho.IsZero() || last.Before(lastEcho) {
			lastEcho = last
		}
	}

	after := messages(t, lab)
	if n := after["solicit"] - msgs["solicit"]; n != 0 {
		t.Errorf("%d Solicit(s) reached the server during the renumbering, want 0 (messages before %v, after %v)", n, msgs, after)
	}
	kindsAfter := renumberings(t, ctx, lab)
	for _, n := range lab.Nodes {
		if restarted[n.Name] {
			continue // a restart re-derives its work and does not count it
		}
		k := sc.metricKind
		if k == "" {
			k = "*"
		}
		if kindsAfter[n.Name][k] <= kindsBefore[n.Name][k] {
			t.Errorf("%s: pd_renumberings_total{kind=%q} %v before, %v after: not incremented", n.Name, k, kindsBefore[n.Name], kindsAfter[n.Name])
		}
	}
	for _, p := range all {
		if err := p.Check(ctx); err != nil {
			t.Errorf("CHECK of pod %s after P1's end: %v", p.ID, err)
		}
	}
	requireClean(t, lab)
	for _, n := range lab.Nodes {
		if v, _ := metric(t, ctx, n, "v6cni_ipamd_pd_renumber_errors_total"); v != 0 {
			t.Errorf("%s: pd_renumber_errors_total %v, want 0", n.Name, v)
		}
		if v, _ := metric(t, ctx, n, "v6cni_ipamd_pd_renumber_pending_attachments"); v != 0 {
			t.Errorf("%s: pd_renumber_pending_attachments %v, want 0", n.Name, v)
		}
	}

	var ipamdSecs []string
	for _, n := range lab.Nodes {
		// Its own clock: first netns job submitted → last one done.
		v, ok := metric(t, ctx, n, "v6cni_ipamd_pd_renumber_seconds")
		if !ok {
			ipamdSecs = append(ipamdSecs, n.Name+"=none")
			continue
		}
		ipamdSecs = append(ipamdSecs, fmt.Sprintf("%s=%v", n.Name, time.Duration(v*float64(time.Second)).Round(time.Microsecond)))
	}
	line := fmt.Sprintf("RENUM-FIGURES %s server=%s nodes=%d pods=%d mode=%s reply_to_all_p2_preferred=%v",
		sc.name, sc.kind, sc.nodes, len(pods), orStatic(sc.mode), allPreferred.Sub(reply).Round(time.Millisecond))
	if sc.overlap {
		// P1 gone from every pod, against the valid end the server gave.
		line += fmt.Sprintf(" overlap=%v p1_gone_vs_valid_end=%+v", p1ValidEnd.Sub(reply).Round(time.Millisecond),
			p1Gone.Sub(p1ValidEnd).Round(time.Millisecond))
	} else {
		// The server ended P1 with that Reply.
		line += fmt.Sprintf(" reply_to_all_p1_gone=%v", p1Gone.Sub(reply).Round(time.Millisecond))
	}
	if len(conns) > 0 {
		line += fmt.Sprintf(" last_echo_vs_p1_valid_end=%+v", lastEcho.Sub(p1ValidEnd).Round(time.Millisecond))
	}
	sent := map[string]uint64{}
	for k, v := range after {
		if d := v - msgs[k]; d > 0 {
			sent[k] = d
		}
	}
	line += fmt.Sprintf(" pd_renumber_seconds=%s kinds=%v solicits=%d client_messages_since_change=%v",
		strings.Join(ipamdSecs, ","), kindsAfter, after["solicit"]-msgs["solicit"], sent)
	t.Log(line)

	// DEL of renumbered pods releases what they hold: no lease left, the
	// store consistent.
	for _, p := range all {
		if err := p.Del(ctx); err != nil {
			t.Errorf("DEL of renumbered pod %s: %v", p.ID, err)
		}
	}
	name, _ := netlab.PDNetwork(podSubnet(lab.Nodes[0]))
	for _, n := range lab.Nodes {
		if ls, err := n.Client.Leases(ctx, name); err != nil || len(ls) != 0 {
			t.Errorf("%s: leases of %s after every DEL: %+v (%v), want none", n.Name, name, ls, err)
		}
	}
	requireClean(t, lab)
	logProblems(t, lab)
	// What each node's client exchanged (with dhcpd, a Renew listing P1
	// beside P2 is answered NoBinding, so each Renew of the overlap is
	// followed by a Request; never a Solicit).
	for _, n := range lab.Nodes {
		out, err := n.Exec(ctx, "curl", "-sf", "http://[::1]:9655/metrics")
		if err != nil {
			t.Errorf("metrics of %s: %v", n.Name, err)
			continue
		}
		var ex []string
		for _, l := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutPrefix(l, "v6cni_ipamd_pd_exchanges_total"); ok {
				ex = append(ex, rest)
			}
		}
		t.Logf("%s: pd_exchanges_total %s", n.Name, strings.Join(ex, " "))
	}
}

// logProblems logs the warnings and errors of every node's ipamd log.
func logProblems(t *testing.T, lab *netlab.Lab) {
	t.Helper()
	for _, n := range lab.Nodes {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Logf("%s: %v", n.Name, err)
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			t.Logf("%s: %d warnings/errors in ipamd's log:\n%s", n.Name, len(lines), strings.Join(lines, "\n"))
		}
	}
}

func orStatic(mode string) string {
	if mode == "" {
		return "static"
	}
	return mode
}

// addPodsMode is addPods with bridge-v6's ipv6Mode mode.
func addPodsMode(t *testing.T, ctx context.Context, lab *netlab.Lab, mode string) []*netlab.Pod {
	t.Helper()
	var pods []*netlab.Pod
	for _, n := range lab.Nodes {
		var p *netlab.Pod
		var err error
		if !netlab.Poll(waitLong, 200*time.Millisecond, func() bool {
			p, err = n.AddPDPodMode(ctx, podSubnet(n), mode)
			return err == nil || !tryAgain(err)
		}) || err != nil {
			t.Fatalf("pd-ipam pod (%s) on %s: %v", orStatic(mode), n.Name, err)
		}
		t.Logf("pod %s (%s) on %s: %v", p.ID, orStatic(mode), n.Name, p.Addrs)
		pods = append(pods, p)
	}
	if _, _, err := lab.Router.WaitRoutes(waitLong, func(m map[netip.Prefix]netip.Addr) bool {
		for _, p := range pods {
			if !routed(m, p) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return pods
}

// successor is a's address in p2: P2's bits up to its length, a's after
// (the interface ID and the block's offset kept, plan §3.1).
func successor(a netip.Addr, p2 netip.Prefix) netip.Addr {
	x, y := a.As16(), p2.Masked().Addr().As16()
	for i := range p2.Bits() {
		m := byte(0x80 >> (i % 8))
		x[i/8] = x[i/8]&^m | y[i/8]&m
	}
	return netip.AddrFrom16(x)
}

// lookup is the next hop of the most specific route of m covering a.
func lookup(m map[netip.Prefix]netip.Addr, a netip.Addr) (netip.Addr, bool) {
	best := -1
	var nh netip.Addr
	for p, h := range m {
		if p.Contains(a) && p.Bits() > best {
			best, nh = p.Bits(), h
		}
	}
	return nh, best >= 0
}

// storedBinding is the segment's binding as stored: dhcp6pd's with the
// leader's fields.
type storedBinding struct {
	dhcp6pd.Binding
	Leader string `json:"leader"`
}

// p1End is P1's valid end as the last binding that lists it says: the
// stored binding before the change (before) or one saved since.
func p1End(t *testing.T, before []byte, w *watcher, p1 netip.Prefix) time.Time {
	t.Helper()
	var end time.Time
	take := func(v []byte) {
		var b storedBinding
		if json.Unmarshal(v, &b) != nil {
			return
		}
		for _, p := range b.Prefixes {
			if p.Prefix == p1 && p.Valid > 0 && p.ValidUntil().After(end) {
				end = p.ValidUntil()
			}
		}
	}
	take(before)
	for _, e := range w.since(time.Time{}) {
		if e.put && e.key == bindingKey {
			take(e.value)
		}
	}
	if end.IsZero() {
		t.Fatalf("no binding lists P1 %s", p1)
	}
	return end
}

// requirePDStates polls `ipamd pd -o json` on every node until it shows
// P1 deprecated and P2 current.
func requirePDStates(t *testing.T, ctx context.Context, lab *netlab.Lab, p1, p2 netip.Prefix) {
	t.Helper()
	for _, n := range lab.Nodes {
		var out []byte
		var st ipamapi.PDState
		if !netlab.Poll(10*time.Second, 100*time.Millisecond, func() bool {
			var err error
			if out, err = n.Ipamd(ctx, "pd", "-o", "json"); err != nil || json.Unmarshal(out, &st) != nil {
				return false
			}
			states := map[string]string{}
			for _, p := range st.Prefixes {
				states[p.Prefix] = p.State
			}
			return states[p1.String()] == "deprecated" && states[p2.String()] == "current"
		}) {
			t.Errorf("%s: `ipamd pd` does not show P1 %s deprecated and P2 %s current during the overlap:\n%s", n.Name, p1, p2, out)
			continue
		}
		table, _ := n.Ipamd(ctx, "pd")
		t.Logf("%s: ipamd pd during the overlap:\n%s", n.Name, table)
	}
}

// renumberings is every node's pd_renumberings_total by kind ("*": the
// sum).
func renumberings(t *testing.T, ctx context.Context, lab *netlab.Lab) map[string]map[string]float64 {
	t.Helper()
	out := map[string]map[string]float64{}
	for _, n := range lab.Nodes {
		m := map[string]float64{}
		for _, k := range []string{"graceful", "rebind", "abrupt", "expiry"} {
			v, _ := metric(t, ctx, n, "v6cni_ipamd_pd_renumberings_total", `kind="`+k+`"`)
			m[k] = v
			m["*"] += v
		}
		out[n.Name] = m
	}
	return out
}

var (
	rdiscPrefix = regexp.MustCompile(`^\s*Prefix\s*:\s*(\S+)`)
	rdiscPref   = regexp.MustCompile(`^\s*Pref\. time\s*:\s*(\S+)`)
)

// requireRA asks for an RA in pod (rdisc6) and asserts it carries P1's
// /64 with preferred lifetime 0 and P2's with a positive one.
func requireRA(t *testing.T, ctx context.Context, pod *netlab.Pod, p1, p2 netip.Prefix) {
	t.Helper()
	out, err := pod.Exec(ctx, "rdisc6", "-1", "-w", "3000", "eth0")
	if err != nil {
		t.Errorf("rdisc6 in pod %s: %v", pod.ID, err)
		return
	}
	pref := map[netip.Prefix]string{}
	var cur netip.Prefix
	for _, line := range strings.Split(string(out), "\n") {
		if m := rdiscPrefix.FindStringSubmatch(line); m != nil {
			cur, _ = netip.ParsePrefix(m[1])
		} else if m := rdiscPref.FindStringSubmatch(line); m != nil && cur.IsValid() {
			pref[cur] = m[1]
		}
	}
	var old, cur2 bool
	for p, v := range pref {
		if p1.Contains(p.Addr()) {
			old = v == "0"
		}
		if p2.Contains(p.Addr()) {
			n, err := strconv.ParseUint(v, 10, 32)
			cur2 = v == "infinite" || err == nil && n > 0
		}
	}
	if !old || !cur2 {
		t.Errorf("pod %s: the RA does not carry P1 (%s) with preferred 0 and P2 (%s) preferred: %v\n%s", pod.ID, p1, p2, pref, out)
		return
	}
	t.Logf("pod %s: RA prefixes and preferred lifetimes %v", pod.ID, pref)
}

// kaddr is one global address of a pod's eth0 as its kernel shows it.
type kaddr struct {
	Local     netip.Addr `json:"local"`
	PrefixLen int        `json:"prefixlen"`
	Preferred uint32     `json:"preferred_life_time"`
	Valid     uint32     `json:"valid_life_time"`
	Tentative bool       `json:"tentative"`
	Dep       bool       `json:"deprecated"`
}

// forever is the kernel's infinite lifetime.
const forever = 1<<32 - 1

func (a kaddr) deprecated() bool { return a.Dep || a.Preferred == 0 || a.Tentative }

// podAddrs are the global IPv6 addresses of the pod's eth0.
func podAddrs(ctx context.Context, nsName string) ([]kaddr, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", nsName, "-6", "-j", "addr", "show", "dev", "eth0", "scope", "global").Output()
	if err != nil {
		return nil, fmt.Errorf("ip -n %s addr: %w", nsName, err)
	}
	var links []struct {
		AddrInfo []kaddr `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("ip -n %s addr: %w: %s", nsName, err, out)
	}
	var as []kaddr
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Local.IsValid() {
				as = append(as, a)
			}
		}
	}
	return as, nil
}

// sample is one look at every pod's addresses and the router's table.
type sample struct {
	// at: when each pod's addresses were read.
	at     []time.Time
	pods   [][]kaddr
	routes map[netip.Prefix]netip.Addr
	// start: before the first read.
	start time.Time
}

func (s *sample) addr(i int, a netip.Addr) (kaddr, bool) {
	for _, x := range s.pods[i] {
		if x.Local == a {
			return x, true
		}
	}
	return kaddr{}, false
}

func (s *sample) addrsIn(i int, p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, x := range s.pods[i] {
		if p.Contains(x.Local) {
			out = append(out, x.Local)
		}
	}
	return out
}

// observer reads every pod's addresses and the router's table in a loop
// (about every 100 ms) from the change on: the tests' waits and figures
// come from its samples.
type observer struct {
	pods []*netlab.Pod
	lab  *netlab.Lab

	mu      sync.Mutex
	samples []*sample
	err     error
	quit    chan struct{}
	done    chan struct{}
}

func observe(t *testing.T, lab *netlab.Lab, pods []*netlab.Pod) *observer {
	o := &observer{pods: pods, lab: lab, quit: make(chan struct{}), done: make(chan struct{})}
	go o.loop()
	t.Cleanup(o.stop)
	return o
}

func (o *observer) loop() {
	defer close(o.done)
	for {
		s := &sample{start: time.Now()}
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, p := range o.pods {
			as, e := podAddrs(ctx, p.NS)
			s.pods = append(s.pods, as)
			s.at = append(s.at, time.Now())
			err = errors.Join(err, e)
		}
		cancel()
		routes, e := o.lab.Router.Routes()
		s.routes = routes
		err = errors.Join(err, e)
		o.mu.Lock()
		if err != nil {
			o.err = err
		} else {
			o.samples = append(o.samples, s)
		}
		o.mu.Unlock()
		select {
		case <-o.quit:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (o *observer) stop() {
	select {
	case <-o.quit:
	default:
		close(o.quit)
	}
	<-o.done
}

func (o *observer) last() *sample {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.samples) == 0 {
		return &sample{pods: make([][]kaddr, len(o.pods))}
	}
	return o.samples[len(o.samples)-1]
}

// wait waits until a sample satisfies cond and returns it.
func (o *observer) wait(t *testing.T, timeout time.Duration, what string, cond func(*sample) bool) *sample {
	t.Helper()
	var s *sample
	if !netlab.Poll(timeout, 50*time.Millisecond, func() bool {
		s = o.last()
		return len(s.pods) == len(o.pods) && cond(s)
	}) {
		o.mu.Lock()
		err := o.err
		o.mu.Unlock()
		t.Fatalf("not within %v: %s (last sample: %+v; last error: %v)", timeout, what, s.pods, err)
	}
	return s
}

// firstAll is when every pod first satisfied cond (the latest of the
// pods' first reads that did; zero if one never did).
func (o *observer) firstAll(cond func(s *sample, i int) bool) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var latest time.Time
	for i := range o.pods {
		var first time.Time
		for _, s := range o.samples {
			if cond(s, i) {
				first = s.at[i]
				break
			}
		}
		if first.IsZero() {
			return time.Time{}
		}
		if first.After(latest) {
			latest = first
		}
	}
	return latest
}

// lastWith is the start of the last sample in which pod i satisfied cond
// (zero if none).
func (o *observer) lastWith(i int, cond func(s *sample, i int) bool) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := len(o.samples) - 1; k >= 0; k-- {
		if cond(o.samples[k], i) {
			return o.samples[k].start
		}
	}
	return time.Time{}
}

// echoServer is a TCP echo server in a netns (a host behind the router),
// recording whom it accepted from.
type echoServer struct {
	addr netip.AddrPort
	ln   net.Listener

	mu    sync.Mutex
	peers map[netip.AddrPort]bool // the clients' addresses and ports
	conns []net.Conn
}

// inNetns runs f with the calling goroutine's thread in netns nsName:
// sockets f opens belong to that netns.
func inNetns(nsName string, f func() error) error {
	n, err := ns.GetNS("/run/netns/" + nsName)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error { return f() })
}

func startEcho(t *testing.T, nsName string, addr netip.Addr) *echoServer {
	t.Helper()
	s := &echoServer{peers: map[netip.AddrPort]bool{}}
	if err := inNetns(nsName, func() error {
		var err error
		s.ln, err = net.Listen("tcp6", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatalf("echo server in %s: %v", nsName, err)
	}
	s.addr = netip.MustParseAddrPort(s.ln.Addr().String())
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			from := netip.MustParseAddrPort(c.RemoteAddr().String())
			s.mu.Lock()
			s.peers[from] = true
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go func() { _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() {
		s.ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

// waitPeer waits until the server accepted the connection whose client
// end is local (no NAT anywhere: the server sees the same address and
// port) and returns that peer address.
func (s *echoServer) waitPeer(t *testing.T, local netip.AddrPort) netip.AddrPort {
	t.Helper()
	var peers []netip.AddrPort
	if !netlab.Poll(10*time.Second, 10*time.Millisecond, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.peers[local]
		if !ok {
			peers = peers[:0]
			for from := range s.peers {
				peers = append(peers, from)
			}
		}
		return ok
	}) {
		t.Fatalf("echo server: no connection from %s (accepted from %v)", local, peers)
	}
	return local
}

// echoConn is a TCP connection from a pod that sends an 8-byte counter
// and waits for its echo, over and over, until one is not answered.
type echoConn struct {
	c     net.Conn
	local netip.AddrPort

	mu             sync.Mutex
	echoes         int
	last, failedAt time.Time
	err            error
	quit, done     chan struct{}
	once           sync.Once
}

// echoTimeout: an echo not back within it counts as lost.
const echoTimeout = 5 * time.Second

func dialEcho(p *netlab.Pod, to netip.AddrPort) (*echoConn, error) {
	var c net.Conn
	if err := inNetns(p.NS, func() error {
		var err error
		c, err = net.DialTimeout("tcp6", to.String(), 10*time.Second)
		return err
	}); err != nil {
		return nil, fmt.Errorf("pod %s: connect to %s: %w", p.ID, to, err)
	}
	return &echoConn{c: c, local: netip.MustParseAddrPort(c.LocalAddr().String()), quit: make(chan struct{}), done: make(chan struct{})}, nil
}

// run echoes every interval until an echo fails or stop.
func (e *echoConn) run(interval time.Duration) {
	defer close(e.done)
	var buf, back [8]byte
	for i := uint64(0); ; i++ {
		binary.BigEndian.PutUint64(buf[:], i)
		sent := time.Now()
		_ = e.c.SetDeadline(sent.Add(echoTimeout))
		_, err := e.c.Write(buf[:])
		if err == nil {
			_, err = io.ReadFull(e.c, back[:])
		}
		if err == nil && back != buf {
			err = fmt.Errorf("echo %d came back as %x", i, back)
		}
		e.mu.Lock()
		if err != nil {
			e.failedAt, e.err = sent, err
			e.mu.Unlock()
			return
		}
		e.echoes++
		e.last = time.Now()
		e.mu.Unlock()
		select {
		case <-e.quit:
			return
		case <-time.After(interval):
		}
	}
}

// waitFailed waits up to timeout for an echo to fail and returns when the
// failed one was sent (zero: none failed), the last answered one and the
// count.
func (e *echoConn) waitFailed(timeout time.Duration) (failed, last time.Time, echoes int, err error) {
	select {
	case <-e.done:
	case <-time.After(timeout):
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failedAt, e.last, e.echoes, e.err
}

func (e *echoConn) stop() {
	e.once.Do(func() {
		close(e.quit)
		e.c.Close()
	})
}

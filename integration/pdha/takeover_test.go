package pdha

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/netlab"
)

// pingWindow is how many echoes (one per 100 ms) each pinger sends around
// a take-over: from 300 ms before the kill to well past the expected
// renewal (≈ leaseTTL 3 s + 0.6 s, plan §2.5).
const pingWindow = 70

// kill is one take-over's measurement.
type kill struct {
	// takeover: the old leader's election key deleted → the binding saved
	// by the new leader (renewed); total: kill → renewed.
	takeover, total time.Duration
	// ipamd: the new leader's pd_takeover_seconds (election won → first
	// Reply saved, its own clock).
	ipamd time.Duration
	// Echoes to pods on the surviving nodes, and to the killed node's
	// pods (those depend on BGP graceful restart, not on PD).
	sentSurvivors, lostSurvivors, sentKilled, lostKilled int
}

// how a leader is taken away.
type stopKind int

const (
	kill9    stopKind = iota // kill -9 of its ipamd; restarted after the take-over
	powerOff                 // its netns deleted (link cut first); stays off
)

// takeOver takes the current leader away and asserts what §5.2 asks: a
// surviving node Renews the same prefix (no Solicit reaches the server,
// which still holds exactly one binding), pods on surviving nodes answer
// every echo, and every pod keeps its address.
func takeOver(t *testing.T, ctx context.Context, lab *netlab.Lab, pods []*netlab.Pod, w *watcher, how stopKind) kill {
	t.Helper()
	leader, before := waitSettled(t, ctx, lab)
	p := before.prefix()
	lease := requireOneLease(t, ctx, lab, p, "")
	msgs := messages(t, lab)
	victim := nodeByName(lab, leader.node)
	if victim == nil {
		t.Fatalf("leader %q is not a node of the lab", leader.node)
	}

	var survivors []*netlab.Pod
	var pingers, killedPingers []*pinger
	for _, pod := range pods {
		if pod.Node == victim {
			if how == powerOff {
				continue // its pods go with it
			}
			killedPingers = append(killedPingers, startPinger(t, lab, pod.Addr(6), pingWindow))
		} else {
			survivors = append(survivors, pod)
			pingers = append(pingers, startPinger(t, lab, pod.Addr(6), pingWindow))
		}
	}
	time.Sleep(300 * time.Millisecond)

	t0 := time.Now()
	switch how {
	case kill9:
		victim.Kill()
	case powerOff:
		if err := victim.PowerOff(); err != nil {
			t.Fatal(err)
		}
	}
	to := w.waitTakeover(t, t0, leader.key, leader.node, before.ReplyTime, waitLong)
	k := kill{takeover: to.saved.Sub(to.deleted), total: to.saved.Sub(t0)}

	if to.binding.prefix() != p {
		t.Errorf("new leader %s holds %s, want the same prefix %s", to.newLeader, to.binding.prefix(), p)
	}
	after := messages(t, lab)
	if after["solicit"] != msgs["solicit"] {
		t.Errorf("take-over by %s: %d Solicit(s) reached the server, want 0", to.newLeader, after["solicit"]-msgs["solicit"])
	}
	if after["renew"]+after["rebind"] == msgs["renew"]+msgs["rebind"] {
		t.Errorf("take-over by %s: no Renew or Rebind reached the server (messages before %v, after %v)", to.newLeader, msgs, after)
	}
	requireOneLease(t, ctx, lab, p, lease.Owner())
	// The new leader's own account: it began its term with a Renew (or
	// Rebind), never Solicited; pd_takeover_seconds is election won →
	// first Reply saved.
	nl := nodeByName(lab, to.newLeader)
	if nl == nil {
		t.Fatalf("new leader %q is not a node of the lab", to.newLeader)
	}
	if n, _ := metric(t, ctx, nl, "v6cni_ipamd_pd_exchanges_total", `message="solicit"`); n != 0 {
		t.Errorf("new leader %s: pd_exchanges_total{message=\"solicit\"} = %v, want 0", nl.Name, n)
	}
	if n, _ := metric(t, ctx, nl, "v6cni_ipamd_pd_takeovers_total", `exchange="solicit"`); n != 0 {
		t.Errorf("new leader %s: pd_takeovers_total{exchange=\"solicit\"} = %v, want 0", nl.Name, n)
	}
	if sec, ok := metric(t, ctx, nl, "v6cni_ipamd_pd_takeover_seconds"); ok {
		k.ipamd = time.Duration(sec * float64(time.Second))
	} else {
		t.Errorf("new leader %s: no pd_takeover_seconds", nl.Name)
	}

	for _, pg := range pingers {
		s, l := pg.result(t)
		k.sentSurvivors += s
		k.lostSurvivors += l
	}
	for _, pg := range killedPingers {
		s, l := pg.result(t)
		k.sentKilled += s
		k.lostKilled += l
	}
	if k.lostSurvivors > 0 {
		t.Errorf("take-over %s → %s: %d of %d echoes to pods on surviving nodes lost", leader.node, to.newLeader, k.lostSurvivors, k.sentSurvivors)
	}
	t.Logf("take-over %s → %s: key deleted → renewed %v (ipamd's pd_takeover_seconds %v), kill → renewed %v; echoes lost: survivors %d/%d, %s's pods %d/%d; messages %v",
		leader.node, to.newLeader, k.takeover.Round(time.Millisecond), k.ipamd.Round(time.Millisecond), k.total.Round(time.Millisecond),
		k.lostSurvivors, k.sentSurvivors, victim.Name, k.lostKilled, k.sentKilled, after)

	if how == kill9 {
		if err := victim.Start(); err != nil {
			t.Fatal(err)
		}
		if err := lab.Router.WaitEstablished(lab.Nodes, waitLong); err != nil {
			t.Fatal(err)
		}
		requirePodsIntact(t, ctx, lab, pods)
	} else {
		requirePodsIntact(t, ctx, lab, survivors)
	}
	requireClean(t, lab)
	return k
}

// takeOvers runs kills kill -9 take-overs on a new lab and logs their
// figures.
func takeOvers(t *testing.T, kind netlab.DHCPKind, nodes, kills int) {
	lab := newLab(t, kind, nodes)
	ctx := testCtx(t)
	waitBinding(t, ctx, lab)
	pods := addPods(t, ctx, lab)
	w := watch(t, lab)
	var ks []kill
	for i := range kills {
		ks = append(ks, takeOver(t, ctx, lab, pods, w, kill9))
		if t.Failed() {
			t.Fatalf("kill %d of %d failed", i+1, kills)
		}
	}
	logFigures(t, fmt.Sprintf("kill9 server=%s nodes=%d", kind, nodes), ks)
}

// logFigures logs the greppable summary line of a series of take-overs.
func logFigures(t *testing.T, config string, ks []kill) {
	t.Helper()
	var to, total, ipamd []time.Duration
	var sent, lost, sentK, lostK, worstLost int
	for _, k := range ks {
		to = append(to, k.takeover)
		total = append(total, k.total)
		ipamd = append(ipamd, k.ipamd)
		sent += k.sentSurvivors
		lost += k.lostSurvivors
		sentK += k.sentKilled
		lostK += k.lostKilled
		worstLost = max(worstLost, k.lostKilled)
	}
	tm, tw := stats(to)
	km, kw := stats(total)
	im, iw := stats(ipamd)
	t.Logf("PDHA-FIGURES %s takeovers=%d keydel_to_renewed_median=%v keydel_to_renewed_worst=%v kill_to_renewed_median=%v kill_to_renewed_worst=%v "+
		"ipamd_takeover_seconds_median=%v ipamd_takeover_seconds_worst=%v "+
		"lost_pings_survivors=%d/%d lost_pings_killed_node=%d/%d lost_pings_killed_node_worst=%d solicits=0",
		config, len(ks), tm.Round(time.Millisecond), tw.Round(time.Millisecond), km.Round(time.Millisecond), kw.Round(time.Millisecond),
		im.Round(time.Millisecond), iw.Round(time.Millisecond), lost, sent, lostK, sentK, worstLost)
}

// TestTakeoverKill9Figures: Kea, 3 nodes, 10 kill -9s of the leader's
// ipamd in a row (each killed ipamd is restarted before the next kill):
// the figures of plan §5.3. Not parallel, so that the other tests of the
// package do not skew them (they run after it).
func TestTakeoverKill9Figures(t *testing.T) {
	takeOvers(t, netlab.Kea, 3, 10)
}

// TestTakeoverKill9: the other configurations, two kills each.
func TestTakeoverKill9(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind  netlab.DHCPKind
		nodes int
	}{{netlab.Kea, 2}, {netlab.Dhcpd, 3}, {netlab.Dhcpd, 2}} {
		t.Run(fmt.Sprintf("%s/%d", tc.kind, tc.nodes), func(t *testing.T) {
			t.Parallel()
			takeOvers(t, tc.kind, tc.nodes, 2)
		})
	}
}

// TestTakeoverPowerOff: the leader's node vanishes (link cut, ipamd and
// its netns gone, as a machine losing power): a surviving node Renews the
// same prefix once the leader's session expires.
func TestTakeoverPowerOff(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Kea, 3)
	ctx := testCtx(t)
	waitBinding(t, ctx, lab)
	pods := addPods(t, ctx, lab)
	w := watch(t, lab)
	k := takeOver(t, ctx, lab, pods, w, powerOff)
	logFigures(t, "poweroff server=kea nodes=3", []kill{k})
}

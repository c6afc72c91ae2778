package cluster

import (
	"context"
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/netlab"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipmath"
)

// TestNodeRemove decommissions nodes with `ipamd node remove` run on
// another node, as an operator would:
//
//   - a live node is refused without --force, and keeps everything;
//   - a stopped (dead) node is removed: its blocks and attachments are
//     free in etcd when the command returns, its routes leave the router;
//   - a live node removed with --force fences itself: it withdraws the
//     blocks it lost, STATUS on it says why (code 50) while its old pods
//     remain, a new pod on it gets an address from a block of its new
//     epoch, announced via it, and once the old pod is deleted STATUS is
//     ready again and `ipamd check` is clean.
func TestNodeRemove(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Router: netlab.BIRD, Nodes: 3, RestartTime: 3})
	t.Logf("lab %s up: %s", lab.ID, lab.Timings)
	ctx := testCtx(t)
	op, dead, forced := lab.Nodes[0], lab.Nodes[1], lab.Nodes[2]
	for _, n := range lab.Nodes {
		addPod(t, ctx, n)
	}
	orphan := forced.Pods()[0]
	want := requireRoutes(t, ctx, lab)

	// A live node is refused without --force.
	out, err := op.Ipamd(ctx, "node", "remove", dead.Name)
	if err == nil || !strings.Contains(string(out), "--force") {
		t.Fatalf("node remove %s (alive) without --force: err %v, want a refusal naming --force:\n%s", dead.Name, err, out)
	}
	if b := blocksOf(t, ctx, dead); len(b) == 0 {
		t.Fatalf("refused removal of %s released its blocks", dead.Name)
	}

	// A stopped node is dead at once (its ipamd revokes its lease) and is
	// removed without --force.
	if err := dead.Stop(); err != nil {
		t.Fatal(err)
	}
	waitState(t, ctx, op, dead.Name, ipamapi.NodeDead)
	start := time.Now()
	if out, err := op.Ipamd(ctx, "node", "remove", dead.Name, "--reason", "decommissioned by the test"); err != nil {
		t.Fatalf("node remove %s (dead): %v\n%s", dead.Name, err, out)
	} else {
		t.Logf("node remove %s: %s", dead.Name, strings.TrimSpace(string(out)))
	}
	took := time.Since(start)
	if b := blocksOf(t, ctx, dead); len(b) != 0 {
		t.Fatalf("after node remove %s returned, it still owns blocks %v", dead.Name, b)
	}
	requireNoRecords(t, ctx, lab, dead.Name)
	waitRoutesGone(t, lab, routesVia(want, dead), dead.Name)
	t.Logf("removal of dead %s: blocks free in etcd %s after the command started, routes gone %s after it (%s)",
		dead.Name, took.Round(time.Millisecond), time.Since(start).Round(10*time.Millisecond),
		"the node's session had ended at its stop; graceful restart keeps routes stale for the restart time")
	waitState(t, ctx, op, dead.Name, ipamapi.NodeRemoved)

	// A live node removed with --force fences itself.
	lost := routesVia(want, forced)
	if gws := lostGateways(t, ctx, forced, lost); len(gws) == 0 {
		t.Fatalf("%s's bridge %s has no gateway of its blocks %v before the removal", forced.Name, netlab.Bridge, lost)
	}
	start = time.Now()
	if out, err := op.Ipamd(ctx, "node", "remove", forced.Name, "--force"); err != nil {
		t.Fatalf("node remove %s --force: %v\n%s", forced.Name, err, out)
	}
	took = time.Since(start)
	if b := blocksOf(t, ctx, forced); len(b) != 0 {
		t.Fatalf("after node remove %s --force returned, it still owns blocks %v", forced.Name, b)
	}
	waitRoutesGone(t, lab, lost, forced.Name)
	// Its bridge no longer answers as the gateway of blocks it lost.
	var gws []string
	if !netlab.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		gws = lostGateways(t, ctx, forced, lost)
		return len(gws) == 0
	}) {
		t.Fatalf("fenced %s still has the gateways %v of the blocks it lost on %s", forced.Name, gws, netlab.Bridge)
	}
	t.Logf("forced removal of live %s: blocks free in etcd %s after the command started, its routes withdrawn %s after it",
		forced.Name, took.Round(time.Millisecond), time.Since(start).Round(10*time.Millisecond))

	// STATUS says why while the pod that lost its address runs.
	var status error
	if !netlab.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		status = forced.Status(ctx)
		return status != nil && code50.MatchString(status.Error())
	}) {
		t.Fatalf("STATUS on fenced %s: %v, want CNI error code 50 naming the removal", forced.Name, status)
	}
	t.Logf("STATUS on fenced %s: %v", forced.Name, status)

	// New pods get addresses of blocks the node holds now, never the old
	// pod's address, and the router learns them via the node.
	fresh := addPod(t, ctx, forced)
	for _, a := range fresh.Addrs {
		for _, o := range orphan.Addrs {
			if a == o {
				t.Fatalf("fenced %s gave its new pod %s the address %s its removed pod still holds", forced.Name, fresh.ID, a)
			}
		}
	}
	owned := blocksOf(t, ctx, forced)
	if !inAny(owned, fresh.Addrs) {
		t.Fatalf("new pod on %s: addresses %v not in the node's blocks %v", forced.Name, fresh.Addrs, owned)
	}
	requireRoutes(t, ctx, lab)
	if _, err := op.Pods()[0].Ping(ctx, fresh.Addr(6)); err != nil {
		t.Fatalf("%s → new pod on %s: %v", op.Name, forced.Name, err)
	}

	// Deleting the old pod ends the degraded state.
	if err := orphan.Del(ctx); err != nil {
		t.Fatalf("DEL of the pod %s lost: %v", forced.Name, err)
	}
	if err := forced.Status(ctx); err != nil {
		t.Fatalf("STATUS on %s after its old pod was deleted: %v", forced.Name, err)
	}
	waitState(t, ctx, op, forced.Name, ipamapi.NodeAlive)
	requireClean(t, ctx, lab)
}

// code50 finds CNI error code 50 (the plugin is temporarily unable to
// serve) in a plugin's error output.
var code50 = regexp.MustCompile(`"code":\s*50\b`)

// lostGateways are the gateway addresses of blocks (ipmath.Gateway) still
// on node n's bridge.
func lostGateways(t *testing.T, ctx context.Context, n *netlab.Node, blocks map[netip.Prefix]netip.Addr) []string {
	t.Helper()
	out, err := n.Exec(ctx, "ip", "-o", "addr", "show", "dev", netlab.Bridge)
	if err != nil {
		t.Fatalf("ip addr on %s: %v: %s", n.Name, err, out)
	}
	var on []string
	for _, f := range strings.Fields(string(out)) {
		if p, err := netip.ParsePrefix(f); err == nil {
			for b := range blocks {
				if p.Addr() == ipmath.Gateway(b) {
					on = append(on, p.String())
				}
			}
		}
	}
	return on
}

func blocksOf(t *testing.T, ctx context.Context, n *netlab.Node) []netip.Prefix {
	t.Helper()
	b, err := n.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func inAny(blocks []netip.Prefix, addrs []netip.Addr) bool {
	for _, a := range addrs {
		found := false
		for _, b := range blocks {
			found = found || b.Contains(a)
		}
		if !found {
			return false
		}
	}
	return len(addrs) > 0
}

// requireNoRecords fails if etcd still holds a block or an attachment of
// the node.
func requireNoRecords(t *testing.T, ctx context.Context, lab *netlab.Lab, node string) {
	t.Helper()
	snap, err := lab.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range snap.Handles {
		if h.Node == node {
			t.Errorf("removed node %s still has attachment %s", node, h.ContainerID)
		}
	}
	for _, b := range snap.Blocks {
		if b.Node == node {
			t.Errorf("removed node %s still owns block %s", node, b.CIDR)
		}
	}
}

// waitRoutesGone waits until none of routes is in the router's table.
func waitRoutesGone(t *testing.T, lab *netlab.Lab, routes map[netip.Prefix]netip.Addr, node string) {
	t.Helper()
	if len(routes) == 0 {
		t.Fatalf("no routes of %s to watch", node)
	}
	if _, _, err := lab.Router.WaitRoutes(routeTimeout, func(rt map[netip.Prefix]netip.Addr) bool {
		for p, nh := range routes {
			if rt[p] == nh {
				return false
			}
		}
		return true
	}); err != nil {
		table, _ := lab.Router.ShowRoutes()
		t.Fatalf("routes %v of removed %s did not leave the router: %v\n%s", routes, node, err, table)
	}
}

// waitState polls `ipamd nodes -o json` on n until node has state.
func waitState(t *testing.T, ctx context.Context, n *netlab.Node, node, state string) {
	t.Helper()
	var last string
	if !netlab.Poll(45*time.Second, 100*time.Millisecond, func() bool {
		out, err := n.Ipamd(ctx, "nodes", "-o", "json")
		if err != nil {
			last = err.Error() + ": " + string(out)
			return false
		}
		var ns []ipamapi.NodeInfo
		if err := json.Unmarshal(out, &ns); err != nil {
			last = err.Error() + ": " + string(out)
			return false
		}
		for _, i := range ns {
			if i.Name == node {
				last = i.State
				return i.State == state
			}
		}
		last = "not listed"
		return false
	}) {
		t.Fatalf("ipamd nodes on %s: %s is %q, want %q", n.Name, node, last, state)
	}
}

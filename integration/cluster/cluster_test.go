package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/netlab"
)

// hopsTTL is the TTL / hop limit of a reply from a pod on another node:
// sent with 64, it crossed that pod's node, the router and this pod's node.
// A route learned from an ICMP redirect (node to node, bypassing the
// router) would give 62.
const hopsTTL = 64 - 3

// routeTimeout bounds how long the router may take to learn or drop a
// route: BGP is asynchronous and the machine is shared, so waits are long
// and only fail a test when something is really wrong.
const routeTimeout = 60 * time.Second

// TestPodToPod attaches a pod on each of two nodes and pings each pod from
// the other, every family, through the router; the router's BGP table
// holds every node's blocks via that node. With BIRD IPv6 only and
// dual-stack, with gobgpd dual-stack (IPv4 blocks via the node's IPv4
// address on the link: bgpspeaker's nextHopIPv4, over the IPv6 session).
func TestPodToPod(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts netlab.Options
	}{
		{"bird/ipv6", netlab.Options{Router: netlab.BIRD}},
		{"bird/dual-stack", netlab.Options{Router: netlab.BIRD, IPv4: true}},
		{"gobgpd/dual-stack", netlab.Options{Router: netlab.GoBGP, IPv4: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lab := netlab.New(t, tc.opts)
			t.Logf("lab %s up: %s", lab.ID, lab.Timings)
			ctx := testCtx(t)
			a, b := lab.Nodes[0], lab.Nodes[1]
			podA := addPod(t, ctx, a)
			podB := addPod(t, ctx, b)
			families := []int{6}
			if tc.opts.IPv4 {
				families = append(families, 4)
			}
			for _, p := range []*netlab.Pod{podA, podB} {
				for _, fam := range families {
					if !p.Addr(fam).IsValid() {
						t.Fatalf("pod %s on %s has no IPv%d address: %v", p.ID, p.Node.Name, fam, p.Addrs)
					}
				}
			}

			want := requireRoutes(t, ctx, lab)
			if tc.opts.IPv4 && !hasFamily(want, 4) {
				t.Fatalf("dual-stack: no IPv4 block among the nodes' blocks: %v", want)
			}
			table, err := lab.Router.ShowRoutes()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("router %s's table:\n%s", lab.Router.Kind, table)

			v6Before, v4Before := forwarded(t, lab)
			for _, fam := range families {
				for _, dir := range [][2]*netlab.Pod{{podA, podB}, {podB, podA}} {
					from, to := dir[0], dir[1]
					ttl, err := from.Ping(ctx, to.Addr(fam))
					if err != nil {
						t.Fatalf("IPv%d %s → %s: %v\nnode %s: %s", fam, from.Node.Name, to.Node.Name, err,
							from.Node.Name, routeGet(ctx, from.Node, to.Addr(fam)))
					}
					if ttl != hopsTTL {
						t.Errorf("IPv%d %s (%s) → %s (%s): reply ttl %d, want %d (node, router, node)",
							fam, from.Node.Name, from.Addr(fam), to.Node.Name, to.Addr(fam), ttl, hopsTTL)
					}
				}
			}
			v6After, v4After := forwarded(t, lab)
			if v6After < v6Before+4 {
				t.Errorf("router forwarded %d IPv6 packets during the pings, want ≥ 4 (2 echoes, 2 replies)", v6After-v6Before)
			}
			if tc.opts.IPv4 && v4After < v4Before+4 {
				t.Errorf("router forwarded %d IPv4 packets during the pings, want ≥ 4", v4After-v4Before)
			}
			requireClean(t, ctx, lab)
		})
	}
}

// TestNodeStop takes nodes away one way each and waits until the router's
// BGP table has lost their blocks, and only theirs:
//
//   - SIGTERM of ipamd. With graceful restart on (the default) it is a
//     planned restart: no NOTIFICATION, the router keeps the routes as
//     stale for the node's restart time, then drops them. With graceful
//     restart off ipamd sends a Cease and the routes go at once.
//   - SIGKILL of ipamd (a crash). The kernel closes the dead process's TCP
//     session, so the router sees the session end at once: with graceful
//     restart the routes go after the restart time, as for SIGTERM;
//     without it at once. Not the hold time.
//   - Power off (the node's link is cut first, so no FIN ever leaves it):
//     only the BGP hold time ends the session; run without graceful
//     restart, where the routes then go at once.
//
// With graceful restart, the stopped ipamds then start again and the
// router learns their blocks again, via them.
func TestNodeStop(t *testing.T) {
	type step struct {
		how  string
		stop func(*netlab.Node) error
	}
	sigterm := step{"SIGTERM", (*netlab.Node).Stop}
	sigkill := step{"SIGKILL", func(n *netlab.Node) error { n.Kill(); return nil }}
	powerOff := step{"power off", (*netlab.Node).PowerOff}
	for _, tc := range []struct {
		name    string
		opts    netlab.Options
		steps   []step
		restart bool
	}{
		{"bird/graceful-restart", netlab.Options{Router: netlab.BIRD, Nodes: 3, RestartTime: 3},
			[]step{sigterm, sigkill}, true},
		{"gobgpd/no-graceful-restart", netlab.Options{Router: netlab.GoBGP, Nodes: 4, NoGracefulRestart: true},
			[]step{sigterm, sigkill, powerOff}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lab := netlab.New(t, tc.opts)
			t.Logf("lab %s up: %s", lab.ID, lab.Timings)
			ctx := testCtx(t)
			for _, n := range lab.Nodes {
				addPod(t, ctx, n)
			}
			want := requireRoutes(t, ctx, lab)
			keep := lab.Nodes[0]
			for i, st := range tc.steps {
				node := lab.Nodes[i+1]
				gone := routesVia(want, node)
				start := time.Now()
				if err := st.stop(node); err != nil {
					t.Fatal(err)
				}
				if _, _, err := lab.Router.WaitRoutes(routeTimeout, func(rt map[netip.Prefix]netip.Addr) bool {
					for p := range gone {
						if _, ok := rt[p]; ok {
							return false
						}
					}
					return true
				}); err != nil {
					t.Fatalf("%s of %s: its routes %v did not leave: %v", st.how, node.Name, gone, err)
				}
				t.Logf("%s of %s: its %d route(s) left the router %s after the stop began (%s)", st.how, node.Name,
					len(gone), time.Since(start).Round(10*time.Millisecond), grNote(lab.Opts, st.how))
			}
			// The node left alone still has all its routes.
			rt, err := lab.Router.Routes()
			if err != nil {
				t.Fatal(err)
			}
			for p, nh := range routesVia(want, keep) {
				if rt[p] != nh {
					t.Errorf("route %s of %s (still running): router has next hop %v, want %s", p, keep.Name, rt[p], nh)
				}
			}
			if tc.restart {
				for _, n := range lab.Nodes[1 : 1+len(tc.steps)] {
					if err := n.Start(); err != nil {
						t.Fatal(err)
					}
				}
				if err := lab.Router.WaitEstablished(lab.Nodes, routeTimeout); err != nil {
					t.Fatal(err)
				}
				requireRoutes(t, ctx, lab)
			}
			requireClean(t, ctx, lab)
		})
	}
}

// grNote says what ended the stopped node's routes.
func grNote(o netlab.Options, how string) string {
	switch {
	case how == "power off":
		return fmt.Sprintf("the session ended when the hold time, %d s, expired", o.HoldTime)
	case o.NoGracefulRestart:
		return "graceful restart off: withdrawn when the session ended"
	}
	return fmt.Sprintf("graceful restart: kept stale for the restart time, %d s", o.RestartTime)
}

// ---- helpers ----

// testCtx bounds one test's commands; not t.Context(), which is cancelled
// before cleanups run.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func addPod(t *testing.T, ctx context.Context, n *netlab.Node) *netlab.Pod {
	t.Helper()
	p, err := n.AddPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// expectedRoutes is every node's blocks (from etcd) → that node's next hop
// of the block's family.
func expectedRoutes(t *testing.T, ctx context.Context, lab *netlab.Lab) map[netip.Prefix]netip.Addr {
	t.Helper()
	want := map[netip.Prefix]netip.Addr{}
	for _, n := range lab.Nodes {
		blocks, err := n.Blocks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			want[b] = n.NextHop(b)
		}
	}
	return want
}

// requireRoutes waits until the router's BGP table holds every node's
// blocks via that node, and no route into the pools via anything else,
// and returns the blocks and next hops.
func requireRoutes(t *testing.T, ctx context.Context, lab *netlab.Lab) map[netip.Prefix]netip.Addr {
	t.Helper()
	want := expectedRoutes(t, ctx, lab)
	if len(want) == 0 {
		t.Fatal("no node owns a block after the pods' ADDs")
	}
	rt, took, err := lab.Router.WaitRoutes(routeTimeout, func(rt map[netip.Prefix]netip.Addr) bool {
		for p, nh := range want {
			if rt[p] != nh {
				return false
			}
		}
		return true
	})
	if err != nil {
		table, _ := lab.Router.ShowRoutes()
		t.Fatalf("router %s: want every block via its node %v: %v\n%s", lab.Router.Kind, want, err, table)
	}
	for p, nh := range rt {
		inPool := lab.Pool6.Overlaps(p) || lab.Opts.IPv4 && lab.Pool4.Overlaps(p)
		if inPool && want[p] != nh {
			t.Errorf("router %s: route %s via %s is no node's block (want %v)", lab.Router.Kind, p, nh, want)
		}
	}
	t.Logf("router %s: %d block route(s) via their nodes after %s", lab.Router.Kind, len(want), took.Round(10*time.Millisecond))
	return want
}

// routesVia is the subset of routes via node n.
func routesVia(routes map[netip.Prefix]netip.Addr, n *netlab.Node) map[netip.Prefix]netip.Addr {
	out := map[netip.Prefix]netip.Addr{}
	for p, nh := range routes {
		if nh == n.Addr6 || n.Addr4.IsValid() && nh == n.Addr4 {
			out[p] = nh
		}
	}
	return out
}

func hasFamily(routes map[netip.Prefix]netip.Addr, fam int) bool {
	for p := range routes {
		if p.Addr().Is4() == (fam == 4) {
			return true
		}
	}
	return false
}

func forwarded(t *testing.T, lab *netlab.Lab) (v6, v4 uint64) {
	t.Helper()
	v6, v4, err := lab.Router.Forwarded()
	if err != nil {
		t.Fatal(err)
	}
	return v6, v4
}

func routeGet(ctx context.Context, n *netlab.Node, dst netip.Addr) string {
	s, err := n.RouteGet(ctx, dst)
	if err != nil {
		return err.Error()
	}
	return s
}

// requireClean is the tests' clean-state check, run when a test ends with
// the cluster in a known state: `ipamd check` on every node (cluster-wide
// consistency of etcd, plus what the node can see locally) must exit 0.
func requireClean(t *testing.T, ctx context.Context, lab *netlab.Lab) {
	t.Helper()
	for _, n := range lab.Nodes {
		if !n.Running() {
			continue
		}
		if out, err := n.Ipamd(ctx, "check"); err != nil {
			t.Errorf("ipamd check on %s: %v\n%s", n.Name, err, out)
		}
	}
}

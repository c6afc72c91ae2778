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
// holds every node's blocks via that node. Once with BIRD and IPv6 only,
// once with gobgpd and dual-stack (IPv4 blocks via the node's IPv4
// address: bgpspeaker's nextHopIPv4).
func TestPodToPod(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts netlab.Options
	}{
		{"bird/ipv6", netlab.Options{Router: netlab.BIRD}},
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

// TestNodeStop stops one node's ipamd with SIGTERM and kills another's
// with SIGKILL, and waits until the router's table has lost their blocks
// and only theirs. With graceful restart on (the default, and ipamd's
// SIGTERM is a planned restart that sends no NOTIFICATION) the router keeps
// both nodes' routes as stale for the nodes' restart time, then drops
// them: SIGKILL is the same as SIGTERM here, since the kernel closes the
// dead process's TCP session and the router sees the restart at once. With
// graceful restart off, SIGTERM withdraws at once (a Cease) and so does a
// SIGKILL (the closed session). The BGP hold time matters only when the
// node vanishes without closing the session (PowerOff: the link is cut).
func TestNodeStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts netlab.Options
	}{
		{"bird/graceful-restart", netlab.Options{Router: netlab.BIRD, Nodes: 3, RestartTime: 3}},
		{"gobgpd/no-graceful-restart", netlab.Options{Router: netlab.GoBGP, Nodes: 3, NoGracefulRestart: true, HoldTime: 3}},
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
			keep, term, kill := lab.Nodes[0], lab.Nodes[1], lab.Nodes[2]

			for _, step := range []struct {
				how  string
				node *netlab.Node
				stop func(*netlab.Node) error
			}{
				{"SIGTERM", term, (*netlab.Node).Stop},
				{"SIGKILL", kill, func(n *netlab.Node) error { n.Kill(); return nil }},
			} {
				gone := routesVia(want, lab, step.node)
				if err := step.stop(step.node); err != nil {
					t.Fatal(err)
				}
				_, took, err := lab.Router.WaitRoutes(routeTimeout, func(rt map[netip.Prefix]netip.Addr) bool {
					for p := range gone {
						if _, ok := rt[p]; ok {
							return false
						}
					}
					return true
				})
				if err != nil {
					t.Fatalf("%s of %s: its routes %v did not leave: %v", step.how, step.node.Name, gone, err)
				}
				t.Logf("%s of %s's ipamd: its %d route(s) left the router after %s (%s)",
					step.how, step.node.Name, len(gone), took.Round(10*time.Millisecond), grNote(tc.opts))
			}
			// The node left alone still has all its routes.
			rt, err := lab.Router.Routes()
			if err != nil {
				t.Fatal(err)
			}
			for p, nh := range routesVia(want, lab, keep) {
				if rt[p] != nh {
					t.Errorf("route %s of %s (still running): router has next hop %v, want %s", p, keep.Name, rt[p], nh)
				}
			}
		})
	}
}

func grNote(o netlab.Options) string {
	if o.NoGracefulRestart {
		return "graceful restart off: withdrawn when the session ends"
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
		t.Fatalf("router %s: want every block via its node %v: %v", lab.Router.Kind, want, err)
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
func routesVia(routes map[netip.Prefix]netip.Addr, lab *netlab.Lab, n *netlab.Node) map[netip.Prefix]netip.Addr {
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

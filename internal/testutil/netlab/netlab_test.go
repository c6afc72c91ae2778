package netlab

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBinaries()
	os.Exit(code)
}

func TestParseBirdRoutes(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want map[netip.Prefix]netip.Addr
	}{
		{"empty", "BIRD 2.0.12 ready.\n", map[netip.Prefix]netip.Addr{}},
		{
			"both families, best route first, non-BGP routes ignored",
			"BIRD 2.0.12 ready.\n" +
				"Table master4:\n" +
				"10.244.0.0/26        unicast [node0 03:10:00.123] * (100) [AS65001i]\n" +
				"\tvia 192.0.2.17 on lan0\n" +
				"192.0.2.0/24         unicast [direct1 03:10:00.100] * (240)\n" +
				"\tdev lan0\n" +
				"\n" +
				"Table master6:\n" +
				"fd6d:1:200::/64      unicast [node1 03:10:00.123] * (100) [AS65001i]\n" +
				"\tvia fd6c:1:2::12 on lan0\n" +
				"                     unicast [node0 03:10:01.000] (100) [AS65001i]\n" +
				"\tvia fd6c:1:2::11 on lan0\n" +
				"fd6c:1:2::/64        unicast [kernel1 03:10:00.100] * (10)\n" +
				"\tvia fd6c:1:2::99 on lan0\n",
			map[netip.Prefix]netip.Addr{
				netip.MustParsePrefix("10.244.0.0/26"):   netip.MustParseAddr("192.0.2.17"),
				netip.MustParsePrefix("fd6d:1:200::/64"): netip.MustParseAddr("fd6c:1:2::12"),
			},
		},
		{"garbage", "via\n\tvia\nnot-a-prefix [node0] *\n\tvia 1.2.3.4\n", map[netip.Prefix]netip.Addr{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseBirdRoutes(tc.out)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for p, nh := range tc.want {
				if got[p] != nh {
					t.Errorf("%s: next hop %v, want %s", p, got[p], nh)
				}
			}
		})
	}
}

func FuzzParseBirdRoutes(f *testing.F) {
	f.Add("Table master6:\nfd6d::/64 unicast [node0 x] *\n\tvia fd6c::11 on lan0\n")
	f.Add("\tvia ::1\n[node")
	f.Fuzz(func(t *testing.T, out string) {
		for p, nh := range parseBirdRoutes(out) {
			if !p.IsValid() || !nh.IsValid() {
				t.Fatalf("invalid entry %v → %v", p, nh)
			}
		}
	})
}

func TestIpamdCommand(t *testing.T) {
	for _, tc := range []struct {
		args, want []string
	}{
		{nil, []string{"ipamd", "--socket", "s"}},
		{[]string{"check"}, []string{"ipamd", "check", "--socket", "s"}},
		{[]string{"check", "-o", "json"}, []string{"ipamd", "check", "--socket", "s", "-o", "json"}},
		{[]string{"node", "remove", "node-1", "--force"}, []string{"ipamd", "node", "remove", "--socket", "s", "node-1", "--force"}},
		{[]string{"nodes", "-o", "json"}, []string{"ipamd", "nodes", "--socket", "s", "-o", "json"}},
	} {
		if got := ipamdCommand("ipamd", "s", tc.args); !slices.Equal(got, tc.want) {
			t.Errorf("ipamdCommand(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestLab brings up a one-node lab, attaches, checks and detaches a pod,
// and then checks that the lab left nothing behind: no netns, no process,
// no directory.
func TestLab(t *testing.T) {
	var id, dir string
	var pids []int
	t.Run("lab", func(t *testing.T) {
		l := New(t, Options{Nodes: 1})
		id, dir = l.ID, l.Dir
		pids = append(pids, l.Etcd.p.cmd.Process.Pid, l.Router.p.cmd.Process.Pid)
		n := l.Nodes[0]
		pids = append(pids, n.p.cmd.Process.Pid)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		p, err := n.AddPod(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a := p.Addr(6); !l.Pool6.Contains(a) {
			t.Fatalf("pod address %v not in the pool %s", a, l.Pool6)
		}
		if err := p.Check(ctx); err != nil {
			t.Fatal(err)
		}
		// A host behind the router answers the pod through the router
		// (which learned the pod's block by BGP): the reply crosses the
		// router and the node.
		h, err := l.Router.AddHost()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.Router.WaitRoutes(time.Minute, func(m map[netip.Prefix]netip.Addr) bool {
			for pfx, nh := range m {
				if pfx.Contains(p.Addr(6)) && nh == n.Addr6 {
					return true
				}
			}
			return false
		}); err != nil {
			t.Fatal(err)
		}
		if ttl, err := p.Ping(ctx, h.Addr6); err != nil || ttl != 62 {
			t.Errorf("pod → host behind the router %s: ttl %d (%v), want 62 (router, node)", h.Addr6, ttl, err)
		}
		leases, err := n.Client.Leases(ctx, NetworkName)
		if err != nil {
			t.Fatal(err)
		}
		if len(leases) != 1 || leases[0].ContainerID != p.ID || leases[0].Node != n.Name {
			t.Fatalf("leases %+v, want one of %s on %s", leases, p.ID, n.Name)
		}
		if out, err := n.Ipamd(ctx, "state"); err != nil {
			t.Fatalf("ipamd state: %v", err)
		} else if !strings.Contains(string(out), p.Addr(6).String()) {
			t.Errorf("ipamd state does not show %s:\n%s", p.Addr(6), out)
		}
		if err := p.Del(ctx); err != nil {
			t.Fatal(err)
		}
		if leases, err := n.Client.Leases(ctx, NetworkName); err != nil || len(leases) != 0 {
			t.Fatalf("after DEL: leases %+v (%v), want none", leases, err)
		}
	})
	if id == "" {
		t.Fatal("the lab did not start")
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	if strings.Contains(string(out), "nl-"+id+"-") {
		t.Errorf("netns of lab %s left behind:\n%s", id, out)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d of lab %s still exists (kill 0: %v)", pid, id, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab dir %s left behind (%v)", dir, err)
	}
}

package netlab

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDHCPNodeMode: a lab with a delegating server and two nodes in node
// mode: each node's ipamd obtains its own /56 from the server, a pd-ipam
// pod on each node gets an address of its node's prefix, and the pods
// ping each other through the router (which learned the delegated /64s by
// BGP). The server holds one lease per node; each node Solicited.
func TestDHCPNodeMode(t *testing.T) {
	for _, kind := range []DHCPKind{Kea, Dhcpd} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			var pid int
			var ns string
			t.Run("lab", func(t *testing.T) {
				l := New(t, Options{Nodes: 2, DHCP: kind, PD: NodePD(56)})
				pid, ns = l.DHCP.p.cmd.Process.Pid, l.DHCP.NS
				dhcpNodeMode(t, l, kind)
			})
			// The server and its netns went with the lab.
			if pid == 0 {
				t.Fatal("the lab did not start")
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("%s (pid %d) still exists after the lab (kill 0: %v)", kind, pid, err)
			}
			if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), ns) {
				t.Errorf("netns %s left behind", ns)
			}
		})
	}
}

// dhcpNodeMode is TestDHCPNodeMode on a running lab.
func dhcpNodeMode(t *testing.T, l *Lab, kind DHCPKind) {
	t.Logf("lab %s up: %s", l.ID, l.Timings)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var pods []*Pod
	for _, n := range l.Nodes {
		pods = append(pods, addPDPod(t, ctx, n, 1))
	}
	leases, err := l.DHCP.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s leases: %+v", kind, leases)
	if kind == Kea {
		// Both ways of reading Kea agree: lease6-get-all (when the
		// lease_cmds hook is there) and the memfile.
		t.Logf("kea lease_cmds hook: %q", l.DHCP.hook)
		f, err := os.Open(l.DHCP.LeasePath())
		if err != nil {
			t.Fatal(err)
		}
		mem, err := parseKeaCSV(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		owners := map[netip.Prefix]string{}
		for _, ls := range leases {
			owners[ls.Prefix] = ls.Owner()
		}
		same := len(mem) == len(leases)
		for _, m := range mem {
			same = same && owners[m.Prefix] == m.Owner()
		}
		if !same {
			t.Errorf("memfile %+v, lease6-get-all %+v", mem, leases)
		}
	}
	if len(leases) != 2 || leases[0].Owner() == leases[1].Owner() || leases[0].Prefix == leases[1].Prefix {
		t.Fatalf("leases %+v, want two, of two clients", leases)
	}
	for _, p := range pods {
		in := 0
		for _, ls := range leases {
			if ls.Prefix.Bits() != 56 || !l.DHCP.Options().Pool.Contains(ls.Prefix.Addr()) {
				t.Errorf("lease %s not a /56 of the pool %s", ls.Prefix, l.DHCP.Options().Pool)
			}
			if ls.Prefix.Contains(p.Addr(6)) {
				in++
			}
		}
		if in != 1 {
			t.Errorf("pod %s on %s: address %s in %d leased prefixes, want 1", p.ID, p.Node.Name, p.Addr(6), in)
		}
	}
	if _, _, err := l.Router.WaitRoutes(time.Minute, func(m map[netip.Prefix]netip.Addr) bool {
		for _, p := range pods {
			if nh, ok := m[netip.PrefixFrom(p.Addr(6), 64).Masked()]; !ok || nh != p.Node.Addr6 {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range [][2]*Pod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
		ttl, err := d[0].Ping(ctx, d[1].Addr(6))
		if err != nil {
			t.Fatal(err)
		}
		if ttl != 61 {
			t.Errorf("%s → %s: ttl %d, want 61 (node, router, node)", d[0].Addr(6), d[1].Addr(6), ttl)
		}
	}
	for _, p := range pods {
		if err := p.Check(ctx); err != nil {
			t.Error(err)
		}
	}
	msgs, err := l.DHCP.Messages()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: client messages received: %v", kind, msgs)
	if msgs["solicit"] < 2 {
		t.Errorf("%d Solicits counted, want ≥ 2 (one per node)", msgs["solicit"])
	}
	// A restart with another pool keeps the lease file; Kea keeps
	// the old leases, dhcpd drops those outside its new ranges.
	if err := l.DHCP.Restart(DHCPOptions{Pool: netip.MustParsePrefix("2001:db8:b00::/48")}); err != nil {
		t.Fatal(err)
	}
	if got := l.DHCP.Options(); got.Pool.String() != "2001:db8:b00::/48" || got.Valid != 120*time.Second {
		t.Errorf("options after restart %+v", got)
	}
	want := map[DHCPKind]int{Kea: 2, Dhcpd: 0}[kind]
	if after, err := l.DHCP.Leases(ctx); err != nil || len(after) != want {
		t.Errorf("leases after restart with a new pool: %+v %v, want %d", after, err, want)
	}
	for _, n := range l.Nodes {
		if out, err := n.Ipamd(ctx, "check"); err != nil {
			t.Errorf("ipamd check on %s: %v\n%s", n.Name, err, out)
		}
	}
}

// addPDPod adds a pd-ipam pod on n, retrying while ipamd waits for its
// prefix (code 11).
func addPDPod(t *testing.T, ctx context.Context, n *Node, subnetID int) *Pod {
	t.Helper()
	var p *Pod
	var err error
	if !Poll(time.Minute, 200*time.Millisecond, func() bool {
		p, err = n.AddPDPod(ctx, subnetID)
		return err == nil || !tryAgain(err)
	}) || err != nil {
		t.Fatalf("pd-ipam pod on %s: %v", n.Name, err)
	}
	return p
}

// tryAgain reports whether a CNI error is code 11 in any rendering.
func tryAgain(err error) bool {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code == types.ErrTryAgainLater
	}
	s := err.Error()
	return strings.Contains(s, `"code":11`) || strings.Contains(s, `"code": 11`) || strings.Contains(s, "waiting for a delegated prefix")
}

func TestPDYAML(t *testing.T) {
	for _, tc := range []struct {
		name string
		pd   *PD
		want string
	}{
		{"node", NodePD(56), "pd:\n  interface: lan0\n  prefixLength: 56\n"},
		{"node without hint", &PD{}, "pd:\n  interface: lan0\n"},
		{"cluster", ClusterPD("lab", 56, 60),
			"pd:\n  mode: cluster\n  interface: lan0\n  prefixLength: 56\n  cluster:\n    segment: lab\n    leaseTTL: 3s\n    subnetLength: 60\n    blockSize: 64\n"},
		{"cluster, not a candidate", &PD{Mode: PDCluster, Segment: "s", LeaseTTL: 2 * time.Second, BlockSize: 80, NotCandidate: true},
			"pd:\n  mode: cluster\n  interface: lan0\n  cluster:\n    segment: s\n    leaseTTL: 2s\n    subnetLength: 64\n    blockSize: 80\n    candidate: false\n"},
	} {
		if got := tc.pd.yaml(); got != tc.want {
			t.Errorf("%s:\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
}

func TestLastSubprefix(t *testing.T) {
	for _, tc := range []struct {
		p    string
		bits int
		want string
	}{
		{"2001:db8:a00::/48", 56, "2001:db8:a00:ff00::"},
		{"2001:db8:a00::/48", 64, "2001:db8:a00:ffff::"},
		{"2001:db8:a00::/56", 56, "2001:db8:a00::"},
		{"2001:db8::/47", 48, "2001:db8:1::"},
	} {
		if got := lastSubprefix(netip.MustParsePrefix(tc.p), tc.bits); got.String() != tc.want {
			t.Errorf("lastSubprefix(%s, %d) = %s, want %s", tc.p, tc.bits, got, tc.want)
		}
	}
}

const keaCSV = `address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source
2001:db8:a00::,00:03:00:01:aa:bb:cc:dd:ee:01,120,1900000000,1,60,2,1,56,0,0,,,0,,,
2001:db8:a00:100::,00:03:00:01:aa:bb:cc:dd:ee:02,120,1900000000,1,60,2,7,56,0,0,,,0,,,
2001:db8:a00:100::,00:03:00:01:aa:bb:cc:dd:ee:02,0,1900000000,1,60,2,7,56,0,0,,,0,,,
2001:db8:ffff::5,00:03:00:01:aa:bb:cc:dd:ee:03,120,1900000000,1,60,0,1,128,0,0,,,0,,,
2001:db8:a00:200::,00:03:00:01:aa:bb:cc:dd:ee:04,120,1900000000,1,60,2,2,56,0,0,,,2,,,
`

const dhcpdLeases = `server-duid "\000\002\000\000\011\277netlab";

ia-pd "\001\000\000\000\000\003\000\001\252\273\314\335\356\001" {
  cltt 0 2026/12/06 06:50:00;
  iaprefix 2001:db8:a00::/56 {
    binding state active;
    preferred-life 60;
    max-life 120;
    ends 0 2036/12/06 06:52:00;
  }
}

ia-pd "\002\000\000\000\000\003\000\001\252\273\314\335\356\002" {
  cltt 0 2026/12/06 06:50:00;
  iaprefix 2001:db8:a00:100::/56 {
    binding state active;
    ends 0 2036/12/06 06:52:00;
  }
}

ia-pd "\002\000\000\000\000\003\000\001\252\273\314\335\356\002" {
  cltt 0 2026/12/06 06:51:00;
  iaprefix 2001:db8:a00:100::/56 {
    binding state released;
  }
}
`

func TestParseLeaseFiles(t *testing.T) {
	kea, err := parseKeaCSV(strings.NewReader(keaCSV))
	if err != nil {
		t.Fatal(err)
	}
	if len(kea) != 1 || kea[0].Prefix.String() != "2001:db8:a00::/56" || kea[0].Owner() != "00:03:00:01:aa:bb:cc:dd:ee:01/1" ||
		!kea[0].Expires.Equal(time.Unix(1900000000, 0)) {
		t.Errorf("kea memfile: %+v", kea)
	}
	d, err := parseDhcpdLeases(strings.NewReader(dhcpdLeases))
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != 1 || d[0].Prefix.String() != "2001:db8:a00::/56" || d[0].Owner() != "00:03:00:01:aa:bb:cc:dd:ee:01/1" ||
		d[0].Expires.Year() != 2036 {
		t.Errorf("dhcpd leases: %+v", d)
	}
	raw := json.RawMessage(`{"leases": [
	  {"type": "IA_PD", "ip-address": "2001:db8:a00::", "prefix-len": 56, "duid": "00:03:00:01:AA:bb:cc:dd:ee:01", "iaid": 1, "cltt": 1900000000, "valid-lft": 120, "state": 0},
	  {"type": "IA_PD", "ip-address": "2001:db8:a00:100::", "prefix-len": 56, "duid": "01", "iaid": 2, "cltt": 1000, "valid-lft": 120, "state": 0},
	  {"type": "IA_NA", "ip-address": "2001:db8:ffff::5", "prefix-len": 128, "duid": "01", "iaid": 2, "cltt": 1900000000, "valid-lft": 120, "state": 0}]}`)
	got, err := parseKeaLeases(raw, time.Unix(1800000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Owner() != "00:03:00:01:aa:bb:cc:dd:ee:01/1" {
		t.Errorf("lease6-get-all: %+v", got)
	}
	c, err := parseNftCounters([]byte(`{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet", "name": "solicit", "table": "netlab", "handle": 1, "packets": 3, "bytes": 300}}]}`))
	if err != nil || c["solicit"] != 3 {
		t.Errorf("nft counters %v %v", c, err)
	}
}

// FuzzParseLeases feeds the lease parsers arbitrary text: they may refuse
// it, never panic, and every lease they return is a valid prefix.
func FuzzParseLeases(f *testing.F) {
	f.Add(keaCSV)
	f.Add(dhcpdLeases)
	f.Add(`ia-pd "\0" {` + "\n iaprefix ::/0 {\n binding state active;\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) ([]Lease6, error){
			func(s string) ([]Lease6, error) { return parseKeaCSV(strings.NewReader(s)) },
			func(s string) ([]Lease6, error) { return parseDhcpdLeases(strings.NewReader(s)) },
			func(s string) ([]Lease6, error) { return parseKeaLeases(json.RawMessage(s), time.Unix(0, 0)) },
		} {
			ls, err := parse(s)
			if err != nil {
				continue
			}
			for _, l := range ls {
				if !l.Prefix.IsValid() {
					t.Fatalf("invalid prefix in %+v", l)
				}
			}
		}
	})
}

// TestKeaReconfigure: Kea takes a new pool by config-reload while running;
// the node's next Renew (T1 3 s) is answered with a prefix of the new
// pool, with no Solicit. Seen with Kea 2.2: the old prefix leaves the
// node's binding at that same Reply (ipamd logs it expired and drops its
// blocks), as Kea does for a lease no longer in a pool (lifetimes 0): a
// pool change alone renumbers without overlap.
func TestKeaReconfigure(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Nodes: 1, DHCP: Kea, PD: NodePD(56), DHCPServer: DHCPOptions{T1: 3 * time.Second, T2: 5 * time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addPDPod(t, ctx, l.Nodes[0], 1)
	before, err := l.DHCP.Leases(ctx)
	if err != nil || len(before) != 1 {
		t.Fatalf("leases %+v %v, want one", before, err)
	}
	p2 := netip.MustParsePrefix("2001:db8:b00::/48")
	if err := l.DHCP.Reconfigure(ctx, DHCPOptions{Pool: p2}); err != nil {
		t.Fatal(err)
	}
	var after []Lease6
	if !Poll(30*time.Second, 100*time.Millisecond, func() bool {
		after, err = l.DHCP.Leases(ctx)
		return err == nil && len(after) == 1 && p2.Contains(after[0].Prefix.Addr())
	}) {
		t.Fatalf("no lease of %s after the reload: %+v %v", p2, after, err)
	}
	var pd []byte
	if !Poll(10*time.Second, 100*time.Millisecond, func() bool {
		pd, _ = l.Nodes[0].Ipamd(ctx, "pd")
		return strings.Contains(string(pd), after[0].Prefix.String())
	}) {
		t.Fatalf("ipamd pd does not show %s:\n%s", after[0].Prefix, pd)
	}
	msgs, err := l.DHCP.Messages()
	if err != nil {
		t.Fatal(err)
	}
	if msgs["solicit"] != 1 || msgs["renew"] == 0 {
		t.Errorf("messages %v, want the first Solicit only and a Renew", msgs)
	}
	t.Logf("kea reload: %s → %s by Renew (messages %v); ipamd pd:\n%s", before[0].Prefix, after[0].Prefix, msgs, pd)
}

// TestPDNetConf: AddPDPodMode's mode becomes bridge-v6's ipv6Mode key;
// AddPDPod's empty mode leaves the key out (static).
func TestPDNetConf(t *testing.T) {
	n := &Node{Socket: "/run/n0.sock"}
	for _, tc := range []struct {
		mode string
		want any
	}{{"", nil}, {"static", "static"}, {"slaac", "slaac"}, {"dhcpv6-stateful", "dhcpv6-stateful"}} {
		var conf map[string]any
		if err := json.Unmarshal(n.pdNetConf(3, tc.mode, json.RawMessage(`{"ips":[]}`)), &conf); err != nil {
			t.Fatal(err)
		}
		if got := conf["ipv6Mode"]; got != tc.want {
			t.Errorf("mode %q: ipv6Mode %v, want %v", tc.mode, got, tc.want)
		}
		ipam, _ := conf["ipam"].(map[string]any)
		if conf["name"] != "netlab-pd3" || conf["bridge"] != "cnipd3" || ipam["type"] != "pd-ipam" || ipam["subnetId"] != 3.0 || conf["prevResult"] == nil {
			t.Errorf("mode %q: conf %v", tc.mode, conf)
		}
	}
}

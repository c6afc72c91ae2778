package pdnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// segment is a router netns running Kea on a bridge, and node netns each
// joined to the bridge by a veth (named segIf in the node netns).
type segment struct {
	router string
	nodes  []string
	dir    string
	kea    *exec.Cmd
	keaEnd chan struct{}
}

const (
	segBridge = "pdr0" // the bridge in the router netns; Kea serves on it
	segIf     = "pdn0" // each node's uplink
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newSegment builds the netns (removed when the test ends) and starts Kea
// with a /56 pd-pool of /60s: T1 20 s, T2 32 s, preferred 40 s, valid 60 s.
func newSegment(t *testing.T, n int) *segment {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (netns, veths, Kea on port 547); run go test as root")
	}
	kea, err := exec.LookPath("kea-dhcp6")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/kea-dhcp6"); serr != nil {
			t.Fatal("kea-dhcp6 not found: install the Debian package kea-dhcp6-server (scripts/install-deps.sh)")
		}
		kea = "/usr/sbin/kea-dhcp6"
	}
	var id [4]byte
	rand.Read(id[:])
	sfx := hex.EncodeToString(id[:])
	s := &segment{router: "pcr-" + sfx, dir: t.TempDir()}
	for i := range n {
		s.nodes = append(s.nodes, fmt.Sprintf("pc%d-%s", i, sfx))
	}
	for _, ns := range append([]string{s.router}, s.nodes...) {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", s.router, "link", "add", segBridge, "type", "bridge", "mcast_snooping", "0")
	sh(t, "ip", "-n", s.router, "link", "set", segBridge, "up")
	for i, ns := range s.nodes {
		port := fmt.Sprintf("pcp%d", i)
		sh(t, "ip", "-n", s.router, "link", "add", port, "type", "veth", "peer", "name", segIf, "netns", ns)
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf."+segIf+".accept_dad=0")
		sh(t, "ip", "-n", s.router, "link", "set", port, "master", segBridge)
		sh(t, "ip", "-n", s.router, "link", "set", port, "up")
		sh(t, "ip", "-n", ns, "link", "set", segIf, "up")
	}
	sh(t, "ip", "-n", s.router, "addr", "add", "2001:db8:ffff::1/64", "dev", segBridge, "nodad")
	conf := fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": [%q]},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "0c01", "persist": false},
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "renew-timer": 20, "rebind-timer": 32, "preferred-lifetime": 40, "valid-lifetime": 60,
  "subnet6": [{"id": 1, "subnet": "2001:db8:ffff::/64", "interface": %q,
    "pd-pools": [{"prefix": "2001:db8:100::", "prefix-len": 48, "delegated-len": 56}]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
}}`, segBridge, s.dir, filepath.Join(s.dir, "leases6.csv"), segBridge)
	path := filepath.Join(s.dir, "kea.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(s.dir, "kea.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd := exec.Command("ip", "netns", "exec", s.router, kea, "-c", path) // ip execs Kea: same pid
	cmd.Env = append(os.Environ(), "KEA_PIDFILE_DIR="+s.dir, "KEA_LOCKFILE_DIR="+s.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kea: %v", err)
	}
	s.kea, s.keaEnd = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.keaEnd) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.keaEnd:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-s.keaEnd
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "exec", s.router, "ss", "-Hlun", "sport", "=", ":547").Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			return s
		}
		select {
		case <-s.keaEnd:
			t.Fatalf("kea exited at start:\n%s", s.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kea does not listen on 547 after 10 s:\n%s", s.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *segment) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "kea.log"))
	return string(b)
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tw{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tw struct{ t *testing.T }

func (w tw) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startCandidates starts one cluster-mode member per node netns, all in
// this process on one etcd.
func startCandidates(t *testing.T, ctx context.Context, cli *clientv3.Client, s *segment, seg string) []*Cluster {
	t.Helper()
	var cs []*Cluster
	for i, ns := range s.nodes {
		cfg, err := ParseConfig([]byte(`{"mode": "cluster", "interface": "` + segIf + `", "prefixLength": 56,
			"cluster": {"segment": "` + seg + `", "leaseTTL": "2s", "subnetLength": 60, "blockSize": 64}}`))
		if err != nil {
			t.Fatal(err)
		}
		node := fmt.Sprintf("node%d", i)
		log := testLog(t).With("test-node", node)
		alloc, err := allocator.New(ctx, store.New(cli), node, log)
		if err != nil {
			t.Fatal(err)
		}
		c := newCluster(cfg, cli, node, alloc, log)
		c.netns = "/var/run/netns/" + ns
		c.probeEvery = 200 * time.Millisecond
		if err := c.start(ctx); err != nil {
			t.Fatalf("%s: start: %v", node, err)
		}
		cs = append(cs, c)
	}
	return cs
}

func (c *Cluster) roleNow() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.role
}

func (c *Cluster) sent(msg string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.past.Sent[msg]
	if c.client != nil {
		n += c.client.Stats().Sent[msg]
	}
	return n
}

// leaders returns the members that lead now.
func leaders(cs []*Cluster) []*Cluster {
	var out []*Cluster
	for _, c := range cs {
		if c.roleNow() == RoleLeader {
			out = append(out, c)
		}
	}
	return out
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func storedAt(t *testing.T, cli *clientv3.Client, seg string) storedBinding {
	t.Helper()
	raw, _, err := clusterKV{cli: cli}.load(context.Background(), seg)
	if err != nil {
		t.Fatal(err)
	}
	var sb storedBinding
	if raw != nil {
		if err := json.Unmarshal(raw, &sb); err != nil {
			t.Fatal(err)
		}
	}
	return sb
}

// TestClusterTakeover: three candidates of one segment in one process on
// a real etcd and a real Kea. Exactly one leads and obtains the prefix;
// every member follows it (and its layout comes from the identity). The
// leader's session is revoked (its election key deleted, as when its
// lease expires): the next leader resumes the stored binding by Renew,
// never Solicits, and the prefix stays the same. A save by the deposed
// leader's term is refused by the leader guard and counted. A candidate
// whose interface is down is not ready and never leads.
func TestClusterTakeover(t *testing.T) {
	s := newSegment(t, 4)
	cli := etcdtest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	seg := "rack1-uplink"
	// The fourth node's uplink is down: not ready.
	sh(t, "ip", "-n", s.nodes[3], "link", "set", segIf, "down")
	cs := startCandidates(t, ctx, cli, s, seg)
	t.Cleanup(func() {
		cancel()
		for _, c := range cs {
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Errorf("%s: cluster side did not stop", c.node)
			}
		}
	})
	down := cs[3]

	start := time.Now()
	waitUntil(t, 30*time.Second, "a leader holding a prefix", func() bool {
		return len(leaders(cs)) == 1 && len(storedAt(t, cli, seg).Prefixes) > 0
	})
	first := leaders(cs)[0]
	b0 := storedAt(t, cli, seg)
	p := b0.Prefixes[0].Prefix
	t.Logf("leader %s obtained %s in %v (solicits %d)", first.node, p, time.Since(start).Round(time.Millisecond), first.sent("solicit"))
	if b0.Leader != first.node || p.Bits() != 56 {
		t.Fatalf("stored binding %+v: want leader %s and a /56", b0, first.node)
	}
	for _, c := range cs {
		waitUntil(t, 5*time.Second, c.node+" following the binding", func() bool {
			d := c.Delegated()
			return len(d) == 1 && d[0].Prefix == p
		})
		if sl, bs := c.PDLayout(); sl != 60 || bs != 64 {
			t.Errorf("%s: PDLayout %d/%d, want 60/64", c.node, sl, bs)
		}
	}
	if r := down.roleNow(); r != RoleNotReady {
		t.Errorf("%s (interface down): role %q, want %q", down.node, r, RoleNotReady)
	}
	st, _ := down.State(ctx)
	if !strings.Contains(st.Role, "down") || st.Leader != first.node || st.Segment != seg {
		t.Errorf("%s: state %+v: want role not ready (interface down), leader %s", down.node, st, first.node)
	}

	// The deposed leader's guard, kept to try a stale write later.
	resp, err := cli.Get(ctx, electionPrefix(seg)+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("election key: %v %v", resp, err)
	}
	key := resp.Kvs[0]
	if string(key.Value) != first.node {
		t.Fatalf("election key %s holds %q, want %s", key.Key, key.Value, first.node)
	}
	stale := &fencedPersister{c: first, rev: key.CreateRevision, won: time.Now(),
		leader: clientv3.Compare(clientv3.CreateRevision(string(key.Key)), "=", key.CreateRevision)}

	// The leader's lease ends: its election key is deleted.
	t0 := time.Now()
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(key.Lease)); err != nil {
		t.Fatal(err)
	}
	var next *Cluster
	waitUntil(t, 20*time.Second, "another leader saving a renewed binding", func() bool {
		b := storedAt(t, cli, seg)
		if b.Leader == "" || b.Leader == first.node || !b.ReplyTime.After(t0) {
			return false
		}
		for _, c := range cs {
			if c.node == b.Leader {
				next = c
			}
		}
		return true
	})
	took := time.Since(t0)
	b1 := storedAt(t, cli, seg)
	t.Logf("FIGURE election key deleted → renewed binding saved by %s: %v (take-over metric %.3fs)", next.node, took.Round(time.Millisecond), next.PDStats().Cluster.TakeoverSeconds)
	if len(b1.Prefixes) != 1 || b1.Prefixes[0].Prefix != p {
		t.Errorf("after take-over: prefixes %+v, want only %s", b1.Prefixes, p)
	}
	if n := next.sent("solicit"); n != 0 {
		t.Errorf("%s solicited %d times on take-over, want 0 (renew %d, rebind %d)", next.node, n, next.sent("renew"), next.sent("rebind"))
	}
	if n := next.sent("renew"); n == 0 {
		t.Errorf("%s: no Renew sent on take-over", next.node)
	}
	ms := next.PDStats().Cluster
	if ms.Takeovers["renew"] != 1 || !ms.Leader || ms.TakeoverSeconds < 0 {
		t.Errorf("%s: cluster metrics %+v: want one renew take-over, leader", next.node, ms)
	}
	waitUntil(t, 5*time.Second, "exactly one leader", func() bool { return len(leaders(cs)) == 1 })
	if l := leaders(cs)[0]; l != next {
		t.Errorf("leader %s, want %s", l.node, next.node)
	}
	if first.sent("release") != 0 {
		t.Errorf("%s sent a Release when it stepped down", first.node)
	}

	// A write by the deposed leader's term is refused and counted.
	before := first.PDStats().Cluster.Fenced
	err = stale.Save(ctx, b0.Binding)
	if !errors.Is(err, dhcp6pd.ErrNotOwner) {
		t.Errorf("stale Save: %v, want dhcp6pd's not-owner error", err)
	}
	if got := first.PDStats().Cluster.Fenced; got != before+1 {
		t.Errorf("fenced counter %d, want %d", got, before+1)
	}
	if b := storedAt(t, cli, seg); b.Leader != next.node {
		t.Errorf("after the stale write the binding's leader is %s, want %s", b.Leader, next.node)
	}

	// The down interface comes up: the candidate becomes a standby.
	sh(t, "ip", "-n", s.nodes[3], "link", "set", segIf, "up")
	waitUntil(t, 5*time.Second, down.node+" standby", func() bool { return down.roleNow() == RoleStandby })
	if len(leaders(cs)) != 1 {
		t.Errorf("leaders %d, want 1", len(leaders(cs)))
	}
}

// TestClusterIdentity: the first member creates the segment's identity
// (a random DUID-UUID when none is configured); a member whose configured
// keys disagree refuses to start, naming key, stored and configured value.
func TestClusterIdentity(t *testing.T) {
	cli := etcdtest.Client(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(node, raw string) (*Cluster, error) {
		cfg, err := ParseConfig([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		alloc, err := allocator.New(ctx, store.New(cli), node, log)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		c := newCluster(cfg, cli, node, alloc, log)
		return c, c.start(cctx)
	}
	a, err := start("a", `{"mode": "cluster", "cluster": {"segment": "s1", "candidate": false, "subnetLength": 60}}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.id.DUID) != 18 || a.id.DUID[1] != 4 || a.id.IAID != 1 || a.id.SubnetLength != 60 || a.id.BlockSize != 64 {
		t.Errorf("identity %+v: want a DUID-UUID, IAID 1, 60/64", a.id)
	}
	// Unset keys take the stored values.
	b, err := start("b", `{"mode": "cluster", "cluster": {"segment": "s1", "candidate": false}}`)
	if err != nil {
		t.Fatal(err)
	}
	if !b.id.DUID.Equal(a.id.DUID) || b.id.SubnetLength != 60 {
		t.Errorf("second member's identity %+v, want %+v", b.id, a.id)
	}
	for _, tc := range []struct{ raw, want string }{
		{`{"subnetLength": 64}`, "pd.cluster.subnetLength: segment s1 has 60 stored"},
		{`{"iaid": 2}`, "pd.cluster.iaid: segment s1 has 1 stored"},
		{`{"duid": "00:04:aa:bb:cc"}`, "configured 00:04:aa:bb:cc"},
	} {
		var extra map[string]any
		json.Unmarshal([]byte(tc.raw), &extra)
		sec := map[string]any{"segment": "s1", "candidate": false}
		for k, v := range extra {
			sec[k] = v
		}
		raw, _ := json.Marshal(map[string]any{"mode": "cluster", "cluster": sec})
		_, err := start("c", string(raw))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.raw, err, tc.want)
		}
	}
	// A configured DUID is the one stored by the first member.
	d, err := start("d", `{"mode": "cluster", "cluster": {"segment": "s2", "candidate": false, "duid": "00:04:aa:bb:cc", "iaid": 5}}`)
	if err != nil {
		t.Fatal(err)
	}
	if d.id.DUID.String() != "00:04:aa:bb:cc" || d.id.IAID != 5 {
		t.Errorf("identity %+v", d.id)
	}
	st, _ := d.State(ctx)
	if st.Mode != ModeCluster || st.Role != RoleConsumer || st.ClientDUID != "00:04:aa:bb:cc" || st.IAID != 5 || st.Leader != "" {
		t.Errorf("consumer state %+v", st)
	}
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), "no leader") {
		t.Errorf("Err() = %v, want no leader", err)
	}
	_ = dhcp6pd.DUID(nil)
}

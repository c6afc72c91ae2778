// Package netlab builds a routed multi-node v6cni network out of network
// namespaces, for tests (root only):
//
//	                 switch netns: bridge br0 (the shared link)
//	   ┌──────────────┬──────────────┬──────────────┬──────────────┐
//	router netns    etcd netns     node-0 netns   node-1 netns    (node-2)
//	BIRD or gobgpd  Debian's etcd  ipamd (AS      ipamd
//	AS 65000        one member     65001) +       ...
//	kernel routes                  bridge-v6 pods
//	to the blocks
//
// With Options.DHCP one more netns "dhcp" on the link runs Kea or dhcpd
// delegating prefixes from a PD pool (Lab.DHCP), and Options.PD gives
// the nodes' ipamds a pd section on lan0 (node or cluster mode);
// AddPDPod attaches a pod to the pd-ipam network (AddPDPodMode in a
// bridge-v6 ipv6Mode such as slaac). The router learns the delegated
// blocks by BGP as any other. Router.AddHost puts a host behind the router
// (off the link): a far end that reaches pods only by the router's
// routes.
//
// Every host has one interface "lan0" on the link with an IPv6 address of
// LinkPrefix6 (and, with Options.IPv4, one of LinkPrefix4). Nodes forward,
// route by default via the router and accept no redirects, so a packet
// from a pod on one node to a pod on another crosses exactly three routers:
// its node, the router (which learned the other node's blocks by BGP) and
// the other node. Each node runs its own ipamd inside its netns, with
// --etcd-endpoints on the link and a config file whose bgp section peers
// the router from the node's link address. A pod is a netns; ADD, DEL and
// CHECK exec bridge-v6 inside the node's netns with CNI_NETNS pointing at
// the pod, and bridge-v6 execs ipam-v6 (from CNI_PATH), which asks the
// node's ipamd: every node serves the same pools (Lab.Pool6, Lab.Pool4).
//
// The router's BGP table (Router.Routes: `birdc show route`, gobgpd's
// RIB) is what tests check; its kernel table (Router.KernelRoutes) is what
// it forwards by.
//
// Every netns is named "nl-<lab id>-<role>", every process is started by
// the lab and killed by pid, and everything is removed when the test ends,
// passed or failed. Nothing is created in the host's netns.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/wait"
)

// RouterKind selects the BGP daemon of the router netns.
type RouterKind string

// The routers a lab can run.
const (
	// BIRD is BIRD 2 (Debian bird2); its kernel protocol installs the
	// learned routes.
	BIRD RouterKind = "bird"
	// GoBGP is gobgpd (Debian gobgpd). Debian has no zebra to install its
	// routes into the kernel, so the lab does it: it follows gobgpd's best
	// paths over the gRPC API and mirrors them into the router's main table
	// (proto bgp).
	GoBGP RouterKind = "gobgpd"
)

// Options shape a lab. Zero values take the defaults.
type Options struct {
	// Router is the BGP daemon of the router (default BIRD).
	Router RouterKind
	// Nodes is the number of nodes (default 2), named node-0, node-1, ...
	Nodes int
	// IPv4 gives every host an IPv4 address on the link as well and makes
	// the nodes announce their IPv4 blocks (next hop their IPv4 address):
	// what a dual-stack network needs.
	IPv4 bool
	// HoldTime is the BGP hold time the nodes propose, in seconds (default
	// 9, the minimum that still tolerates a busy machine).
	HoldTime int
	// RestartTime is the nodes' graceful-restart time in seconds (default
	// 5): how long the router keeps a stopped node's routes as stale.
	RestartTime int
	// NoGracefulRestart turns graceful restart off on the nodes.
	NoGracefulRestart bool
	// BlockSize6 and BlockSize4 are the pools' block sizes (defaults 64
	// and 26: small IPv4 blocks, so a node's IPv4 routes are visibly its
	// own).
	BlockSize6, BlockSize4 int
	// IpamdArgs are extra flags of every `ipamd serve`.
	IpamdArgs []string
	// DHCP is the delegating DHCPv6 server on the link (default none);
	// DHCPServer shapes its pool and lifetimes (Lab.DHCP).
	DHCP       DHCPKind
	DHCPServer DHCPOptions
	// PD is every node's pd section (nil: none); NodePD, when set,
	// gives node i's instead (nil: none for that node).
	PD     *PD
	NodePD func(i int) *PD
}

func (o *Options) setDefaults() {
	if o.Router == "" {
		o.Router = BIRD
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.HoldTime == 0 {
		o.HoldTime = 9
	}
	if o.RestartTime == 0 {
		o.RestartTime = 5
	}
	if o.BlockSize6 == 0 {
		o.BlockSize6 = 64
	}
	if o.BlockSize4 == 0 {
		o.BlockSize4 = 26
	}
}

// Lab is a running routed network: the link, the router, etcd and the
// nodes.
type Lab struct {
	t testing.TB
	// ID makes the lab's names unique (6 hex digits).
	ID string
	// Dir holds config files, logs, sockets (short: unix socket paths are
	// limited to 107 bytes).
	Dir  string
	Opts Options
	// Bin is the directory of bridge-v6, ipam-v6 and ipamd.
	Bin string
	// Switch is the netns of the link's bridge.
	Switch string
	// LinkPrefix6 and LinkPrefix4 are the link's subnets (LinkPrefix4 is
	// valid only with Options.IPv4).
	LinkPrefix6, LinkPrefix4 netip.Prefix
	// Pool6 and Pool4 are the pods' pools, shared by every node (Pool4
	// only with Options.IPv4).
	Pool6, Pool4 netip.Prefix
	Router       *Router
	Etcd         *Etcd
	// DHCP is the delegating server (Options.DHCP; nil without).
	DHCP  *DHCPServer
	Nodes []*Node
	// Timings is how long each step of New took.
	Timings Timings

	mu         sync.Mutex
	namespaces []string
	podSeq     atomic.Int64
	hostSeq    atomic.Int64
}

// Timings measure the bring-up of a lab.
type Timings struct {
	Build, Link, Etcd, Router, Nodes, BGP, Total time.Duration
}

func (t Timings) String() string {
	return fmt.Sprintf("total %s (build %s, link %s, etcd %s, router %s, ipamds %s, BGP established %s)",
		t.Total.Round(time.Millisecond), t.Build.Round(time.Millisecond), t.Link.Round(time.Millisecond), t.Etcd.Round(time.Millisecond),
		t.Router.Round(time.Millisecond), t.Nodes.Round(time.Millisecond), t.BGP.Round(time.Millisecond))
}

// link addressing: fixed host numbers in a per-lab ULA /64 (the lab's
// namespaces are private, so the IPv4 /24 can be the same in every lab).
const (
	hostRouter = 1
	hostEtcd   = 2
	hostNode0  = 0x11
)

// New builds and starts a lab: the link, etcd, the router and every node,
// and waits until each node's BGP session is established. It fails the
// test on any error; everything is removed when the test ends.
func New(t testing.TB, o Options) *Lab {
	t.Helper()
	requireRoot(t)
	o.setDefaults()
	for _, b := range []string{"ip", "sysctl", "ping", EtcdBin} {
		requireBinary(t, b)
	}
	start := time.Now()
	l := &Lab{t: t, ID: randomHex(3), Opts: o, Bin: Binaries(t)}
	l.Timings.Build = time.Since(start)
	step := time.Now()
	dir, err := os.MkdirTemp("", "nl-")
	if err != nil {
		t.Fatal(err)
	}
	l.Dir = dir
	// One per lab: the prefix is fd6c:<id>::/64 (ULA, RFC 4193).
	l.LinkPrefix6 = netip.MustParsePrefix(fmt.Sprintf("fd6c:%s:%s::/64", l.ID[:4], l.ID[4:]))
	l.LinkPrefix4 = netip.MustParsePrefix("192.0.2.0/24")
	l.Pool6 = netip.MustParsePrefix(fmt.Sprintf("fd6d:%s:%s00::/56", l.ID[:4], l.ID[4:]))
	l.Pool4 = netip.MustParsePrefix("10.244.0.0/16")
	t.Cleanup(l.cleanup)

	l.Switch = l.newNetns("sw")
	l.mustRun("ip", "-n", l.Switch, "link", "add", "br0", "type", "bridge")
	if o.DHCP != NoDHCP {
		// Clients Solicit/Renew/Rebind to ff02::1:2: no snooping, so that
		// the bridge floods them to the server whatever MLD it saw.
		l.mustRun("ip", "-n", l.Switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
	}
	l.mustRun("ip", "-n", l.Switch, "link", "set", "br0", "up")
	l.Timings.Link = time.Since(step)

	step = time.Now()
	l.Etcd = l.startEtcd()
	l.Timings.Etcd = time.Since(step)

	if o.DHCP != NoDHCP {
		l.DHCP = l.startDHCP()
	}

	step = time.Now()
	for i := range o.Nodes {
		l.Nodes = append(l.Nodes, l.newNode(i))
	}
	l.Router = l.startRouter()
	l.Timings.Router = time.Since(step)

	step = time.Now()
	for _, n := range l.Nodes {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	l.Timings.Nodes = time.Since(step)

	step = time.Now()
	if err := l.Router.WaitEstablished(l.Nodes, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Timings.BGP = time.Since(step)
	l.Timings.Total = time.Since(start)
	return l
}

// linkAddr6 is host number h on the link.
func (l *Lab) linkAddr6(h int) netip.Addr {
	a := l.LinkPrefix6.Addr().As16()
	a[14], a[15] = byte(h>>8), byte(h)
	return netip.AddrFrom16(a)
}

func (l *Lab) linkAddr4(h int) netip.Addr {
	a := l.LinkPrefix4.Addr().As4()
	a[3] = byte(h)
	return netip.AddrFrom4(a)
}

// newNetns creates the netns nl-<id>-<role> with lo up; cleanup deletes it.
func (l *Lab) newNetns(role string) string {
	l.t.Helper()
	name := l.netnsName(role)
	l.track(name)
	if err := createNetns(name); err != nil {
		l.t.Fatal(err)
	}
	return name
}

// track registers netns name for deletion by cleanup (before it exists:
// a half-made netns goes too).
func (l *Lab) track(name string) {
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
}

func (l *Lab) netnsName(role string) string { return "nl-" + l.ID + "-" + role }

func createNetns(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return nil
}

// attach plugs netns ns into the link: its "lan0" is a veth whose peer
// "port" is a port of the switch's bridge.
func (l *Lab) attach(ns, port string, addrs ...netip.Addr) error {
	cmds := [][]string{
		{"ip", "link", "add", "lan0", "netns", ns, "type", "veth", "peer", "name", port, "netns", l.Switch},
		{"ip", "-n", l.Switch, "link", "set", port, "master", "br0", "up"},
	}
	for _, a := range addrs {
		bits := 64
		if a.Is4() {
			bits = l.LinkPrefix4.Bits()
		}
		cmds = append(cmds, []string{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(a, bits).String(), "dev", "lan0", "nodad"})
	}
	cmds = append(cmds, []string{"ip", "-n", ns, "link", "set", "lan0", "up"})
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// sysctl sets kernel parameters inside netns ns in one exec.
func sysctl(ns string, kv ...string) error {
	args := append([]string{"netns", "exec", ns, "sysctl", "-qw"}, kv...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("sysctl in %s %s: %v: %s", ns, strings.Join(kv, " "), err, out)
	}
	return nil
}

// Exec runs a command inside netns ns and returns its combined output.
func Exec(ctx context.Context, ns string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in netns %s: %s: %w: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func (l *Lab) mustRun(args ...string) {
	l.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// cleanup stops every process (by pid) and deletes every netns, logging
// the logs' tails when the test failed.
func (l *Lab) cleanup() {
	failed := l.t.Failed()
	for _, n := range l.Nodes {
		n.Kill()
		if failed {
			l.t.Logf("ipamd %s log (tail):\n%s", n.Name, tailFile(n.LogPath, 6000))
		}
	}
	if l.Router != nil {
		l.Router.stop()
		if failed {
			l.t.Logf("router (%s) log (tail):\n%s", l.Router.Kind, l.Router.logTail())
		}
	}
	if l.DHCP != nil {
		l.DHCP.Stop()
		if failed {
			l.t.Logf("DHCP server (%s) log (tail):\n%s", l.DHCP.Kind, l.DHCP.LogTail(4000))
		}
	}
	if l.Etcd != nil {
		l.Etcd.stop()
		if failed {
			l.t.Logf("etcd log (tail):\n%s", tailFile(l.Etcd.logPath, 3000))
		}
	}
	// Pods' and nodes' netns first (they hold veths into the switch).
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.namespaces) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", l.namespaces[i]).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "No such file") {
			l.t.Logf("netlab cleanup: ip netns del %s: %v: %s", l.namespaces[i], err, out)
		}
	}
	if l.Dir != "" {
		os.RemoveAll(l.Dir)
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netlab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): network namespaces, veths, bridges; run the tests as root")
	}
}

func requireBinary(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: run scripts/install-deps.sh as root (%v)", name, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// Poll calls cond every interval until it returns true or timeout
// passes (wait.Poll, under the name the lab's callers use).
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	return wait.Poll(timeout, interval, cond)
}

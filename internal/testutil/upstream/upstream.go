// Package upstream builds, for tests (root only), the upstream of a
// provider network: a shared segment with two redundant IPv6 routers on
// it, a DHCPv6 server and hosts, and a far network behind the routers.
//
//	     far host netns (FarHost 2001:db8:ff::100, default route by RA)
//	                        │
//	      switch netns: br1 (far link 2001:db8:ff::/64)
//	            │                           │
//	      router netns R1             router netns R2
//	  radvd (+ keepalived VRRPv3)  radvd (+ keepalived VRRPv3)
//	            │ seg[.vlan]                │ seg[.vlan]
//	      switch netns: br0 (the provider segment, Config.Prefix)
//	    │                 │                     │
//	segment host netns  AddSegmentAddr hosts   AttachNode: a veth (a trunk
//	SegmentHost ::100   (duplicate detection)  with Config.VLAN) into the
//	DNS ::53, Kea DHCPv6                       caller's netns (a node)
//
// In Mode VRRP the routers run keepalived (VRRP version 3, IPv6): one
// instance on the segment leg (virtual addresses fe80::1 and <prefix>::1)
// and one on the far leg (fe80::1 and 2001:db8:ff::1), in one sync group,
// so that the master owns both; radvd on both routers sends with
// AdvRASrcAddress fe80::1, so only the master's RAs go out, from the
// virtual link-local. In Mode TwoRouters there is no keepalived: both
// routers send RAs from their own link-locals and hosts fail over by
// neighbour unreachability detection.
//
// The RA's flags follow Config.Addressing (M, O and the prefix's A flag),
// and carry RDNSS DNS (<prefix>::53) and, with Config.SearchDomain, a
// DNSSL. In the DHCPv6 modes Kea serves the segment (stateful: addresses
// from <prefix>::1000 to <prefix>::1fff; both: DNS and the search
// domain).
//
// With Config.VLAN > 0 the segment's frames are tagged: the routers', the
// segment host's and AddSegmentAddr's hosts' segment interfaces are
// <if>.<vlan> sub-interfaces, and AttachNode hands the node a trunk
// (untagged veth carrying the tagged frames: the node makes its own
// <if>.<vlan>). That needs 802.1Q in the kernel (see package vmtest).
//
// Every netns is named "up-<lab id>-<role>", every process is started by
// the lab and signalled by pid, and everything goes when the test ends,
// passed or failed. Nothing is created in the caller's netns.
package upstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/v6cni/v6cni/internal/testutil/wait"
)

// Mode is the first-hop redundancy of the upstream routers.
type Mode string

// The modes.
const (
	// VRRP: keepalived VRRPv3 moves fe80::1 (and <prefix>::1) between
	// the routers; RAs come from fe80::1.
	VRRP Mode = "vrrp"
	// TwoRouters: both routers advertise themselves from their own
	// link-local addresses; no keepalived.
	TwoRouters Mode = "two-routers"
)

// Addressing is how hosts on the segment get their addresses (the RA's
// M, O and A flags).
type Addressing string

// The address modes.
const (
	// SLAAC: A=1, M=0, O=0.
	SLAAC Addressing = "slaac"
	// DHCPv6Stateless: A=1, M=0, O=1 (Kea answers Information-requests).
	DHCPv6Stateless Addressing = "dhcpv6-stateless"
	// DHCPv6Stateful: A=0, M=1, O=1 (Kea leases addresses).
	DHCPv6Stateful Addressing = "dhcpv6-stateful"
	// Static: A=0, M=0, O=0; the prefix is on-link only.
	Static Addressing = "static"
)

// Fixed addresses of the lab.
var (
	// GatewayLL is the virtual link-local of the routers (VRRP mode).
	GatewayLL = netip.MustParseAddr("fe80::1")
	// FarPrefix is the far link, behind the routers.
	FarPrefix = netip.MustParsePrefix("2001:db8:ff::/64")
	// FarHost is the host on the far link.
	FarHost = netip.MustParseAddr("2001:db8:ff::100")
	// DefaultPrefix is Config.Prefix's default.
	DefaultPrefix = netip.MustParsePrefix("2001:db8:22::/64")
)

// PDDelegatedLength is the length of the prefixes Kea delegates from
// Config.PDPool.
const PDDelegatedLength = 60

// Config shapes a lab. Zero values take the defaults.
type Config struct {
	// Mode is VRRP (default) or TwoRouters.
	Mode Mode
	// Addressing sets the RA's flags (default SLAAC).
	Addressing Addressing
	// Prefix is the segment's /64 (default 2001:db8:22::/64).
	Prefix netip.Prefix
	// VLAN > 0 tags the segment (see the package doc).
	VLAN int
	// AdvertInterval is VRRP's advertisement interval (default 1 s;
	// keepalived takes steps of 10 ms with VRRPv3).
	AdvertInterval time.Duration
	// RouterLifetime is the RAs' router lifetime (default 1800 s).
	RouterLifetime time.Duration
	// Preference is the RAs' default router preference: "low",
	// "medium" (default) or "high".
	Preference string
	// SearchDomain, when set, goes out in the RA's DNSSL and in Kea's
	// domain-search option.
	SearchDomain string
	// PDPool, when set, makes Kea run whatever the addressing and
	// delegate /60s of it by DHCPv6-PD (a node's ipamd as the
	// requesting router), with short timers (T1 3 s, T2 6 s, preferred
	// 30 s, valid 60 s) so that renewals happen within a test.
	PDPool netip.Prefix
}

func (c *Config) setDefaults() error {
	if c.Mode == "" {
		c.Mode = VRRP
	}
	if c.Mode != VRRP && c.Mode != TwoRouters {
		return fmt.Errorf("upstream: unknown mode %q", c.Mode)
	}
	if c.Addressing == "" {
		c.Addressing = SLAAC
	}
	switch c.Addressing {
	case SLAAC, DHCPv6Stateless, DHCPv6Stateful, Static:
	default:
		return fmt.Errorf("upstream: unknown addressing %q", c.Addressing)
	}
	if !c.Prefix.IsValid() {
		c.Prefix = DefaultPrefix
	}
	if c.Prefix.Bits() != 64 || !c.Prefix.Addr().Is6() {
		return fmt.Errorf("upstream: prefix %s: want an IPv6 /64", c.Prefix)
	}
	c.Prefix = c.Prefix.Masked()
	if c.PDPool.IsValid() && (!c.PDPool.Addr().Is6() || c.PDPool.Bits() > PDDelegatedLength) {
		return fmt.Errorf("upstream: pd pool %s: want an IPv6 prefix of at most /%d", c.PDPool, PDDelegatedLength)
	}
	if c.VLAN < 0 || c.VLAN > 4094 {
		return fmt.Errorf("upstream: vlan %d out of 1..4094", c.VLAN)
	}
	if c.AdvertInterval == 0 {
		c.AdvertInterval = time.Second
	}
	if c.AdvertInterval < 10*time.Millisecond {
		return fmt.Errorf("upstream: advert interval %s below VRRPv3's 10 ms", c.AdvertInterval)
	}
	if c.RouterLifetime == 0 {
		c.RouterLifetime = 1800 * time.Second
	}
	if c.Preference == "" {
		c.Preference = "medium"
	}
	switch c.Preference {
	case "low", "medium", "high":
	default:
		return fmt.Errorf("upstream: preference %q: want low, medium or high", c.Preference)
	}
	return nil
}

// Lab is a running upstream.
type Lab struct {
	t testing.TB
	// ID makes the lab's names unique (6 hex digits).
	ID string
	// Dir holds the daemons' configs, logs and pid files.
	Dir    string
	Config Config
	// Switch is the netns of br0 (the segment) and br1 (the far link).
	Switch string
	// Routers are R1 (VRRP priority 200, the first master) and R2 (100).
	Routers [2]*Router
	// Gateway is <prefix>::1 (a virtual address in VRRP mode), DNS
	// <prefix>::53 and SegmentHost <prefix>::100 (both held by the
	// segment host).
	Gateway, DNS, SegmentHost netip.Addr
	// SegmentNS is the segment host's netns (Kea runs there); FarNS the
	// far host's.
	SegmentNS, FarNS string
	// Kea is the DHCPv6 server on the segment host (the DHCPv6 address
	// modes and with Config.PDPool only; nil otherwise).
	Kea *Kea

	mu         sync.Mutex
	namespaces []string
	procs      []*proc
	seq        int
}

// Start builds and starts a lab and waits until the segment has its
// routers (in VRRP mode: a master owns fe80::1). It fails the test on
// any error; everything is removed when the test ends.
func Start(t testing.TB, cfg Config) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("upstream: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): network namespaces, veths, bridges; run the tests as root")
	}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	bins := []string{"ip", "radvd"}
	if cfg.Mode == VRRP {
		bins = append(bins, "keepalived")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("upstream: %s not found: run scripts/install-deps.sh as root (%v)", b, err)
		}
	}
	l := &Lab{t: t, ID: randomHex(3), Config: cfg,
		Gateway: hostAddr(cfg.Prefix, 1), DNS: hostAddr(cfg.Prefix, 0x53), SegmentHost: hostAddr(cfg.Prefix, 0x100)}
	dir, err := os.MkdirTemp("", "up-")
	if err != nil {
		t.Fatal(err)
	}
	l.Dir = dir
	t.Cleanup(l.cleanup)
	if err := l.build(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *Lab) build() error {
	var err error
	if l.Switch, err = l.NewNetns("sw"); err != nil {
		return err
	}
	for _, br := range []string{"br0", "br1"} {
		// No snooping: VRRP, RAs and DHCPv6 are multicast, and the
		// bridge must flood them whatever MLD it saw.
		if err := run("ip", "-n", l.Switch, "link", "add", br, "type", "bridge", "mcast_snooping", "0"); err != nil {
			return err
		}
		if err := run("ip", "-n", l.Switch, "link", "set", br, "up"); err != nil {
			return err
		}
	}
	// The segment host: SegmentHost and DNS, Kea.
	if l.SegmentNS, err = l.NewNetns("seg"); err != nil {
		return err
	}
	if _, err := l.segmentPort(l.SegmentNS, "eth0", l.SegmentHost, l.DNS); err != nil {
		return err
	}
	// The far host learns its default route by RA.
	if l.FarNS, err = l.NewNetns("far"); err != nil {
		return err
	}
	if err := l.veth(l.FarNS, "eth0", "br1", "hf"); err != nil {
		return err
	}
	if err := Sysctl(l.FarNS, "net.ipv6.conf.eth0.accept_dad=0", "net.ipv6.conf.eth0.accept_ra=1", "net.ipv6.conf.eth0.autoconf=0"); err != nil {
		return err
	}
	if err := l.addAddrs(l.FarNS, "eth0", FarHost); err != nil {
		return err
	}
	if err := run("ip", "-n", l.FarNS, "link", "set", "eth0", "up"); err != nil {
		return err
	}
	for i := range l.Routers {
		r, err := l.newRouter(i)
		if err != nil {
			return err
		}
		l.Routers[i] = r
	}
	for _, r := range l.Routers {
		if err := r.start(); err != nil {
			return err
		}
	}
	if l.Config.Addressing == DHCPv6Stateful || l.Config.Addressing == DHCPv6Stateless || l.Config.PDPool.IsValid() {
		if l.Kea, err = l.startKea(); err != nil {
			return err
		}
	}
	if l.Config.Mode == VRRP {
		if !Poll(30*time.Second, 50*time.Millisecond, func() bool { return l.Master() != nil }) {
			return fmt.Errorf("upstream: no VRRP master within 30s:\n%s", l.Routers[0].logTail())
		}
	}
	// The far host has its default route (the return path).
	if !Poll(30*time.Second, 50*time.Millisecond, func() bool {
		out, _ := Exec(context.Background(), l.FarNS, "ip", "-6", "route", "show", "default")
		return strings.Contains(string(out), "via")
	}) {
		return fmt.Errorf("upstream: far host got no default route by RA within 30s")
	}
	return nil
}

// segIf is the segment interface name on top of base (the VLAN
// sub-interface with Config.VLAN).
func (l *Lab) segIf(base string) string {
	if l.Config.VLAN > 0 {
		return fmt.Sprintf("%s.%d", base, l.Config.VLAN)
	}
	return base
}

// segmentPort plugs netns nsName into br0 with a veth named base (and
// base.<vlan> on top with Config.VLAN), holding addrs on the segment
// interface, which it returns, up, not accepting RAs. Addresses are
// added without DAD: the hosts are the lab's.
func (l *Lab) segmentPort(nsName, base string, addrs ...netip.Addr) (string, error) {
	l.mu.Lock()
	l.seq++
	port := fmt.Sprintf("s%d", l.seq)
	l.mu.Unlock()
	if err := l.veth(nsName, base, "br0", port); err != nil {
		return "", err
	}
	ifn := l.segIf(base)
	if err := run("ip", "-n", nsName, "link", "set", base, "up"); err != nil {
		return "", err
	}
	if l.Config.VLAN > 0 {
		if err := run("ip", "-n", nsName, "link", "add", "link", base, "name", ifn, "type", "vlan", "id", fmt.Sprint(l.Config.VLAN)); err != nil {
			return "", err
		}
	}
	if err := Sysctl(nsName, "net.ipv6.conf."+sysctlIf(ifn)+".accept_dad=0", "net.ipv6.conf."+sysctlIf(ifn)+".accept_ra=0"); err != nil {
		return "", err
	}
	if err := l.addAddrs(nsName, ifn, addrs...); err != nil {
		return "", err
	}
	return ifn, run("ip", "-n", nsName, "link", "set", ifn, "up")
}

// veth creates ifName in netns nsName whose peer port is a port of
// bridge br in the switch, up.
func (l *Lab) veth(nsName, ifName, br, port string) error {
	if err := run("ip", "-n", l.Switch, "link", "add", port, "type", "veth", "peer", "name", ifName, "netns", nsName); err != nil {
		return err
	}
	return run("ip", "-n", l.Switch, "link", "set", port, "master", br, "up")
}

func (l *Lab) addAddrs(nsName, ifName string, addrs ...netip.Addr) error {
	for _, a := range addrs {
		if err := run("ip", "-n", nsName, "addr", "add", netip.PrefixFrom(a, 64).String(), "dev", ifName, "nodad"); err != nil {
			return err
		}
	}
	return nil
}

// AttachNode plugs a node into the segment: a veth whose one end is a
// port of br0 and whose other end, ifName, is moved into the netns
// netnsPath (a path such as /var/run/netns/x or /proc/<pid>/ns/net, or
// a netns name) and left down, unconfigured. With Config.VLAN the port
// is a trunk: the segment's frames reach ifName tagged.
func (l *Lab) AttachNode(netnsPath, ifName string) error {
	l.mu.Lock()
	l.seq++
	port := fmt.Sprintf("n%d", l.seq)
	l.mu.Unlock()
	tmp := "t" + l.ID + port
	if len(tmp) > 15 {
		tmp = tmp[:15]
	}
	// The node's end is made in the switch and moved (and renamed), so
	// that netnsPath may be any netns reference ip understands.
	if err := run("ip", "-n", l.Switch, "link", "add", port, "type", "veth", "peer", "name", tmp); err != nil {
		return err
	}
	if err := run("ip", "-n", l.Switch, "link", "set", port, "master", "br0", "up"); err != nil {
		return err
	}
	if err := run("ip", "-n", l.Switch, "link", "set", tmp, "netns", netnsPath, "name", ifName); err != nil {
		_ = run("ip", "-n", l.Switch, "link", "del", port)
		return fmt.Errorf("upstream: attach node %s: %w", netnsPath, err)
	}
	return nil
}

// AddSegmentAddr starts one more host on the segment holding addr (a
// neighbour that answers for it: a conflict for duplicate address
// detection). It returns the host's netns.
func (l *Lab) AddSegmentAddr(addr netip.Addr) (string, error) {
	if !l.Config.Prefix.Contains(addr) {
		return "", fmt.Errorf("upstream: %s is not in the segment's prefix %s", addr, l.Config.Prefix)
	}
	l.mu.Lock()
	n := l.seq + 1
	l.mu.Unlock()
	nsName, err := l.NewNetns(fmt.Sprintf("a%d", n))
	if err != nil {
		return "", err
	}
	if _, err := l.segmentPort(nsName, "eth0", addr); err != nil {
		return "", err
	}
	return nsName, nil
}

// NewNetns creates the netns up-<id>-<role> (lo up), deleted when the
// test ends, and returns its name (its path is NetnsPath(name)).
func (l *Lab) NewNetns(role string) (string, error) {
	name := "up-" + l.ID + "-" + role
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	if err := run("ip", "netns", "add", name); err != nil {
		return "", err
	}
	return name, run("ip", "-n", name, "link", "set", "lo", "up")
}

// NetnsPath is the path of the named netns.
func NetnsPath(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	return filepath.Join("/var/run/netns", name)
}

// cleanup stops every process (by pid) and deletes every netns, logging
// the daemons' logs when the test failed.
func (l *Lab) cleanup() {
	failed := l.t.Failed()
	l.mu.Lock()
	procs := append([]*proc(nil), l.procs...)
	l.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	if failed {
		for _, r := range l.Routers {
			if r != nil {
				l.t.Logf("router %s log (tail):\n%s", r.Name, r.logTail())
			}
		}
		if l.Kea != nil {
			l.t.Logf("kea log (tail):\n%s", tailFile(l.Kea.logPath, 3000))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.namespaces) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", l.namespaces[i]).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "No such file") {
			l.t.Logf("upstream cleanup: ip netns del %s: %v: %s", l.namespaces[i], err, out)
		}
	}
	if l.Dir != "" {
		os.RemoveAll(l.Dir)
	}
}

// hostAddr is host number h of prefix p.
func hostAddr(p netip.Prefix, h int) netip.Addr {
	a := p.Masked().Addr().As16()
	a[14], a[15] = byte(h>>8), byte(h)
	return netip.AddrFrom16(a)
}

// proc is one process the lab started; it is only ever signalled by pid.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// start starts args inside netns nsName (`ip netns exec` execs the
// command, so the pid is the command's), output to logPath. The process
// gets SIGKILL if the test binary dies.
func (l *Lab) start(nsName, logPath string, env []string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", nsName}, args...)...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = f, f, l.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in netns %s: %w", args[0], nsName, err)
	}
	p := &proc{name: args[0], cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// pids is the process and its children (keepalived forks its VRRP
// child), read from /proc.
func (p *proc) pids() []int {
	pids := []int{p.cmd.Process.Pid}
	for i := 0; i < len(pids); i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pids[i], pids[i]))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			var c int
			if _, err := fmt.Sscan(f, &c); err == nil {
				pids = append(pids, c)
			}
		}
	}
	return pids
}

// signal sends sig to the process and its children.
func (p *proc) signal(sig syscall.Signal) {
	if p.exited() {
		return
	}
	for _, pid := range p.pids() {
		_ = syscall.Kill(pid, sig)
	}
}

// kill SIGKILLs the process and its children and waits for it.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// stop SIGTERMs the process and waits for it; SIGKILL after 10 s.
func (p *proc) stop() {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// Exec runs a command inside netns nsName and returns its combined
// output.
func Exec(ctx context.Context, nsName string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", nsName}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in netns %s: %s: %w: %s", nsName, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Sysctl sets kernel parameters ("net.ipv6.conf.eth0.accept_ra=1")
// inside netns nsName (a name or a path), writing /proc/sys from a thread
// in that netns: no sysctl binary needed. A dot in an interface name is
// written as "/" (the sysctl convention): see SysctlIf.
func Sysctl(nsName string, kv ...string) error {
	netns, err := ns.GetNS(NetnsPath(nsName))
	if err != nil {
		return fmt.Errorf("sysctl: %w", err)
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error {
		for _, s := range kv {
			k, v, ok := strings.Cut(s, "=")
			if !ok {
				return fmt.Errorf("sysctl %q: want key=value", s)
			}
			// The sysctl convention: "." separates, "/" stands for a dot
			// inside a name (net.ipv6.conf.eth0/22.accept_ra).
			p := "/proc/sys/" + strings.Map(func(r rune) rune {
				switch r {
				case '.':
					return '/'
				case '/':
					return '.'
				}
				return r
			}, k)
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl in %s: %s: %w", nsName, s, err)
			}
		}
		return nil
	})
}

// SysctlIf escapes an interface name for Sysctl's keys: "eth0.22" is
// "eth0/22" (its dot would be taken for a separator).
func SysctlIf(name string) string { return strings.ReplaceAll(name, ".", "/") }

func sysctlIf(name string) string { return SysctlIf(name) }

func run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
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

func tailFile(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/v6cni/v6cni/internal/testutil/upstream"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// uplink is the node's interface on the provider segment.
const uplink = "eth1"

// node is a host on the lab's segment, as a real one: a netns whose
// uplink eth1 has an address of the provider prefix, static or its own
// SLAAC one (and learns its default route from the routers' RAs), running its own ipamd, the
// runtime calling the real plugins in it through libcni.
type node struct {
	lab *upstream.Lab
	// ns is the node's netns; addr its address on the segment.
	ns   string
	addr netip.Addr
	// slaac: the node's address is its own SLAAC one (not static).
	slaac bool
	// provBridge is the bridge of the provider network, routedBridge
	// that of the node's own routed network.
	provBridge, routedBridge string
	dir, socket, logPath     string
	client                   *ipamapi.Client
	cni                      *libcni.CNIConfig
	seq                      int
}

// newNode attaches a node to the lab's segment at <prefix>::<host>
// (host 0: the node forms its address by SLAAC from the routers' RAs)
// and starts its ipamd (embedded etcd, socket in a temporary directory)
// with ipamdArgs added to its command line.
func newNode(t *testing.T, l *upstream.Lab, host int, ipamdArgs ...string) *node {
	t.Helper()
	nsName, err := l.NewNetns(fmt.Sprintf("n%d", host))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AttachNode(nsName, uplink); err != nil {
		t.Fatal(err)
	}
	n := &node{lab: l, ns: nsName, provBridge: "bp" + l.ID, routedBridge: "br" + l.ID, slaac: host == 0}
	// bridge-v6's lock of the provider bridge's first ADD is a file in
	// the host's /run, which outlives the node's netns.
	t.Cleanup(func() { os.Remove(filepath.Join("/run/v6cni", "provider-"+n.provBridge+".lock")) })
	// The node's default route comes from the routers' RAs; its address
	// is static (configured by hand) or its own SLAAC one.
	k := "net.ipv6.conf." + uplink + "."
	autoconf := "0"
	if host == 0 {
		autoconf = "1"
	}
	if err := upstream.Sysctl(nsName, k+"accept_ra=1", k+"autoconf="+autoconf, k+"accept_dad=0"); err != nil {
		t.Fatal(err)
	}
	if host != 0 {
		n.addr = hostAddr(l.Config.Prefix, host)
		run(t, "ip", "-n", nsName, "addr", "add", netip.PrefixFrom(n.addr, 64).String(), "dev", uplink, "nodad")
	}
	run(t, "ip", "-n", nsName, "link", "set", uplink, "up")
	if !upstream.Poll(30*time.Second, 50*time.Millisecond, func() bool {
		if !strings.Contains(out(t, nsName, "ip", "-6", "route", "show", "default"), "via") {
			return false
		}
		if host != 0 {
			return true
		}
		for _, f := range strings.Fields(out(t, nsName, "ip", "-6", "-o", "addr", "show", "dev", uplink, "scope", "global")) {
			if p, err := netip.ParsePrefix(f); err == nil && l.Config.Prefix.Contains(p.Addr()) {
				n.addr = p.Addr()
				return true
			}
		}
		return false
	}) {
		t.Fatalf("node %s: no default route (or SLAAC address) from the routers' RAs within 30s: %s", nsName,
			out(t, nsName, "ip", "-6", "addr", "show", "dev", uplink))
	}

	// A short directory: a unix socket path is limited to 108 bytes.
	n.dir, err = os.MkdirTemp("", "v6p-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(n.dir) })
	n.socket = filepath.Join(n.dir, "ipamd.sock")
	n.logPath = filepath.Join(n.dir, "ipamd.log")
	n.client = ipamapi.NewClient(n.socket)
	n.startIpamd(t, ipamdArgs...)

	// The runtime runs in the test's netns; the plugins must run in the
	// node's: libcni execs these wrappers, which exec the real binaries
	// there. CNI_NETNS paths and the environment pass through.
	wrap := filepath.Join(n.dir, "bin")
	if err := os.Mkdir(wrap, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"bridge-v6", "ipam-v6", "pd-ipam"} {
		script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", nsName, filepath.Join(binDir, b))
		if err := os.WriteFile(filepath.Join(wrap, b), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An explicit exec: libcni sets its default lazily, a data race
	// between concurrent calls.
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{wrap}, filepath.Join(n.dir, "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}})
	return n
}

// startIpamd runs ipamd serve inside the node's netns and waits until it
// answers; it is stopped by pid (SIGTERM) when the test ends, its log
// printed if the test failed. args are added to serve's flags.
func (n *node) startIpamd(t *testing.T, args ...string) {
	t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.ns, filepath.Join(binDir, "ipamd"), "serve",
		"--node-name", n.ns, "--socket", n.socket, "--data-dir", filepath.Join(n.dir, "data")}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ipamd: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ipamd pid %d did not exit cleanly on SIGTERM: %v", cmd.Process.Pid, err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("ipamd pid %d still running 15s after SIGTERM: killed", cmd.Process.Pid)
		}
		if t.Failed() {
			b, _ := os.ReadFile(n.logPath)
			t.Logf("ipamd log of %s:\n%s", n.ns, tail(b, 4000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.client.Health(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case err := <-done:
			done <- err
			b, _ := os.ReadFile(n.logPath)
			t.Fatalf("ipamd exited while starting: %v\n%s", err, tail(b, 3000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipamd not ready on %s after 60s: %v", n.socket, err)
		}
	}
}

// netOpts shape one network's conflist.
type netOpts struct {
	// mode is bridge-v6's ipv6Mode; gateway the provider's gateway
	// ("" learned from the RA).
	mode, gateway string
	// eui64: IPAM addressing eui64 (the self-configuring modes).
	eui64 bool
	// standardDAD sets provider.optimisticDad false.
	standardDAD bool
}

// provNetwork is the provider network's name: one pool per ipamd (the
// provider /64), whatever the mode of the conflist.
const provNetwork = "prov"

// provExcludes are the segment's addresses that are not IPAM's: the
// routers (::1 virtual, ::2, ::3), the nodes (::10..), the DNS ::53,
// the segment host ::100 (all in ::/119), and Kea's pool ::1000-::1fff.
func provExcludes(p netip.Prefix) []string {
	return []string{netip.PrefixFrom(p.Addr(), 119).String(), netip.PrefixFrom(hostAddr(p, 0x1000), 116).String()}
}

// providerList is the conflist of the provider network: bridge-v6 with
// provider.master eth1, ipam-v6 with the provider /64 as pool.
func (n *node) providerList(t *testing.T, o netOpts) *libcni.NetworkConfigList {
	t.Helper()
	p := n.lab.Config.Prefix
	prov := map[string]any{"master": uplink}
	if o.gateway != "" {
		prov["gateway"] = o.gateway
	}
	if o.standardDAD {
		prov["optimisticDad"] = false
	}
	addressing := "sequential"
	if o.eui64 {
		addressing = "eui64"
	}
	plugin := map[string]any{
		"type":         "bridge-v6",
		"bridge":       n.provBridge,
		"ipv6Mode":     o.mode,
		"provider":     prov,
		"capabilities": map[string]bool{"ips": true},
		"ipam": map[string]any{
			"type": "ipam-v6", "socket": n.socket, "addressing": addressing,
			"ranges": []any{[]any{map[string]any{"subnet": p.String(), "blockSize": 64, "exclude": provExcludes(p)}}},
		},
	}
	return confList(t, provNetwork, plugin)
}

// routedPool is the node's own routed network's pool.
var routedPool = netip.MustParsePrefix("2001:db8:77::/64")

// routedList is the conflist of a normal routed bridge-v6 network on the
// same node: its own bridge and gateway, its own pool.
func (n *node) routedList(t *testing.T) *libcni.NetworkConfigList {
	t.Helper()
	plugin := map[string]any{
		"type": "bridge-v6", "bridge": n.routedBridge, "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
		"ipam": map[string]any{"type": "ipam-v6", "socket": n.socket,
			"ranges": []any{[]any{map[string]any{"subnet": routedPool.String()}}}},
	}
	return confList(t, "routed", plugin)
}

func confList(t *testing.T, name string, plugin map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	b, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": name, "plugins": []any{plugin}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("libcni.ConfListFromBytes: %v\n%s", err, b)
	}
	return l
}

// container is one attachment of a netns (the container) to a network of
// the node.
type container struct {
	n    *node
	id   string
	ns   string
	list *libcni.NetworkConfigList
	caps map[string]any
	res  *current.Result
	// addr is the IPv6 address of ADD's result, mac the container
	// interface's MAC.
	addr netip.Addr
	mac  net.HardwareAddr
	// took is how long the last successful ADD took.
	took time.Duration
}

// newContainer makes a container netns on the node for network list.
func (n *node) newContainer(t *testing.T, list *libcni.NetworkConfigList) *container {
	t.Helper()
	n.seq++
	nsName, err := n.lab.NewNetns(fmt.Sprintf("%s-c%d", strings.TrimPrefix(n.ns, "up-"+n.lab.ID+"-"), n.seq))
	if err != nil {
		t.Fatal(err)
	}
	return &container{n: n, id: fmt.Sprintf("prov-%s-%d", n.ns, n.seq), ns: nsName, list: list}
}

func (c *container) rt() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: c.id, NetNS: upstream.NetnsPath(c.ns), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", c.id}}, CapabilityArgs: c.caps}
}

// add runs ADD through libcni; on success DEL runs when the test ends.
func (c *container) add(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	r, err := c.n.cni.AddNetworkList(ctx, c.list, c.rt())
	if err != nil {
		return err
	}
	c.took = time.Since(start)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.n.cni.DelNetworkList(ctx, c.list, c.rt()); err != nil {
			t.Errorf("cleanup: DEL %s: %v", c.id, err)
		}
	})
	if c.res, err = current.NewResultFromResult(r); err != nil {
		return fmt.Errorf("ADD %s: result %v: %w", c.id, r, err)
	}
	for _, ip := range c.res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is6() {
			c.addr = a.Unmap()
		}
	}
	for _, i := range c.res.Interfaces {
		if i.Sandbox != "" {
			c.mac, _ = net.ParseMAC(i.Mac)
		}
	}
	if !c.addr.IsValid() || c.mac == nil {
		return fmt.Errorf("ADD %s: result without an IPv6 address or a container MAC: %s", c.id, c.res)
	}
	return nil
}

// addAll runs the containers' ADDs at once (each in its own goroutine:
// concurrent first ADDs on a node whose uplink is not moved yet).
func addAll(t *testing.T, cs ...*container) {
	t.Helper()
	errs := make(chan error, len(cs))
	for _, c := range cs {
		go func() { errs <- c.add(t) }()
	}
	for range cs {
		if err := <-errs; err != nil {
			t.Errorf("concurrent ADD: %v", err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// watchNode pings the node from the segment host, and the far host from
// the node, every 20 ms until the returned function is called, which
// logs what was lost (label names the moment: the uplink's move into
// the provider bridge) and fails the test unless both recovered and lost
// at most maxMoveLoss pings.
func (n *node) watchNode(t *testing.T, label string) func() {
	t.Helper()
	in, err := upstream.StartPinger(n.lab.SegmentNS, n.addr, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	outp, err := upstream.StartPinger(n.ns, upstream.FarHost, 20*time.Millisecond)
	if err != nil {
		in.Stop()
		t.Fatal(err)
	}
	if !upstream.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		return !in.LastReply().IsZero() && !outp.LastReply().IsZero()
	}) {
		in.Stop()
		outp.Stop()
		t.Fatal("the node does not reach the far host, or the segment host the node, before its first ADD")
	}
	time.Sleep(200 * time.Millisecond)
	return func() {
		t.Helper()
		// Half a second of replies after the ADDs.
		after := time.Now().Add(500 * time.Millisecond)
		upstream.Poll(5*time.Second, 20*time.Millisecond, func() bool {
			return in.LastReply().After(after) && outp.LastReply().After(after)
		})
		si, so := in.Stop(), outp.Stop()
		t.Logf("PROVIDER-NODE-FIGURES %s segment-host-to-node lost=%d outage=%dms sent=%d; node-to-far-host lost=%d outage=%dms sent=%d",
			label, si.Lost, si.Outage.Milliseconds(), si.Sent, so.Lost, so.Outage.Milliseconds(), so.Sent)
		if !si.Recovered || !so.Recovered {
			t.Errorf("%s: the node was cut off: segment host to node %s; node to far host %s", label, si, so)
		}
		// The uplink's move keeps the node's addresses and routes (the
		// RA-learned ones too, moved with their remaining lifetime),
		// each on the bridge before it leaves the uplink, but for the
		// moments between the uplink's enslavement and the removal of
		// its routes (a few netlink requests: what the node sends by a
		// route of the uplink then is lost): one request or reply every
		// 20 ms may fall into them. More is a gap in the move (0 lost
		// either way in 96 watches, 24 runs; before the RA routes were
		// moved, 1.0-1.9 s in about one first ADD in three).
		if si.Lost > maxMoveLoss || so.Lost > maxMoveLoss {
			t.Errorf("%s: the node lost more than %d ping during the uplink's move: segment host to node %s; node to far host %s",
				label, maxMoveLoss, si, so)
		}
	}
}

// maxMoveLoss is the pings (each way) a node may lose while its uplink
// moves into the provider bridge (see watchNode).
const maxMoveLoss = 1

func (c *container) mustAdd(t *testing.T) {
	t.Helper()
	if err := c.add(t); err != nil {
		t.Fatalf("ADD %s (%s): %v", c.id, c.list.Name, err)
	}
}

func (c *container) check(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.n.cni.CheckNetworkList(ctx, c.list, c.rt())
}

func (c *container) del(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.n.cni.DelNetworkList(ctx, c.list, c.rt())
}

// requireNothingLeft fails unless the container has no trace: no lease in
// ipamd, no veth on the node (the provider bridge's only port is the
// uplink, the routed bridge has none), no eth0 in the container.
func (c *container) requireNothingLeft(t *testing.T) {
	t.Helper()
	if ls := c.n.leasesOf(t, c.id); len(ls) != 0 {
		t.Errorf("ipamd still holds %v for %s", ls, c.id)
	}
	if p := c.n.ports(t, c.n.provBridge); len(p) != 1 || p[0] != uplink {
		t.Errorf("provider bridge %s ports %v, want only %s", c.n.provBridge, p, uplink)
	}
	if p := c.n.ports(t, c.n.routedBridge); len(p) != 0 {
		t.Errorf("routed bridge %s ports %v, want none", c.n.routedBridge, p)
	}
	if o, err := upstream.Exec(context.Background(), c.ns, "ip", "-o", "link", "show", "eth0"); err == nil {
		t.Errorf("container %s still has eth0: %s", c.ns, o)
	}
}

// ports are the interfaces enslaved to bridge br in the node (none when
// br does not exist).
func (n *node) ports(t *testing.T, br string) []string {
	t.Helper()
	// stdout only: ip may warn on stderr ("Peer netns reference is
	// invalid.").
	cmd := exec.Command("ip", "-n", n.ns, "-o", "link", "show", "master", br)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	o, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "does not exist") || strings.Contains(stderr.String(), "Cannot find device") {
			return nil
		}
		t.Fatalf("ip -n %s link show master %s: %v: %s", n.ns, br, err, stderr.String())
	}
	var ps []string
	for _, ln := range strings.Split(strings.TrimSpace(string(o)), "\n") {
		f := strings.Fields(ln)
		if len(f) > 1 {
			ps = append(ps, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return ps
}

// leasesOf are the addresses ipamd holds for a container.
func (n *node) leasesOf(t *testing.T, id string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.client.State(ctx)
	if err != nil {
		t.Fatalf("ipamd state: %v", err)
	}
	var out []string
	for _, nw := range st.Networks {
		for _, b := range nw.Blocks {
			for _, a := range b.Addrs {
				if a.ContainerID == id {
					out = append(out, nw.Network+" "+a.Addr)
				}
			}
		}
	}
	return out
}

// ---- small helpers ----

// hostAddr is host number h of prefix p.
func hostAddr(p netip.Prefix, h int) netip.Addr {
	a := p.Masked().Addr().As16()
	a[14], a[15] = byte(h>>8), byte(h)
	return netip.AddrFrom16(a)
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if o, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(o))
	}
}

func out(t *testing.T, nsName string, args ...string) string {
	t.Helper()
	b, err := upstream.Exec(context.Background(), nsName, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

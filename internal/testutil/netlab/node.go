package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// Node is one host of the lab: a netns on the link running its own ipamd.
// Its name, addresses, socket, data dir and config stay the same across
// Kill, PowerOff and Start: a node that comes back is the same node.
type Node struct {
	// Name is ipamd's --node-name (node-<Index>).
	Name  string
	Index int
	// NS is the node's netns (gone while powered off).
	NS string
	// Addr6 and Addr4 are its addresses on the link (Addr4 with
	// Options.IPv4): its BGP session's source and its blocks' next hops.
	Addr6, Addr4 netip.Addr
	// Socket, DataDir, Config and LogPath are ipamd's.
	Socket, DataDir, Config, LogPath string
	// Client talks to ipamd's socket (reachable from the test's netns: a
	// unix socket lives in the file system).
	Client *ipamapi.Client
	lab    *Lab

	mu   sync.Mutex
	p    *proc
	up   bool // the netns exists and is on the link
	pods []*Pod
}

func (l *Lab) newNode(i int) *Node {
	l.t.Helper()
	n := &Node{
		Name: fmt.Sprintf("node-%d", i), Index: i, NS: l.netnsName("n" + strconv.Itoa(i)),
		Addr6:   l.linkAddr6(hostNode0 + i),
		Socket:  filepath.Join(l.Dir, fmt.Sprintf("n%d.sock", i)),
		DataDir: filepath.Join(l.Dir, fmt.Sprintf("n%d-data", i)),
		Config:  filepath.Join(l.Dir, fmt.Sprintf("n%d.yaml", i)),
		LogPath: filepath.Join(l.Dir, fmt.Sprintf("node-%d.log", i)),
		lab:     l,
	}
	if l.Opts.IPv4 {
		n.Addr4 = l.linkAddr4(hostNode0 + i)
	}
	n.Client = ipamapi.NewClient(n.Socket)
	l.track(n.NS)
	if err := os.WriteFile(n.Config, []byte(n.config()), 0o600); err != nil {
		l.t.Fatal(err)
	}
	return n
}

// config is ipamd's config file: a bgp section peering the router from
// the node's link address, next hops the node's own addresses.
func (n *Node) config() string {
	o := n.lab.Opts
	var sb strings.Builder
	fmt.Fprintf(&sb, "bgp:\n  asn: %d\n  routerID: 10.255.0.%d\n", NodeASN, hostNode0+n.Index)
	fmt.Fprintf(&sb, "  peers:\n    - { address: %q, asn: %d, holdTime: %d, localAddress: %q }\n",
		n.lab.linkAddr6(hostRouter), RouterASN, o.HoldTime, n.Addr6)
	fmt.Fprintf(&sb, "  nextHop: %q\n", n.Addr6)
	if o.IPv4 {
		fmt.Fprintf(&sb, "  nextHopIPv4: %q\n  families: [ipv6-unicast, ipv4-unicast]\n", n.Addr4)
	} else {
		sb.WriteString("  families: [ipv6-unicast]\n")
	}
	fmt.Fprintf(&sb, "  gracefulRestart: { enabled: %t, restartTime: %d }\n", !o.NoGracefulRestart, o.RestartTime)
	if pd := n.PD(); pd != nil {
		sb.WriteString(pd.yaml())
	}
	return sb.String()
}

// PD is the node's pd section (Options.NodePD, else Options.PD; nil:
// none).
func (n *Node) PD() *PD {
	o := n.lab.Opts
	if o.NodePD != nil {
		return o.NodePD(n.Index)
	}
	return o.PD
}

// boot creates the node's netns and plugs it into the link: forwarding on,
// no redirects accepted, default routes via the router.
func (n *Node) boot() error {
	l := n.lab
	if err := createNetns(n.NS); err != nil {
		return err
	}
	if err := sysctl(n.NS, "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1",
		"net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.default.accept_redirects=0",
		"net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.default.accept_redirects=0"); err != nil {
		return err
	}
	addrs := []netip.Addr{n.Addr6}
	if n.Addr4.IsValid() {
		addrs = append(addrs, n.Addr4)
	}
	if err := l.attach(n.NS, n.port(), addrs...); err != nil {
		return err
	}
	routes := [][]string{{"-6", "route", "add", "default", "via", l.linkAddr6(hostRouter).String(), "dev", "lan0"}}
	if n.Addr4.IsValid() {
		routes = append(routes, []string{"-4", "route", "add", "default", "via", l.linkAddr4(hostRouter).String(), "dev", "lan0"})
	}
	for _, r := range routes {
		if out, err := exec.Command("ip", append([]string{"-n", n.NS}, r...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip -n %s %s: %v: %s", n.NS, strings.Join(r, " "), err, out)
		}
	}
	return nil
}

// port is the node's port on the switch.
func (n *Node) port() string { return "n" + strconv.Itoa(n.Index) }

// Start boots the node if it is powered off, starts its ipamd and waits
// up to 60 s until it answers its health check. It does not wait for the
// BGP session (Lab.Router.WaitEstablished does).
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p != nil && !n.p.exited() {
		return fmt.Errorf("ipamd %s already running", n.Name)
	}
	if !n.up {
		if err := n.boot(); err != nil {
			return fmt.Errorf("boot %s: %w", n.Name, err)
		}
		n.up = true
	}
	args := append([]string{filepath.Join(n.lab.Bin, "ipamd"), "serve", "--config", n.Config,
		"--node-name", n.Name, "--etcd-endpoints", n.lab.Etcd.Endpoint,
		"--socket", n.Socket, "--data-dir", n.DataDir, "--metrics-addr", "[::1]:9655"}, n.lab.Opts.IpamdArgs...)
	p, err := startIn(n.NS, n.LogPath, "", args...)
	if err != nil {
		return err
	}
	n.p = p
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.Client.Health(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("ipamd %s exited while starting: %s", n.Name, tailFile(n.LogPath, 3000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ipamd %s not ready after 60s: %v", n.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops ipamd with SIGTERM, a planned stop (graceful restart: the
// router keeps its routes as stale for the restart time). It fails if
// ipamd needed SIGKILL after 10 s.
func (n *Node) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p == nil {
		return nil
	}
	clean := n.p.stop(syscall.SIGTERM)
	n.p = nil
	if !clean {
		return fmt.Errorf("ipamd %s did not exit within 10s of SIGTERM: killed", n.Name)
	}
	return nil
}

// Kill stops ipamd with SIGKILL (kill -9): a crash. The kernel still
// closes its TCP sessions, so the router sees the session end at once.
func (n *Node) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.p.stop(syscall.SIGKILL)
	n.p = nil
}

// Restart is Stop then Start.
func (n *Node) Restart() error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start()
}

// PowerOff makes the node vanish as a machine losing power does: its link
// is cut first (so nothing, not even a TCP FIN, leaves it: the router
// notices only when the BGP hold time expires), then ipamd is killed and
// the node's netns and its pods' netns are deleted. Start boots it again
// with the same name and addresses.
func (n *Node) PowerOff() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []string
	if n.up {
		if out, err := exec.Command("ip", "-n", n.lab.Switch, "link", "del", n.port()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("cut link %s: %v: %s", n.port(), err, out))
		}
	}
	n.p.stop(syscall.SIGKILL)
	n.p = nil
	for _, p := range n.pods {
		if err := p.remove(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	n.pods = nil
	if n.up {
		if out, err := exec.Command("ip", "netns", "del", n.NS).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("ip netns del %s: %v: %s", n.NS, err, out))
		}
		n.up = false
	}
	if len(errs) > 0 {
		return fmt.Errorf("power off %s: %s", n.Name, strings.Join(errs, "; "))
	}
	return nil
}

// Running reports whether ipamd is running.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.p != nil && !n.p.exited()
}

// Exec runs a command inside the node's netns.
func (n *Node) Exec(ctx context.Context, args ...string) ([]byte, error) {
	return Exec(ctx, n.NS, args...)
}

// Ipamd runs the node's ipamd CLI on the node (inside its netns, where
// its bridges are) against the node's socket: Ipamd(ctx, "node", "remove",
// "node-1") runs `ipamd node remove --socket <its socket> node-1`. The
// --socket flag goes after the leading command words (args of only
// lower-case letters), before flags and operands, where Go's flag package
// parses it. The error carries the exit status (*exec.ExitError) and the
// output.
func (n *Node) Ipamd(ctx context.Context, args ...string) ([]byte, error) {
	return n.Exec(ctx, ipamdCommand(filepath.Join(n.lab.Bin, "ipamd"), n.Socket, args)...)
}

// ipamdCommand is bin, the leading command words of args, --socket socket,
// then the rest of args.
func ipamdCommand(bin, socket string, args []string) []string {
	i := 0
	for i < len(args) && isCommandWord(args[i]) {
		i++
	}
	cmd := append([]string{bin}, args[:i]...)
	cmd = append(cmd, "--socket", socket)
	return append(cmd, args[i:]...)
}

func isCommandWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return true
}

// Routes is the node's kernel routes via a gateway (prefix → next hop).
func (n *Node) Routes() (map[netip.Prefix]netip.Addr, error) { return kernelRoutes(n.NS) }

// RouteGet is `ip route get addr` on the node: the route it would use.
func (n *Node) RouteGet(ctx context.Context, addr netip.Addr) (string, error) {
	out, err := n.Exec(ctx, "ip", "route", "get", addr.String())
	return strings.TrimSpace(string(out)), err
}

// Blocks are the blocks etcd says the node owns.
func (n *Node) Blocks(ctx context.Context) ([]netip.Prefix, error) {
	snap, err := n.lab.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, b := range snap.Blocks {
		if b.Node == n.Name {
			out = append(out, b.CIDR)
		}
	}
	return out, nil
}

// NextHop is the next hop the node announces for a block: its link
// address of the block's family.
func (n *Node) NextHop(block netip.Prefix) netip.Addr {
	if block.Addr().Is4() {
		return n.Addr4
	}
	return n.Addr6
}

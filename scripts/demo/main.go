// Command demo tells v6cni's cluster story on one machine, as root, in
// network namespaces: a router (BIRD 2, and Kea delegating prefixes by
// DHCPv6-PD), one etcd (Debian's etcd-server) and two nodes, each running
// its own ipamd. Pods on both nodes get addresses from a shared pool
// (conf/v6net.conflist, conf/dualstack.conflist) and from the node's
// delegated prefix (conf/pdnet.conflist, pd-ipam); the router learns every
// node's blocks by BGP; a pod on node A pings a pod on node B through the
// router. Then node B is decommissioned: `ipamd node remove` refuses while
// it is alive, node B is stopped, the removal gives its blocks back to the
// pool, its routes leave the router and `ipamd check` says the cluster is
// consistent. Finally node A's pods are deleted and the pool is empty again.
//
// The conflists are used as they are, except that each points at its
// node's ipamd socket (a temporary path) and only the first plugin is kept.
// Everything the demo creates is removed, also on failure or Ctrl-C.
//
// Usage (what `make demo` runs):
//
//	go run ./scripts/demo -bin-dir bin -conf-dir conf
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

func main() {
	binDir := flag.String("bin-dir", "bin", "directory holding bridge-v6, ipam-v6, pd-ipam and ipamd")
	confDir := flag.String("conf-dir", "conf", "directory holding v6net.conflist, dualstack.conflist and pdnet.conflist")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	d, err := newDemo(*binDir, *confDir)
	if err == nil {
		err = d.run(ctx)
		if cerr := d.cleanup(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			// Ctrl-C: what failed is only the interruption.
			fmt.Fprintf(os.Stderr, "\ndemo interrupted after %.1fs (%v)\n", time.Since(start).Seconds(), err)
			os.Exit(130)
		}
		fmt.Fprintf(os.Stderr, "\ndemo FAILED after %.1fs: %v\n", time.Since(start).Seconds(), err)
		os.Exit(1)
	}
	fmt.Printf("\ndemo OK in %.1fs\n", time.Since(start).Seconds())
}

// demo holds everything the run creates, so cleanup can undo it.
type demo struct {
	binDir, confDir string
	tmp             string
	id              string // random tag in every name the demo creates
	router          *router
	etcdHost        *host
	etcd            *daemon
	etcdURL         string
	nodes           []*node
	pods            []*pod
	daemons         []*daemon // in start order
	netnsCreated    []string
}

func newDemo(binDir, confDir string) (*demo, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the demo creates network namespaces and bridges: run it as root")
	}
	var err error
	if binDir, err = filepath.Abs(binDir); err != nil {
		return nil, err
	}
	if confDir, err = filepath.Abs(confDir); err != nil {
		return nil, err
	}
	for _, b := range []string{"bridge-v6", "ipam-v6", "pd-ipam", "ipamd"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("%s: %w (run `make build` first)", b, err)
		}
	}
	tag := make([]byte, 3)
	if _, err := rand.Read(tag); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "v6demo-")
	if err != nil {
		return nil, err
	}
	return &demo{binDir: binDir, confDir: confDir, tmp: tmp, id: hex.EncodeToString(tag)}, nil
}

// nsName is the name of one of the demo's network namespaces.
func (d *demo) nsName(what string) string { return "v6demo-" + d.id + "-" + what }

// step prints a progress line; heading a chapter of the story.
func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func heading(n int, title string) {
	fmt.Printf("\n%d. %s\n%s\n", n, title, strings.Repeat("-", len(title)+3))
}

// podSpec is one pod the demo runs: on which node, in which network.
type podSpec struct {
	node int
	what string // name suffix
	file string // conflist
}

var podSpecs = []podSpec{
	{0, "a-pool", "v6net.conflist"},
	{0, "a-pd", "pdnet.conflist"},
	{0, "a-dual", "dualstack.conflist"},
	{1, "b-pool", "v6net.conflist"},
	{1, "b-pd", "pdnet.conflist"},
}

func (d *demo) run(ctx context.Context) error {
	heading(1, "The network: a router, a DHCPv6 server and one etcd")
	fmt.Printf("    one link (%s); every host is a network namespace on it\n", d.lanPrefix())
	a, err := d.newNode("node-a", "a", "10.255.255.10")
	if err != nil {
		return err
	}
	b, err := d.newNode("node-b", "b", "10.255.255.11")
	if err != nil {
		return err
	}
	d.nodes = []*node{a, b}
	if err := d.startRouter(ctx, d.nodes); err != nil {
		return err
	}
	if err := d.startKea(ctx); err != nil {
		return err
	}
	if err := d.startEtcd(ctx); err != nil {
		return err
	}

	heading(2, "Two nodes join: each runs its own ipamd")
	fmt.Printf("    ipamd serve --node-name NODE --etcd-endpoints %s --pd-interface %s --config bgp.yaml\n", d.etcdURL, upIf)
	for _, n := range d.nodes {
		if err := d.setupNode(ctx, n); err != nil {
			return err
		}
		if err := d.startIpamd(n); err != nil {
			return err
		}
	}
	for _, n := range d.nodes {
		if err := d.waitIpamd(ctx, n); err != nil {
			return err
		}
	}
	if err := d.show(ctx, a, "nodes"); err != nil {
		return err
	}

	heading(3, "Pods on both nodes: a pool network and a delegated (pd-ipam) one")
	for _, s := range podSpecs {
		n := d.nodes[s.node]
		nw := n.nets[s.file]
		if nw == nil {
			if nw, err = d.loadNetwork(n, s.file); err != nil {
				return err
			}
		}
		name := d.nsName(s.what)
		p := &pod{name: name, node: n, net: nw, rt: &libcni.RuntimeConf{
			ContainerID: name,
			NetNS:       "/run/netns/" + name,
			IfName:      "eth0",
			Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", s.what}},
		}}
		d.pods = append(d.pods, p)
		if err := d.attach(ctx, p); err != nil {
			return err
		}
	}
	printPods(d.pods)
	if err := d.show(ctx, a, "blocks"); err != nil {
		return err
	}

	heading(4, "The router learns every node's blocks by BGP")
	byNode := d.blocksByNode(d.pods)
	if _, err := d.router.waitRoutes(ctx, true, 20*time.Second, byNode); err != nil {
		return err
	}
	fmt.Printf("    every pod's block is at the router, via its node, %s after the last ADD\n", ms(time.Since(d.pods[len(d.pods)-1].addEnd)))
	if err := d.showRoutes(ctx); err != nil {
		return err
	}

	heading(5, "Pod to pod across nodes, through the router (no NAT, no overlay)")
	pa, pb := d.pod("a-pool"), d.pod("b-pool")
	pda, pdb := d.pod("a-pd"), d.pod("b-pd")
	if err := d.pings(ctx, [][2]*pod{{pa, pb}, {pb, pa}, {pda, pdb}, {pdb, pda}, {pa, pdb}, {d.pod("a-dual"), pa}}); err != nil {
		return err
	}
	if err := d.pingGateways(ctx, d.pod("a-dual")); err != nil {
		return err
	}
	// The path: node-a has no route of its own to node-b's blocks, only
	// its default route to the router, which learned them by BGP.
	for _, h := range []struct {
		netns, name string
	}{{a.netns, a.name}, {d.router.netns, "router"}} {
		out, err := exec.CommandContext(ctx, "ip", "-n", h.netns, "-6", "route", "get", pb.addr().String()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip route get %s on %s: %v: %s", pb.addr(), h.name, err, out)
		}
		fmt.Printf("    %s$ ip -6 route get %s\n%s", h.name, pb.addr(), indent2(trimRouteGet(string(out))))
	}

	heading(6, "Decommissioning node-b")
	if err := d.removeNode(ctx, a, b, byNode[b]); err != nil {
		return err
	}

	heading(7, "Teardown")
	return d.teardown(ctx)
}

// removeNode tells the removal: refused while b is alive, b stops, the
// removal from a releases b's blocks, b's routes leave the router and the
// check is clean.
func (d *demo) removeNode(ctx context.Context, a, b *node, bBlocks []string) error {
	fmt.Println("    while node-b runs, its removal is refused:")
	out, err := d.cli(ctx, a, "node remove", b.name)
	fmt.Printf("    %s$ ipamd node remove %s\n%s", a.name, b.name, indent2(out))
	if err == nil {
		return fmt.Errorf("ipamd node remove %s succeeded while %s is alive: it must refuse without --force", b.name, b.name)
	}
	msg := err.Error()
	fmt.Printf("    (%s: refused while %s is alive, as it must be)\n", msg[strings.LastIndex(msg, ": ")+2:], b.name)

	fmt.Printf("\n    node-b shuts down: its ipamd stops (SIGTERM), its pods go with the machine\n")
	stopped := time.Now()
	if err := b.ipamd.stop(); err != nil {
		return err
	}
	b.dead = true
	for _, p := range d.pods {
		if p.node == b {
			p.added = false // nothing on node-b answers a DEL any more
			if err := d.deleteNetns(ctx, p.name); err != nil {
				return err
			}
		}
	}
	if err := d.deleteNetns(ctx, b.netns); err != nil {
		return err
	}
	fmt.Printf("    %s's ipamd stopped and its namespaces deleted in %s\n", b.name, ms(time.Since(stopped)))
	if err := d.show(ctx, a, "nodes"); err != nil {
		return err
	}

	fmt.Println("\n    before the removal:")
	if err := d.show(ctx, a, "blocks"); err != nil {
		return err
	}
	t0 := time.Now()
	out, err = d.cli(ctx, a, "node remove", b.name)
	if err != nil {
		// A stopped ipamd ends its liveness lease; one that could not
		// (killed, cut off) stays alive for the lease's TTL. The demo
		// waits for that rather than --force, which an operator keeps
		// for a node that is alive but must go.
		fmt.Printf("    %s$ ipamd node remove %s\n%s    (refused: waiting for %s's liveness lease to end)\n", a.name, b.name, indent2(out), b.name)
		for err != nil && time.Since(t0) < 40*time.Second {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			out, err = d.cli(ctx, a, "node remove", b.name)
		}
	}
	fmt.Printf("    %s$ ipamd node remove %s\n%s", a.name, b.name, indent2(out))
	if err != nil {
		return fmt.Errorf("removing stopped %s: %w", b.name, err)
	}
	fmt.Printf("    (removed %s after node-b stopped)\n", ms(time.Since(stopped)))
	fmt.Println("\n    after the removal:")
	if err := d.show(ctx, a, "blocks"); err != nil {
		return err
	}
	left, err := d.blocksOf(ctx, a, b.name)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("after ipamd node remove %s, etcd still holds its blocks: %s", b.name, strings.Join(left, ", "))
	}
	fmt.Printf("    %s's blocks are back in the pool, free for any node\n", b.name)
	if err := d.show(ctx, a, "nodes"); err != nil {
		return err
	}

	if _, err := d.router.waitRoutes(ctx, false, 30*time.Second, map[*node][]string{b: bBlocks}); err != nil {
		return err
	}
	fmt.Printf("\n    %s's routes left the router %s after it stopped (the session closed; BIRD dropped the\n"+
		"    stale routes graceful restart kept when node-b's restart time, %d s here, ran out):\n",
		b.name, ms(time.Since(stopped)), grRestart)
	if err := d.showRoutes(ctx); err != nil {
		return err
	}
	fmt.Println()
	out, err = d.cli(ctx, a, "check")
	fmt.Printf("    %s$ ipamd check\n%s", a.name, indent2(out))
	if err != nil {
		return fmt.Errorf("ipamd check after removing %s: %w", b.name, err)
	}
	return nil
}

// teardown deletes node-a's pods, shows the pool empty, then stops every
// daemon; cleanup removes the namespaces.
func (d *demo) teardown(ctx context.Context) error {
	a := d.nodes[0]
	for _, p := range d.pods {
		if p.added {
			if err := d.detach(ctx, p); err != nil {
				return err
			}
		}
	}
	printLatency(d.pods)
	fmt.Println()
	if err := d.checkPoolEmpty(ctx, a); err != nil {
		return err
	}
	// Stop the daemons in reverse order of their start, so a failing stop
	// is reported here, not lost in cleanup.
	for _, p := range slices.Backward(d.daemons) {
		if err := p.stop(); err != nil {
			return err
		}
	}
	step("every daemon stopped")
	return nil
}

// show runs `ipamd CMD` on node n as a user would and prints it.
func (d *demo) show(ctx context.Context, n *node, cmd string) error {
	out, err := d.cli(ctx, n, cmd)
	fmt.Printf("    %s$ ipamd %s\n", n.name, cmd)
	fmt.Print(indent2(out))
	if err != nil {
		return fmt.Errorf("ipamd %s on %s: %w", cmd, n.name, err)
	}
	return nil
}

// trimRouteGet keeps the route of `ip route get`'s answer, up to the
// device: the rest (metric, pref, cache) says nothing here.
func trimRouteGet(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		if w == "dev" && i+1 < len(f) {
			return strings.Replace(strings.Join(f[:i+2], " "), " from :: ", " ", 1)
		}
	}
	return strings.TrimSpace(s)
}

// showRoutes prints BIRD's table, its header dropped.
func (d *demo) showRoutes(ctx context.Context) error {
	table, err := d.router.routes(ctx)
	if err != nil {
		return fmt.Errorf("birdc show route: %w: %s", err, table)
	}
	fmt.Printf("    router$ birdc show route\n")
	var lines []string
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, "BIRD ") || strings.TrimSpace(l) == "" {
			continue
		}
		lines = append(lines, l)
	}
	fmt.Print(indent2(strings.Join(lines, "\n")))
	return nil
}

// blocksByNode is the IPv6 blocks each node must announce: those of its
// pods.
func (d *demo) blocksByNode(pods []*pod) map[*node][]string {
	m := map[*node][]string{}
	for _, p := range pods {
		for _, b := range p.blocks() {
			if !slices.Contains(m[p.node], b) {
				m[p.node] = append(m[p.node], b)
			}
		}
	}
	return m
}

// blocksOf lists the blocks etcd says node owns, as node n's ipamd sees them.
func (d *demo) blocksOf(ctx context.Context, n *node, owner string) ([]string, error) {
	st, err := n.client.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("state from %s: %w", n.name, err)
	}
	var out []string
	for _, nw := range st.Networks {
		for _, b := range nw.Blocks {
			if b.Node == owner {
				out = append(out, b.Block)
			}
		}
	}
	return out, nil
}

func (d *demo) pod(what string) *pod {
	for _, p := range d.pods {
		if p.name == d.nsName(what) {
			return p
		}
	}
	panic("demo: no pod " + what) // the demo's own table, not input
}

// what is the pod's short name.
func (p *pod) what() string {
	_, s, _ := strings.Cut(p.name, "-")
	_, s, _ = strings.Cut(s, "-")
	return s
}

// pings sends one echo request from each pair's first pod to the second's
// IPv6 address and prints the round trip.
func (d *demo) pings(ctx context.Context, pairs [][2]*pod) error {
	for _, pr := range pairs {
		from, to := pr[0], pr[1]
		addr := to.addr().String()
		rtt, err := ping(ctx, from.name, addr)
		fmt.Printf("    %s$ ping %s   # %s on %s\n", from.what(), addr, to.what(), to.node.name)
		if err != nil {
			return fmt.Errorf("%s (%s) -> %s (%s) at %s: %w", from.what(), from.node.name, to.what(), to.node.name, addr, err)
		}
		fmt.Printf("      reply in %s\n", rtt)
	}
	return nil
}

// pingGateways pings each of a pod's gateways (IPv4 too, on a dual-stack
// network).
func (d *demo) pingGateways(ctx context.Context, p *pod) error {
	for _, ip := range p.result.IPs {
		if ip.Gateway == nil {
			continue
		}
		rtt, err := ping(ctx, p.name, ip.Gateway.String())
		fmt.Printf("    %s$ ping %s   # its gateway on %s\n", p.what(), ip.Gateway, p.node.name)
		if err != nil {
			return fmt.Errorf("%s -> gateway %s: %w", p.what(), ip.Gateway, err)
		}
		fmt.Printf("      reply in %s\n", rtt)
	}
	return nil
}

// ping sends one echo request from inside netns to addr and returns the
// round trip as ping prints it.
func ping(ctx context.Context, netns, addr string) (string, error) {
	family := "-4"
	if strings.Contains(addr, ":") {
		family = "-6"
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", netns, "ping", family, "-c1", "-W2", addr).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	if _, after, ok := strings.Cut(string(out), "time="); ok {
		return strings.Fields(after)[0] + " ms", nil
	}
	return "?", nil
}

// checkPoolEmpty reads node n's `ipamd state` and fails if any address is
// still in use.
func (d *demo) checkPoolEmpty(ctx context.Context, n *node) error {
	out, err := d.cli(ctx, n, "state", "-o", "json")
	if err != nil {
		return fmt.Errorf("ipamd state -o json: %w: %s", err, out)
	}
	var st ipamapi.State
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return fmt.Errorf("ipamd state -o json: %w: %s", err, out)
	}
	var inUse []string
	fmt.Printf("    %s$ ipamd state\n", n.name)
	for _, nw := range st.Networks {
		for _, b := range nw.Blocks {
			for _, a := range b.Addrs {
				inUse = append(inUse, fmt.Sprintf("%s (%s, %s/%s)", a.Addr, nw.Network, a.ContainerID, a.IfName))
			}
		}
		fmt.Printf("      network %-8s pool %-44s blocks %d\n", nw.Network, nw.Pool, len(nw.Blocks))
	}
	if len(inUse) > 0 {
		return fmt.Errorf("pool not empty after DEL: %s", strings.Join(inUse, ", "))
	}
	fmt.Printf("    addresses in use: 0 — the pool is empty again (empty blocks go back after --block-grace)\n")
	return nil
}

// cleanup removes whatever the run left: attachments, daemons, namespaces
// (with them every link and bridge, all made inside them) and the
// temporary directory. It reports the first error.
func (d *demo) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, p := range d.pods {
		if p.added && p.node.ipamd.running() {
			if err := p.node.cni.DelNetworkList(ctx, p.net.list, p.rt); err != nil {
				errs = append(errs, fmt.Errorf("cleanup DEL %s: %w", p.name, err))
			}
			p.added = false
		}
	}
	for _, p := range slices.Backward(d.daemons) {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range slices.Backward(slices.Clone(d.netnsCreated)) {
		if err := d.deleteNetns(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(d.tmp); err != nil {
		errs = append(errs, err)
	}
	if left := d.leftovers(ctx); left != "" {
		errs = append(errs, fmt.Errorf("left behind: %s", left))
	} else if len(errs) == 0 {
		step("cleaned up: no namespace, link, process or file of this run is left")
	}
	return errors.Join(errs...)
}

// leftovers lists the run's namespaces and links still on the host and its
// daemons still running.
func (d *demo) leftovers(ctx context.Context) string {
	var left []string
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "v6demo-"+d.id) {
				left = append(left, "netns "+f[0])
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output(); err == nil && strings.Contains(string(out), "v6d"+d.id) {
		left = append(left, "a link named v6d"+d.id+"*")
	}
	for _, p := range d.daemons {
		if p.running() {
			left = append(left, fmt.Sprintf("%s (pid %d)", p.name, p.cmd.Process.Pid))
		}
	}
	if _, err := os.Stat(d.tmp); err == nil {
		left = append(left, d.tmp)
	}
	return strings.Join(left, ", ")
}

func (d *demo) createNetns(ctx context.Context, name string) error {
	if err := sh(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	d.netnsCreated = append(d.netnsCreated, name)
	return nil
}

func (d *demo) deleteNetns(ctx context.Context, name string) error {
	if !slices.Contains(d.netnsCreated, name) {
		return nil
	}
	if err := sh(ctx, "ip", "netns", "del", name); err != nil {
		return err
	}
	d.netnsCreated = slices.DeleteFunc(d.netnsCreated, func(s string) bool { return s == name })
	return nil
}

// printPods prints one line per pod: what it got from ADD.
func printPods(ps []*pod) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "    NODE\tPOD\tNETWORK\tIPAM\tMAC\tADDRESSES\tGATEWAY\tADD")
	for _, p := range ps {
		mac := "-"
		for _, itf := range p.result.Interfaces {
			if itf.Sandbox != "" {
				mac = itf.Mac
			}
		}
		var addrs, gws []string
		for _, ip := range p.result.IPs {
			addrs = append(addrs, ip.Address.String())
			if ip.Gateway != nil {
				gws = append(gws, ip.Gateway.String())
			}
		}
		fmt.Fprintf(w, "    %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.node.name, p.what(), p.net.list.Name, p.net.ipam, mac,
			strings.Join(addrs, ", "), strings.Join(gws, ", "), ms(p.addDur))
	}
	w.Flush()
	fmt.Println()
}

// printLatency prints ADD and DEL time per pod and their medians.
func printLatency(ps []*pod) {
	const row = "    %-10s %-8s %10s %10s\n"
	fmt.Printf(row, "POD", "NODE", "ADD", "DEL")
	var adds, dels []time.Duration
	for _, p := range ps {
		del := "-"
		if p.delDur > 0 {
			del = ms(p.delDur)
			dels = append(dels, p.delDur)
		}
		fmt.Printf(row, p.what(), p.node.name, ms(p.addDur), del)
		adds = append(adds, p.addDur)
	}
	fmt.Printf(row, "median", "", ms(median(adds)), ms(median(dels)))
	fmt.Println("    (libcni, both plugins, run inside the node's namespace)")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}

// indent2 indents a command's output under the command line.
func indent2(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "      " + strings.ReplaceAll(s, "\n", "\n      ") + "\n"
}

// Command demo shows v6cni end to end on one machine, as root: it starts
// ipamd with an embedded etcd in a temporary directory, attaches five network
// namespaces ("containers") through libcni — three to the IPv6-only network of
// conf/v6net.conflist and two to the dual-stack network of
// conf/dualstack.conflist — prints what each got, pings between them and to
// their gateways, then detaches everything and shows the pool empty again.
//
// The conflists are used as they are, except that each gets ipamd's
// temporary socket and a bridge name of its own, so the demo never touches a
// real installation. Everything it creates is removed, also on failure or
// Ctrl-C.
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
	"net"
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
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

func main() {
	binDir := flag.String("bin-dir", "bin", "directory holding bridge-v6, ipam-v6 and ipamd")
	confDir := flag.String("conf-dir", "conf", "directory holding v6net.conflist and dualstack.conflist")
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
		fmt.Fprintf(os.Stderr, "\ndemo FAILED after %.1fs: %v\n", time.Since(start).Seconds(), err)
		os.Exit(1)
	}
	fmt.Printf("\ndemo OK in %.1fs\n", time.Since(start).Seconds())
}

// network is one conflist as the demo runs it.
type network struct {
	file   string
	bridge string
	list   *libcni.NetworkConfigList
}

// container is one network namespace and its attachment.
type container struct {
	name   string // netns name, also the CNI container ID
	net    *network
	rt     *libcni.RuntimeConf
	added  bool
	result *current.Result
	addDur time.Duration
	delDur time.Duration
}

// demo holds everything the run creates, so cleanup can undo it.
type demo struct {
	binDir, confDir string
	tmp             string
	socket          string
	id              string // random tag in every name the demo creates
	cni             *libcni.CNIConfig
	ipamd           *exec.Cmd
	ipamdDone       chan error
	ipamdLog        string
	nets            []*network
	containers      []*container
	netnsCreated    []string
	bridgesSeen     []string
	linksCreated    []string
	up              *upstream
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
	for _, b := range []string{"bridge-v6", "ipam-v6", "ipamd"} {
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
	d := &demo{
		binDir:  binDir,
		confDir: confDir,
		tmp:     tmp,
		socket:  filepath.Join(tmp, "ipamd.sock"),
		id:      hex.EncodeToString(tag),
	}
	d.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(tmp, "cni-cache"), nil)
	return d, nil
}

// step prints a progress line.
func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	up, err := d.startUpstream(ctx)
	if err != nil {
		return err
	}
	d.up = up
	step("starting ipamd (embedded etcd in %s, BGP to the upstream router)", d.tmp)
	if err := d.startIpamd(ctx); err != nil {
		return err
	}
	if err := d.waitBGP(ctx); err != nil {
		return err
	}

	v6, err := d.loadNetwork("v6net.conflist", "a")
	if err != nil {
		return err
	}
	dual, err := d.loadNetwork("dualstack.conflist", "b")
	if err != nil {
		return err
	}
	for i, n := range []*network{v6, v6, v6, dual, dual} {
		name := fmt.Sprintf("v6demo-%s-c%d", d.id, i+1)
		c := &container{
			name: name,
			net:  n,
			rt: &libcni.RuntimeConf{
				ContainerID: name,
				NetNS:       "/run/netns/" + name,
				IfName:      "eth0",
				Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", name}},
			},
		}
		d.containers = append(d.containers, c)
	}

	for _, c := range d.containers {
		if err := d.createNetns(ctx, c.name); err != nil {
			return err
		}
		if err := d.attach(ctx, c); err != nil {
			return err
		}
	}

	fmt.Println()
	printTable(d.containers)
	fmt.Println()
	step("ipamd state")
	out, err := d.ipamdCmd(ctx, "state", "--socket", d.socket).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ipamd state: %v: %s", err, out)
	}
	fmt.Print(indent(string(out)))

	fmt.Println()
	if err := d.showUpstream(ctx); err != nil {
		return err
	}

	fmt.Println()
	step("pinging between containers and to the gateways")
	if err := d.pingAll(ctx); err != nil {
		return err
	}

	fmt.Println()
	step("detaching (DEL) and deleting the network namespaces")
	for _, c := range d.containers {
		if err := d.detach(ctx, c); err != nil {
			return err
		}
		if err := d.deleteNetns(ctx, c.name); err != nil {
			return err
		}
	}

	fmt.Println()
	printLatency(d.containers)

	fmt.Println()
	step("pool after teardown (ipamd state --json)")
	if err := d.checkPoolEmpty(ctx); err != nil {
		return err
	}

	step("stopping ipamd (SIGTERM)")
	return d.stopIpamd()
}

// loadNetwork reads a conflist from the conf dir and points it at the demo's
// ipamd socket and a bridge of its own.
func (d *demo) loadNetwork(file, suffix string) (*network, error) {
	path := filepath.Join(d.confDir, file)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	plugins, _ := conf["plugins"].([]any)
	if len(plugins) == 0 {
		return nil, fmt.Errorf("%s: no plugins", path)
	}
	first, _ := plugins[0].(map[string]any)
	ipam, _ := first["ipam"].(map[string]any)
	if ipam == nil {
		return nil, fmt.Errorf("%s: plugins[0] has no ipam section", path)
	}
	bridge := "v6d" + d.id + suffix
	first["bridge"] = bridge
	ipam["socket"] = d.socket
	out, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	n := &network{file: file, bridge: bridge, list: list}
	d.nets = append(d.nets, n)
	d.bridgesSeen = append(d.bridgesSeen, bridge)
	step("network %q from %s: bridge %s, cniVersion %s", list.Name, file, bridge, list.CNIVersion)
	return n, nil
}

func (d *demo) ipamdCmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(d.binDir, "ipamd"), args...)
}

// startIpamd runs ipamd on a temporary socket and data dir and waits until
// `ipamd state` answers.
func (d *demo) startIpamd(ctx context.Context) error {
	d.ipamdLog = filepath.Join(d.tmp, "ipamd.log")
	logf, err := os.Create(d.ipamdLog)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"serve",
		"--node-name", "demo-node",
		"--socket", d.socket,
		"--data-dir", filepath.Join(d.tmp, "data")}
	if d.up != nil {
		cfg := filepath.Join(d.tmp, "ipamd.yaml")
		if err := d.up.ipamdConfig(cfg); err != nil {
			return err
		}
		args = append(args, "--config", cfg)
	}
	cmd := exec.Command(filepath.Join(d.binDir, "ipamd"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ipamd: %w", err)
	}
	d.ipamd = cmd
	d.ipamdDone = make(chan error, 1)
	go func() { d.ipamdDone <- cmd.Wait() }()

	t0 := time.Now()
	deadline := t0.Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			if err := d.ipamdCmd(ctx, "state", "--socket", d.socket).Run(); err == nil {
				break
			}
		}
		select {
		case err := <-d.ipamdDone:
			d.ipamdDone <- err
			return fmt.Errorf("ipamd exited during start (%v); its log:\n%s", err, d.readIpamdLog())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ipamd not ready on %s after 20s; its log:\n%s", d.socket, d.readIpamdLog())
		}
	}
	step("ipamd pid %d ready on %s in %s", cmd.Process.Pid, d.socket, ms(time.Since(t0)))
	return nil
}

func (d *demo) readIpamdLog() string {
	b, _ := os.ReadFile(d.ipamdLog)
	return indent(string(b))
}

// stopIpamd sends SIGTERM and waits for a clean exit.
func (d *demo) stopIpamd() error {
	if d.ipamd == nil {
		return nil
	}
	cmd := d.ipamd
	d.ipamd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.ipamdDone:
		if err != nil {
			return fmt.Errorf("ipamd did not stop cleanly on SIGTERM: %v; its log:\n%s", err, d.readIpamdLog())
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-d.ipamdDone
		return fmt.Errorf("ipamd did not stop within 10s of SIGTERM; its log:\n%s", d.readIpamdLog())
	}
}

func (d *demo) createNetns(ctx context.Context, name string) error {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	d.netnsCreated = append(d.netnsCreated, name)
	return nil
}

func (d *demo) deleteNetns(ctx context.Context, name string) error {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, out)
	}
	d.netnsCreated = slices.DeleteFunc(d.netnsCreated, func(s string) bool { return s == name })
	return nil
}

// attach runs ADD for one container and keeps its result.
func (d *demo) attach(ctx context.Context, c *container) error {
	t0 := time.Now()
	res, err := d.cni.AddNetworkList(ctx, c.net.list, c.rt)
	c.addDur = time.Since(t0)
	if err != nil {
		return fmt.Errorf("ADD %s to %s: %w", c.name, c.net.list.Name, err)
	}
	c.added = true
	if c.result, err = current.NewResultFromResult(res); err != nil {
		return fmt.Errorf("ADD %s: result: %w", c.name, err)
	}
	var addrs []string
	for _, ip := range c.result.IPs {
		addrs = append(addrs, ip.Address.String())
	}
	step("ADD %s to %s: %s in %s", c.name, c.net.list.Name, strings.Join(addrs, ", "), ms(c.addDur))
	return nil
}

// detach runs DEL for one container.
func (d *demo) detach(ctx context.Context, c *container) error {
	t0 := time.Now()
	err := d.cni.DelNetworkList(ctx, c.net.list, c.rt)
	c.delDur = time.Since(t0)
	if err != nil {
		return fmt.Errorf("DEL %s from %s: %w", c.name, c.net.list.Name, err)
	}
	c.added = false
	step("DEL %s from %s in %s", c.name, c.net.list.Name, ms(c.delDur))
	return nil
}

// pingAll pings, from each container, the next container of its network (per
// address family) and each of its gateways.
func (d *demo) pingAll(ctx context.Context) error {
	var failed []string
	for _, n := range d.nets {
		var members []*container
		for _, c := range d.containers {
			if c.net == n {
				members = append(members, c)
			}
		}
		for i, c := range members {
			peer := members[(i+1)%len(members)]
			for _, ip := range c.result.IPs {
				targets := []struct{ what, addr string }{{"gateway", ip.Gateway.String()}}
				for _, pip := range peer.result.IPs {
					if (pip.Address.IP.To4() == nil) == (ip.Address.IP.To4() == nil) {
						targets = append(targets, struct{ what, addr string }{peer.name, pip.Address.IP.String()})
					}
				}
				for _, t := range targets {
					if err := ping(ctx, c.name, t.addr); err != nil {
						fmt.Printf("    %-22s -> %-22s %-28s FAIL\n", c.name, t.what, t.addr)
						failed = append(failed, fmt.Sprintf("%s -> %s (%s): %v", c.name, t.addr, t.what, err))
						continue
					}
					fmt.Printf("    %-22s -> %-22s %-28s ok\n", c.name, t.what, t.addr)
				}
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d pings failed:\n  %s", len(failed), strings.Join(failed, "\n  "))
	}
	return nil
}

// ping sends one echo request from inside netns to addr.
func ping(ctx context.Context, netns, addr string) error {
	family := "-4"
	if strings.Contains(addr, ":") {
		family = "-6"
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", netns, "ping", family, "-c1", "-W2", addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkPoolEmpty reads `ipamd state --json` and fails if any address is
// still in use.
func (d *demo) checkPoolEmpty(ctx context.Context) error {
	out, err := d.ipamdCmd(ctx, "state", "--socket", d.socket, "--json").Output()
	if err != nil {
		return fmt.Errorf("ipamd state --json: %w", err)
	}
	var st ipamapi.State
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("ipamd state --json: %w: %s", err, out)
	}
	var inUse []string
	for _, n := range st.Networks {
		blocks := 0
		for _, b := range n.Blocks {
			blocks++
			for _, a := range b.Addrs {
				inUse = append(inUse, fmt.Sprintf("%s (%s, %s/%s)", a.Addr, n.Network, a.ContainerID, a.IfName))
			}
		}
		fmt.Printf("    network %-10s pool %-48s blocks %d\n", n.Network, n.Pool, blocks)
	}
	if len(inUse) > 0 {
		return fmt.Errorf("pool not empty after DEL: %s", strings.Join(inUse, ", "))
	}
	fmt.Printf("    addresses in use: 0 — the pool is empty again\n")
	return nil
}

// cleanup removes whatever the run left: attachments, netns, bridges,
// ipamd and the temporary directory. It reports the first error.
func (d *demo) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errs []error
	for _, c := range d.containers {
		if c.added {
			if err := d.cni.DelNetworkList(ctx, c.net.list, c.rt); err != nil {
				errs = append(errs, fmt.Errorf("cleanup DEL %s: %w", c.name, err))
			}
		}
	}
	for _, name := range slices.Clone(d.netnsCreated) {
		if err := d.deleteNetns(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, br := range d.bridgesSeen {
		if _, err := net.InterfaceByName(br); err != nil {
			continue
		}
		if out, err := exec.CommandContext(ctx, "ip", "link", "del", br).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", br, err, out))
		}
	}
	if err := d.stopIpamd(); err != nil {
		errs = append(errs, err)
	}
	d.up.stop()
	for _, l := range d.linksCreated {
		if _, err := net.InterfaceByName(l); err != nil {
			continue
		}
		if out, err := exec.CommandContext(ctx, "ip", "link", "del", l).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", l, err, out))
		}
	}
	if err := os.RemoveAll(d.tmp); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitBGP waits until ipamd's session with the upstream router is up, so
// the time from an ADD to the route at the router is measured alone.
func (d *demo) waitBGP(ctx context.Context) error {
	start := time.Now()
	for {
		out, err := d.ipamdCmd(ctx, "bgp", "--socket", d.socket, "-o", "json").Output()
		if err == nil && strings.Contains(string(out), `"established": true`) {
			step("BGP session with the upstream router established in %s", ms(time.Since(start)))
			return nil
		}
		if time.Since(start) > 20*time.Second {
			return fmt.Errorf("no BGP session with the upstream router within 20s: %v %s", err, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// showUpstream shows the routes the upstream router learned by BGP — the
// node's IPv6 blocks, next hop the node — and pings a container from the
// router: the container's address is routable, with no NAT.
func (d *demo) showUpstream(ctx context.Context) error {
	var prefixes []string
	seen := map[string]bool{}
	for _, c := range d.containers {
		for _, ip := range c.result.IPs {
			if ip.Address.IP.To4() != nil {
				continue
			}
			p := (&net.IPNet{IP: ip.Address.IP.Mask(ip.Address.Mask), Mask: ip.Address.Mask}).String()
			if !seen[p] {
				seen[p] = true
				prefixes = append(prefixes, p)
			}
		}
	}
	took, err := d.up.waitRoutes(ctx, prefixes)
	if err != nil {
		return err
	}
	step("upstream router's table (birdc show route protocol node), learned by BGP %s after the last ADD:", ms(took))
	out, _ := d.up.routes(ctx)
	fmt.Print(indent(out))
	target := d.containers[0]
	addr := target.result.IPs[0].Address.IP.String()
	if err := ping(ctx, d.up.netns, addr); err != nil {
		return fmt.Errorf("upstream router cannot reach container %s at %s: %w", target.name, addr, err)
	}
	step("upstream router pings %s at %s: ok (routed via the node, no NAT)", target.name, addr)
	return nil
}

// printTable prints one line per container: what it got from ADD.
func printTable(cs []*container) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "CONTAINER\tNETWORK\tINTERFACE\tMAC\tADDRESSES\tGATEWAY")
	for _, c := range cs {
		ifname, mac := c.rt.IfName, "-"
		for _, itf := range c.result.Interfaces {
			if itf.Sandbox != "" {
				ifname, mac = itf.Name, itf.Mac
			}
		}
		var addrs, gws []string
		for _, ip := range c.result.IPs {
			addrs = append(addrs, ip.Address.String())
			if ip.Gateway != nil {
				gws = append(gws, ip.Gateway.String())
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.name, c.net.list.Name, ifname, mac,
			strings.Join(addrs, ", "), strings.Join(gws, ", "))
	}
	w.Flush()
}

// printLatency prints ADD and DEL time per container and their medians.
func printLatency(cs []*container) {
	const row = "%-36s %10s %10s\n"
	fmt.Printf(row, "CONTAINER", "ADD", "DEL")
	var adds, dels []time.Duration
	for _, c := range cs {
		fmt.Printf(row, c.name, ms(c.addDur), ms(c.delDur))
		adds = append(adds, c.addDur)
		dels = append(dels, c.delDur)
	}
	fmt.Printf(row, fmt.Sprintf("median of %d (libcni, both plugins)", len(cs)), ms(median(adds)), ms(median(dels)))
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

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// node is one cluster node: a network namespace on the link, its ipamd
// (run in that namespace, so its bridges, BGP session and DHCPv6 client
// are the node's) and its pods. The CLI reaches ipamd by its unix socket,
// which is a path and so crosses namespaces.
type node struct {
	host
	dir      string
	socket   string
	routerID string
	ipamd    *daemon
	client   *ipamapi.Client
	cni      *libcni.CNIConfig
	nets     map[string]*network
	started  time.Time
	ready    time.Duration // ipamd start → serving
	pdAfter  time.Duration // ipamd start → delegated prefix
	bgpAfter time.Duration // ipamd start → BGP session established
	prefix   netip.Prefix  // delegated by Kea
	dead     bool
}

// network is one conflist as a node runs it.
type network struct {
	file string
	ipam string // the IPAM plugin: ipam-v6 (a pool) or pd-ipam (the delegated prefix)
	list *libcni.NetworkConfigList
}

// pod is one network namespace attached to one network of a node.
type pod struct {
	name   string // netns name, also the CNI container ID
	node   *node
	net    *network
	rt     *libcni.RuntimeConf
	added  bool
	result *current.Result
	addEnd time.Time
	addDur time.Duration
	delDur time.Duration
}

func (d *demo) newNode(name, iid string, routerID string) (*node, error) {
	n := &node{
		host:     host{name: name, netns: d.nsName(iid), addr: d.lanAddr(iid)},
		dir:      filepath.Join(d.tmp, name),
		routerID: routerID,
		nets:     map[string]*network{},
	}
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return nil, err
	}
	n.socket = filepath.Join(n.dir, "ipamd.sock")
	n.client = ipamapi.NewClient(n.socket)
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{d.binDir}, filepath.Join(n.dir, "cni-cache"), &nodeExec{netns: n.netns})
	return n, nil
}

// setupNode creates the node's namespace on the link: forwarding on (it
// routes for its pods), default route via the router.
func (d *demo) setupNode(ctx context.Context, n *node) error {
	if err := d.createNetns(ctx, n.netns); err != nil {
		return err
	}
	if err := d.plug(ctx, &n.host); err != nil {
		return err
	}
	return shAll(ctx,
		[]string{"ip", "netns", "exec", n.netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		[]string{"ip", "-n", n.netns, "-6", "route", "add", "default", "via", d.router.addr.String(), "dev", upIf},
	)
}

// startIpamd starts the node's ipamd: the shared etcd, BGP to the router,
// DHCPv6-PD on the uplink. It does not wait.
func (d *demo) startIpamd(n *node) error {
	cfg := filepath.Join(n.dir, "ipamd.yaml")
	yaml := fmt.Sprintf(`bgp:
  asn: %d
  routerID: %s
  peers:
    - address: %q
      asn: %d
  gracefulRestart: { enabled: true, restartTime: %d }
`, nodeASN, n.routerID, d.router.addr, routerASN, grRestart)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return err
	}
	var err error
	n.started = time.Now()
	n.ipamd, err = d.startDaemon("ipamd "+n.name, n.netns, filepath.Join(n.dir, "ipamd.log"), nil,
		filepath.Join(d.binDir, "ipamd"), "serve",
		"--node-name", n.name,
		"--socket", n.socket,
		"--data-dir", filepath.Join(n.dir, "data"),
		"--etcd-endpoints", d.etcdURL,
		"--config", cfg,
		"--pd-interface", upIf, "--pd-prefix-length", fmt.Sprint(pdLen))
	return err
}

// waitIpamd waits until the node's ipamd serves, holds a delegated prefix
// and has its BGP session with the router up, and records when each came.
func (d *demo) waitIpamd(ctx context.Context, n *node) error {
	within := 30 * time.Second
	if _, err := n.ipamd.waitFor(ctx, within, "answer on "+n.socket, func() bool {
		c, err := net.Dial("unix", n.socket)
		if err != nil {
			return false
		}
		c.Close()
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err = n.client.State(cctx)
		return err == nil
	}); err != nil {
		return err
	}
	n.ready = time.Since(n.started)
	if _, err := n.ipamd.waitFor(ctx, within, "delegated prefix", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := n.client.PD(cctx)
		if err != nil || len(st.Prefixes) != 1 {
			return false
		}
		n.prefix, err = netip.ParsePrefix(st.Prefixes[0].Prefix)
		return err == nil
	}); err != nil {
		return err
	}
	n.pdAfter = time.Since(n.started)
	if _, err := n.ipamd.waitFor(ctx, within, "BGP session with the router", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := n.client.BGP(cctx)
		return err == nil && len(st.Peers) > 0 && st.Peers[0].Established
	}); err != nil {
		return err
	}
	n.bgpAfter = time.Since(n.started)
	step("%s %s at %s: ipamd pid %d", n.name, n.netns, n.addr, n.ipamd.cmd.Process.Pid)
	fmt.Printf("      serving after %s\n      prefix %s delegated by Kea after %s\n      BGP session with the router up after %s\n",
		ms(n.ready), n.prefix, ms(n.pdAfter), ms(n.bgpAfter))
	return nil
}

// loadNetwork reads a conflist from the conf dir as node n runs it: its
// IPAM plugin points at n's ipamd. The bridge name is the conflist's own:
// it lives in the node's namespace. Only the first plugin is kept: a
// chained portmap is not part of v6cni.
func (d *demo) loadNetwork(n *node, file string) (*network, error) {
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
	ipam["socket"] = n.socket
	conf["plugins"] = plugins[:1]
	out, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ipamType, _ := ipam["type"].(string)
	nw := &network{file: file, ipam: ipamType, list: list}
	n.nets[file] = nw
	return nw, nil
}

// attach creates the pod's namespace and runs ADD for it on its node.
func (d *demo) attach(ctx context.Context, p *pod) error {
	if err := d.createNetns(ctx, p.name); err != nil {
		return err
	}
	t0 := time.Now()
	res, err := p.node.cni.AddNetworkList(ctx, p.net.list, p.rt)
	p.addEnd = time.Now()
	p.addDur = p.addEnd.Sub(t0)
	if err != nil {
		return fmt.Errorf("ADD %s to %s on %s: %w", p.name, p.net.list.Name, p.node.name, err)
	}
	p.added = true
	if p.result, err = current.NewResultFromResult(res); err != nil {
		return fmt.Errorf("ADD %s: result: %w", p.name, err)
	}
	return nil
}

// detach runs DEL for the pod and deletes its namespace.
func (d *demo) detach(ctx context.Context, p *pod) error {
	t0 := time.Now()
	err := p.node.cni.DelNetworkList(ctx, p.net.list, p.rt)
	p.delDur = time.Since(t0)
	if err != nil {
		return fmt.Errorf("DEL %s from %s on %s: %w", p.name, p.net.list.Name, p.node.name, err)
	}
	p.added = false
	return d.deleteNetns(ctx, p.name)
}

// addr is the pod's first IPv6 address.
func (p *pod) addr() netip.Addr {
	for _, ip := range p.result.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && ip.Address.IP.To4() == nil {
			return a
		}
	}
	return netip.Addr{}
}

// blocks are the IPv6 prefixes (/64 blocks) the pod's addresses are in:
// what its node must announce.
func (p *pod) blocks() []string {
	var out []string
	for _, ip := range p.result.IPs {
		if ip.Address.IP.To4() != nil {
			continue
		}
		out = append(out, (&net.IPNet{IP: ip.Address.IP.Mask(ip.Address.Mask), Mask: ip.Address.Mask}).String())
	}
	return out
}

// nodeExec runs CNI plugins inside a node's network namespace (nsenter
// --net), as the node's runtime would: the bridge and the host end of the
// veth are the node's. Their unix socket to ipamd is a path, reachable
// from any namespace.
type nodeExec struct {
	netns string
	version.PluginDecoder
}

func (e *nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+e.netns, "--", pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// A plugin's error is a CNI error on stdout.
		var perr types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &perr); jerr == nil && (perr.Code != 0 || perr.Msg != "") {
			return nil, &perr
		}
		return nil, fmt.Errorf("%s in %s: %w: %s", filepath.Base(pluginPath), e.netns, err, strings.TrimSpace(stderr.String()+stdout.String()))
	}
	return stdout.Bytes(), nil
}

func (e *nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

var _ invoke.Exec = (*nodeExec)(nil)

// cli runs the ipamd client command cmd ("blocks", "node remove") against
// node n's socket, flags before the positional args (Go's flag package
// stops at the first non-flag), and returns its output (stdout and stderr)
// and error.
func (d *demo) cli(ctx context.Context, n *node, cmd string, args ...string) (string, error) {
	args = append(append(strings.Fields(cmd), "--socket", n.socket), args...)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, filepath.Join(d.binDir, "ipamd"), args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("ipamd %s: exit status %d", strings.Join(args, " "), ee.ExitCode())
	}
	return string(out), err
}

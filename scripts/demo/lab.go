package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The demo's network: one link (a bridge, lan0, in the router's namespace)
// joining the router, the etcd host and the nodes, each a network namespace
// with one veth on it. Every daemon listens on its standard port inside its
// own namespace, so no port of the host is taken and two demos never clash.
//
//	router  ::1  BIRD (AS 65000) and Kea (DHCPv6-PD), forwarding
//	etcd    ::e  Debian's etcd-server, the cluster's one etcd
//	node-a  ::a  ipamd (AS 65001), pods behind its bridges
//	node-b  ::b  ipamd (AS 65001), pods behind its bridges
const (
	lanIf      = "lan0"
	upIf       = "up0"
	routerASN  = 65000
	nodeASN    = 65001
	pdPool     = "2001:db8:c000::/40"
	pdLen      = 56
	grRestart  = 3 // seconds the router keeps a stopped node's routes as stale (ipamd's default: 120)
	birdBin    = "/usr/sbin/bird"
	birdcBin   = "/usr/sbin/birdc"
	keaBin     = "/usr/sbin/kea-dhcp6"
	etcdBin    = "/usr/bin/etcd"
	etcdClient = 2379
	etcdPeer   = 2380
)

// host is one network namespace on the link.
type host struct {
	name  string // role: "router", "etcd", "node-a"
	netns string
	addr  netip.Addr // on the link
}

// router is the upstream router: BIRD and Kea in one namespace.
type router struct {
	host
	birdCtl string
	bird    *daemon
	kea     *daemon
}

// lanPrefix is the link's /64, unique per run.
func (d *demo) lanPrefix() netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:ffff:%s::/64", d.id[:4]))
}

// lanAddr is the address with interface ID iid on the link.
func (d *demo) lanAddr(iid string) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:ffff:%s::%s", d.id[:4], iid))
}

// startRouter creates the router's namespace and the link, then starts
// BIRD and Kea. The nodes' BGP sessions and DHCPv6 requests need nothing
// else from it.
func (d *demo) startRouter(ctx context.Context, nodes []*node) error {
	for _, bin := range []struct{ path, pkg string }{{birdBin, "bird2"}, {birdcBin, "bird2"}, {keaBin, "kea-dhcp6-server"}, {etcdBin, "etcd-server"}} {
		if _, err := os.Stat(bin.path); err != nil {
			return fmt.Errorf("%s missing (Debian package %s; make demo installs it): %w", bin.path, bin.pkg, err)
		}
	}
	r := &router{host: host{name: "router", netns: d.nsName("rtr"), addr: d.lanAddr("1")}, birdCtl: filepath.Join(d.tmp, "bird.ctl")}
	d.router = r
	if err := d.createNetns(ctx, r.netns); err != nil {
		return err
	}
	if err := shAll(ctx,
		// No multicast snooping: DHCPv6 Solicits reach Kea at once.
		[]string{"ip", "-n", r.netns, "link", "add", lanIf, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"},
		[]string{"ip", "netns", "exec", r.netns, "sysctl", "-qw", "net.ipv6.conf." + lanIf + ".accept_dad=0", "net.ipv6.conf.all.forwarding=1"},
		[]string{"ip", "-n", r.netns, "addr", "add", r.addr.String() + "/64", "dev", lanIf, "nodad"},
		[]string{"ip", "-n", r.netns, "link", "set", "lo", "up"},
		[]string{"ip", "-n", r.netns, "link", "set", lanIf, "up"},
	); err != nil {
		return err
	}

	var protos strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&protos, `protocol bgp %s {
  local %s as %d;
  neighbor %s as %d;
  graceful restart on;
  ipv6 { import all; export none; };
}
`, strings.ReplaceAll(n.name, "-", "_"), r.addr, routerASN, n.addr, nodeASN)
	}
	conf := filepath.Join(d.tmp, "bird.conf")
	birdConf := fmt.Sprintf("router id 10.255.255.1;\nprotocol device { }\nprotocol kernel { ipv6 { export all; }; }\n%s", protos.String())
	if err := os.WriteFile(conf, []byte(birdConf), 0o600); err != nil {
		return err
	}
	var err error
	if r.bird, err = d.startDaemon("bird", r.netns, filepath.Join(d.tmp, "bird.log"), nil, birdBin, "-f", "-c", conf, "-s", r.birdCtl); err != nil {
		return err
	}
	birdUp, err := r.bird.waitFor(ctx, 10*time.Second, "control socket", func() bool {
		return exec.CommandContext(ctx, birdcBin, "-s", r.birdCtl, "show", "status").Run() == nil
	})
	if err != nil {
		return err
	}
	step("router %s: BIRD 2, AS %d, at %s, ready in %s", r.netns, routerASN, r.addr, ms(birdUp))
	return nil
}

// startKea starts Kea's DHCPv6 server on the link, delegating /56s of
// pdPool with rapid commit; it waits until Kea listens on port 547.
func (d *demo) startKea(ctx context.Context) error {
	r := d.router
	dir := filepath.Join(d.tmp, "kea")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	pool := netip.MustParsePrefix(pdPool)
	conf := fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": [%q]},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "0c1a5e7e", "persist": false},
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "renew-timer": 600, "rebind-timer": 900, "preferred-lifetime": 1800, "valid-lifetime": 3600,
  "subnet6": [{"id": 1, "subnet": %q, "interface": %q, "rapid-commit": true,
    "pd-pools": [{"prefix": %q, "prefix-len": %d, "delegated-len": %d}]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
}}`, lanIf, dir, filepath.Join(dir, "leases6.csv"), d.lanPrefix(), lanIf, pool.Addr(), pool.Bits(), pdLen)
	path := filepath.Join(dir, "kea-dhcp6.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	var err error
	// Kea's pid and lock files go to the demo's directory, not /run/kea.
	env := []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}
	if r.kea, err = d.startDaemon("kea-dhcp6", r.netns, filepath.Join(d.tmp, "kea.log"), env, keaBin, "-c", path); err != nil {
		return err
	}
	took, err := r.kea.waitFor(ctx, 20*time.Second, "listening on port 547", func() bool {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", r.netns, "ss", "-Hlun", "sport", "=", ":547").Output()
		return len(strings.TrimSpace(string(out))) > 0
	})
	if err != nil {
		return err
	}
	step("router %s: Kea DHCPv6 server delegating /%d prefixes of %s, listening in %s", r.netns, pdLen, pdPool, ms(took))
	return nil
}

// routes is BIRD's table: what it learned by BGP.
func (r *router) routes(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, birdcBin, "-s", r.birdCtl, "show", "route").CombinedOutput()
	return string(out), err
}

// hasRoute reports whether BIRD's table holds prefix via next hop nh. BIRD
// prints a route as "PREFIX  unicast [...]" and its next hop on the next
// line, "via ADDR on IF".
func hasRoute(table, prefix string, nh netip.Addr) bool {
	lines := strings.Split(table, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != prefix {
			continue
		}
		for _, next := range lines[i+1:] {
			nf := strings.Fields(next)
			if len(nf) >= 2 && nf[0] == "via" {
				if nf[1] == nh.String() {
					return true
				}
				continue
			}
			break
		}
	}
	return false
}

// waitRoutes waits until BIRD's table holds (want) or lacks (!want) every
// prefix of each node, via that node, and says how long it took.
func (r *router) waitRoutes(ctx context.Context, want bool, within time.Duration, byNode map[*node][]string) (time.Duration, error) {
	t0 := time.Now()
	for {
		table, err := r.routes(ctx)
		var wrong []string
		for n, prefixes := range byNode {
			for _, p := range prefixes {
				if hasRoute(table, p, n.addr) != want {
					wrong = append(wrong, p+" via "+n.name)
				}
			}
		}
		if err == nil && len(wrong) == 0 {
			return time.Since(t0), nil
		}
		if time.Since(t0) > within {
			verb := "learned"
			if !want {
				verb = "withdrawn"
			}
			return 0, fmt.Errorf("router: not %s within %v: %s (%v)\n%s", verb, within, strings.Join(wrong, ", "), err, indent(table))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startEtcd runs Debian's etcd-server, a single member, in its own
// namespace on the link: the cluster's one etcd, reached by every node over
// the network as in a real cluster, and outliving any node.
func (d *demo) startEtcd(ctx context.Context) error {
	h := &host{name: "etcd", netns: d.nsName("etcd"), addr: d.lanAddr("e")}
	d.etcdHost = h
	if err := d.createNetns(ctx, h.netns); err != nil {
		return err
	}
	if err := d.plug(ctx, h); err != nil {
		return err
	}
	client := fmt.Sprintf("http://[%s]:%d", h.addr, etcdClient)
	peer := fmt.Sprintf("http://[::1]:%d", etcdPeer)
	var err error
	d.etcd, err = d.startDaemon("etcd", h.netns, filepath.Join(d.tmp, "etcd.log"), nil, etcdBin,
		"--name", "demo", "--data-dir", filepath.Join(d.tmp, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "demo="+peer, "--initial-cluster-state", "new",
		"--initial-cluster-token", "v6demo-"+d.id,
		"--heartbeat-interval", "50", "--election-timeout", "500")
	if err != nil {
		return err
	}
	took, err := d.etcd.waitFor(ctx, 20*time.Second, "\"ready to serve client requests\"", func() bool {
		b, _ := os.ReadFile(d.etcd.log)
		return strings.Contains(string(b), "ready to serve client requests")
	})
	if err != nil {
		return err
	}
	d.etcdURL = client
	step("etcd %s: Debian's etcd-server, one member, at %s, ready in %s", h.netns, client, ms(took))
	return nil
}

// plug joins h's namespace to the link: a veth whose one end (upIf, with
// h's address) is in h's namespace and the other a port of the router's
// bridge. Both ends are created in their namespaces: nothing appears in
// the host's.
func (d *demo) plug(ctx context.Context, h *host) error {
	r := d.router
	port := "to-" + h.name
	if len(port) > 15 {
		port = port[:15]
	}
	return shAll(ctx,
		[]string{"ip", "link", "add", "v6d" + d.id + "tmp", "netns", h.netns, "type", "veth", "peer", "name", port, "netns", r.netns},
		[]string{"ip", "-n", h.netns, "link", "set", "v6d" + d.id + "tmp", "name", upIf},
		// No DAD on the link: daemons bind their addresses at once.
		[]string{"ip", "netns", "exec", h.netns, "sysctl", "-qw", "net.ipv6.conf." + upIf + ".accept_dad=0", "net.ipv6.conf." + upIf + ".accept_ra=0"},
		[]string{"ip", "-n", h.netns, "addr", "add", h.addr.String() + "/64", "dev", upIf, "nodad"},
		[]string{"ip", "-n", h.netns, "link", "set", "lo", "up"},
		[]string{"ip", "-n", h.netns, "link", "set", upIf, "up"},
		[]string{"ip", "-n", r.netns, "link", "set", port, "master", lanIf},
		[]string{"ip", "-n", r.netns, "link", "set", port, "up"},
	)
}

package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// Router is the lab's upstream router: BIRD or gobgpd (AS 65000) in its
// own netns, one passive BGP neighbour per node, the learned routes in its
// kernel's main table, forwarding between the nodes (no redirects sent).
type Router struct {
	Kind RouterKind
	// NS is its netns; Addr6 and Addr4 its addresses on the link (Addr4
	// only with Options.IPv4).
	NS           string
	Addr6, Addr4 netip.Addr
	lab          *Lab
	logPath      string
	p            *proc
	// BIRD: its control socket.
	ctl string
	// gobgpd: its API socket and the FIB mirror.
	api *gobgpAPI
}

// RouterASN is the router's AS; NodeASN every node's.
const (
	RouterASN = 65000
	NodeASN   = 65001
)

func (l *Lab) startRouter() *Router {
	l.t.Helper()
	r := &Router{Kind: l.Opts.Router, NS: l.newNetns("rt"), Addr6: l.linkAddr6(hostRouter),
		lab: l, logPath: filepath.Join(l.Dir, "router.log")}
	addrs := []netip.Addr{r.Addr6}
	if l.Opts.IPv4 {
		r.Addr4 = l.linkAddr4(hostRouter)
		addrs = append(addrs, r.Addr4)
	}
	if err := l.attach(r.NS, "rt", addrs...); err != nil {
		l.t.Fatal(err)
	}
	// Packets between nodes leave by the interface they came in on: no
	// ICMP redirect may teach a node a direct route to another's pods.
	if err := sysctl(r.NS, "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.lan0.send_redirects=0"); err != nil {
		l.t.Fatal(err)
	}
	var err error
	switch r.Kind {
	case BIRD:
		requireBinary(l.t, "bird")
		requireBinary(l.t, "birdc")
		err = r.startBird()
	case GoBGP:
		requireBinary(l.t, "gobgpd")
		err = r.startGobgpd()
	default:
		err = fmt.Errorf("netlab: unknown router kind %q", r.Kind)
	}
	if err != nil {
		r.stop()
		l.t.Fatal(err)
	}
	return r
}

// neighborName is the BIRD protocol name of node i's session.
func neighborName(i int) string { return "node" + strconv.Itoa(i) }

func (r *Router) startBird() error {
	conf := filepath.Join(r.lab.Dir, "bird.conf")
	r.ctl = filepath.Join(r.lab.Dir, "bird.ctl")
	var sb strings.Builder
	sb.WriteString("router id 10.255.0.1;\nlog stderr all;\nprotocol device { }\n")
	sb.WriteString("protocol kernel { ipv6 { export all; }; }\n")
	if r.lab.Opts.IPv4 {
		sb.WriteString("protocol kernel { ipv4 { export all; }; }\n")
	}
	for _, n := range r.lab.Nodes {
		fmt.Fprintf(&sb, "protocol bgp %s {\n  local %s as %d;\n  neighbor %s as %d;\n", neighborName(n.Index), r.Addr6, RouterASN, n.Addr6, NodeASN)
		// The nodes dial (they have no listener); after an error the
		// session must accept a restarted node at once, not after the
		// default 60 s error wait.
		sb.WriteString("  passive on;\n  graceful restart on;\n  error wait time 1, 2;\n")
		sb.WriteString("  ipv6 { import all; export none; };\n")
		if r.lab.Opts.IPv4 {
			sb.WriteString("  ipv4 { import all; export none; };\n")
		}
		sb.WriteString("}\n")
	}
	if err := os.WriteFile(conf, []byte(sb.String()), 0o600); err != nil {
		return err
	}
	var err error
	if r.p, err = startIn(r.NS, r.logPath, "", "bird", "-f", "-c", conf, "-s", r.ctl); err != nil {
		return err
	}
	if !Poll(10*time.Second, 20*time.Millisecond, func() bool {
		return exec.Command("birdc", "-s", r.ctl, "show", "status").Run() == nil
	}) {
		return fmt.Errorf("bird in %s: control socket not answering:\n%s", r.NS, tailFile(r.logPath, 2000))
	}
	return nil
}

func (r *Router) startGobgpd() error {
	conf := filepath.Join(r.lab.Dir, "gobgpd.toml")
	sock := filepath.Join(r.lab.Dir, "gobgpd.sock")
	var sb strings.Builder
	fmt.Fprintf(&sb, "[global.config]\n  as = %d\n  router-id = \"10.255.0.1\"\n", RouterASN)
	fams := []string{"ipv6-unicast"}
	if r.lab.Opts.IPv4 {
		fams = append(fams, "ipv4-unicast")
	}
	for _, n := range r.lab.Nodes {
		fmt.Fprintf(&sb, "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = %q\n    peer-as = %d\n", n.Addr6, NodeASN)
		sb.WriteString("  [neighbors.transport.config]\n    passive-mode = true\n")
		// As BIRD's error wait: take a restarted node's session at once.
		sb.WriteString("  [neighbors.timers.config]\n    idle-hold-time-after-reset = 1\n")
		sb.WriteString("  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n")
		for _, fam := range fams {
			fmt.Fprintf(&sb, "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = %q\n", fam)
			sb.WriteString("    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n")
		}
	}
	if err := os.WriteFile(conf, []byte(sb.String()), 0o600); err != nil {
		return err
	}
	var err error
	if r.p, err = startIn(r.NS, r.logPath, "", "gobgpd", "-f", conf, "-p", "--api-hosts=unix://"+sock, "--pprof-disable"); err != nil {
		return err
	}
	if !Poll(10*time.Second, 20*time.Millisecond, func() bool {
		_, err := os.Stat(sock)
		return err == nil
	}) {
		return fmt.Errorf("gobgpd in %s: API socket %s not created:\n%s", r.NS, sock, tailFile(r.logPath, 2000))
	}
	r.api, err = startFIB(r.NS, sock)
	return err
}

func (r *Router) stop() {
	if r.api != nil {
		r.api.close()
		r.api = nil
	}
	r.p.stop(syscall.SIGTERM)
}

func (r *Router) logTail() string { return tailFile(r.logPath, 6000) }

// Established reports, per node, whether its BGP session is established
// (as the router sees it).
func (r *Router) Established() (map[string]bool, error) {
	out := map[string]bool{}
	switch r.Kind {
	case BIRD:
		txt, err := r.birdc("show", "protocols")
		if err != nil {
			return nil, err
		}
		up := map[string]bool{}
		for _, line := range strings.Split(txt, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[1] == "BGP" {
				up[f[0]] = strings.Contains(line, "Established")
			}
		}
		for _, n := range r.lab.Nodes {
			out[n.Name] = up[neighborName(n.Index)]
		}
	case GoBGP:
		up, err := r.api.established()
		if err != nil {
			return nil, err
		}
		for _, n := range r.lab.Nodes {
			out[n.Name] = up[n.Addr6]
		}
	}
	return out, nil
}

// WaitEstablished waits until every node of nodes has its session up.
func (r *Router) WaitEstablished(nodes []*Node, timeout time.Duration) error {
	var last map[string]bool
	var lastErr error
	if Poll(timeout, 50*time.Millisecond, func() bool {
		last, lastErr = r.Established()
		if lastErr != nil {
			return false
		}
		for _, n := range nodes {
			if !last[n.Name] {
				return false
			}
		}
		return true
	}) {
		return nil
	}
	return fmt.Errorf("router %s: BGP sessions not all established after %s: %v %v", r.Kind, timeout, last, lastErr)
}

func (r *Router) birdc(args ...string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", r.ctl}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("birdc %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// CLI runs the router's own CLI (birdc, or gobgp against gobgpd's API)
// and returns its output, for logs and ad-hoc checks.
func (r *Router) CLI(args ...string) (string, error) {
	if r.Kind == BIRD {
		return r.birdc(args...)
	}
	out, err := exec.Command("gobgp", append([]string{"--target", "unix://" + r.api.sock}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gobgp %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ShowRoutes is the router's BGP table as its CLI prints it, both
// families: `birdc show route`, or `gobgp global rib -a ipv6` and `-a
// ipv4` against gobgpd; for logs.
func (r *Router) ShowRoutes() (string, error) {
	if r.Kind == BIRD {
		return r.CLI("show", "route")
	}
	var sb strings.Builder
	for _, fam := range []string{"ipv6", "ipv4"} {
		out, err := r.CLI("global", "rib", "-a", fam)
		if err != nil {
			return sb.String(), err
		}
		sb.WriteString(out)
	}
	return sb.String(), nil
}

// Routes is the router's BGP table, both families: the best path of each
// prefix it learned from a node, prefix → next hop. BIRD: `birdc show
// route` (BGP routes only); gobgpd: its global RIB (what `gobgp global rib`
// prints), over the API.
func (r *Router) Routes() (map[netip.Prefix]netip.Addr, error) {
	if r.Kind == GoBGP {
		m := map[netip.Prefix]netip.Addr{}
		for _, afi := range []api.Family_Afi{api.Family_AFI_IP6, api.Family_AFI_IP} {
			if err := r.api.bestPaths(context.Background(), afi, m); err != nil {
				return nil, err
			}
		}
		return m, nil
	}
	out, err := r.birdc("show", "route")
	if err != nil {
		return nil, err
	}
	return parseBirdRoutes(out), nil
}

// parseBirdRoutes reads `birdc show route`, taking the first (best) route
// of each prefix when it came from a BGP protocol (named node<i>):
//
//	Table master6:
//	fd6d:1:200::/64      unicast [node0 03:10:00.123] * (100) [AS65001i]
//		via fd6c:1:2::11 on lan0
func parseBirdRoutes(out string) map[netip.Prefix]netip.Addr {
	m := map[netip.Prefix]netip.Addr{}
	var cur netip.Prefix
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			cur = netip.Prefix{}
			if p, err := netip.ParsePrefix(f[0]); err == nil && strings.Contains(line, "[node") {
				cur = p
			}
			continue
		}
		if _, seen := m[cur]; cur.IsValid() && !seen && f[0] == "via" && len(f) > 1 {
			if nh, err := netip.ParseAddr(f[1]); err == nil {
				m[cur] = nh
			}
		}
	}
	return m
}

// KernelRoutes is the router's kernel main table, both families,
// restricted to routes via a gateway (BIRD exports what it learned, the
// lab mirrors gobgpd's best paths): what it forwards by.
func (r *Router) KernelRoutes() (map[netip.Prefix]netip.Addr, error) {
	return kernelRoutes(r.NS)
}

func kernelRoutes(ns string) (map[netip.Prefix]netip.Addr, error) {
	m := map[netip.Prefix]netip.Addr{}
	for _, fam := range []string{"-6", "-4"} {
		out, err := exec.Command("ip", "-j", fam, "-n", ns, "route", "show").Output()
		if err != nil {
			return nil, fmt.Errorf("ip %s -n %s route show: %w", fam, ns, err)
		}
		var rs []struct {
			Dst     string `json:"dst"`
			Gateway string `json:"gateway"`
		}
		if err := json.Unmarshal(out, &rs); err != nil {
			return nil, fmt.Errorf("ip %s -n %s route show: %w", fam, ns, err)
		}
		for _, rt := range rs {
			if rt.Gateway == "" || rt.Dst == "default" {
				continue
			}
			p, err := parsePrefixOrAddr(rt.Dst)
			if err != nil {
				continue
			}
			gw, err := netip.ParseAddr(rt.Gateway)
			if err != nil {
				continue
			}
			m[p] = gw
		}
	}
	return m, nil
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// WaitRoutes polls Routes until cond holds and returns the table and how
// long it took; on timeout it returns the last table and an error.
func (r *Router) WaitRoutes(timeout time.Duration, cond func(map[netip.Prefix]netip.Addr) bool) (map[netip.Prefix]netip.Addr, time.Duration, error) {
	start := time.Now()
	var last map[netip.Prefix]netip.Addr
	var lastErr error
	ok := Poll(timeout, 20*time.Millisecond, func() bool {
		last, lastErr = r.Routes()
		return lastErr == nil && cond(last)
	})
	if !ok {
		return last, time.Since(start), fmt.Errorf("router %s: routes not as expected after %s (err %v): %v", r.Kind, timeout, lastErr, last)
	}
	return last, time.Since(start), nil
}

// Forwarded is the router's count of forwarded packets, IPv6 and IPv4
// (Ip6OutForwDatagrams, Ip ForwDatagrams): a packet between two nodes'
// pods that went through the router raised one of them.
func (r *Router) Forwarded() (v6, v4 uint64, err error) {
	out, err := Exec(context.Background(), r.NS, "cat", "/proc/net/snmp6", "/proc/net/snmp")
	if err != nil {
		return 0, 0, err
	}
	lines := strings.Split(string(out), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Ip6OutForwDatagrams" {
			v6, _ = strconv.ParseUint(f[1], 10, 64)
		}
		// /proc/net/snmp: a header line "Ip: Forwarding ... ForwDatagrams ..."
		// followed by a line of values.
		if len(f) > 1 && f[0] == "Ip:" && !isNumber(f[1]) && i+1 < len(lines) {
			vals := strings.Fields(lines[i+1])
			for j, name := range f {
				if name == "ForwDatagrams" && j < len(vals) {
					v4, _ = strconv.ParseUint(vals[j], 10, 64)
				}
			}
		}
	}
	return v6, v4, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

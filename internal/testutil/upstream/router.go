package upstream

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Router is one of the two upstream routers: a netns with a leg on the
// segment (SegIf: "seg", or "seg.<vlan>") and one on the far link
// ("far"), forwarding between them, running radvd on both legs and, in
// VRRP mode, keepalived.
type Router struct {
	// Name is "r1" or "r2".
	Name string
	// NS is its netns.
	NS string
	// SegIf and FarIf are its legs.
	SegIf, FarIf string
	// Addr is its own address on the segment (<prefix>::2 or ::3),
	// FarAddr on the far link (2001:db8:ff::2 or ::3).
	Addr, FarAddr netip.Addr
	// LinkLocal is its own link-local address on the segment (where its
	// RAs come from in TwoRouters mode).
	LinkLocal netip.Addr
	// Priority is its VRRP priority (r1 200, r2 100).
	Priority int

	lab     *Lab
	logPath string
	radvd   *proc
	keep    *proc
	ports   []string
	dead    bool
}

func (l *Lab) newRouter(i int) (*Router, error) {
	r := &Router{Name: fmt.Sprintf("r%d", i+1), Addr: hostAddr(l.Config.Prefix, 2+i), FarAddr: hostAddr(FarPrefix, 2+i),
		Priority: 200 - 100*i, lab: l}
	r.logPath = filepath.Join(l.Dir, r.Name+".log")
	var err error
	if r.NS, err = l.NewNetns(r.Name); err != nil {
		return nil, err
	}
	if err := Sysctl(r.NS, "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_dad=0"); err != nil {
		return nil, err
	}
	segPort, farPort := r.Name+"s", r.Name+"f"
	r.ports = []string{segPort, farPort}
	if err := l.veth(r.NS, "seg", "br0", segPort); err != nil {
		return nil, err
	}
	if err := l.veth(r.NS, "far", "br1", farPort); err != nil {
		return nil, err
	}
	r.SegIf, r.FarIf = l.segIf("seg"), "far"
	if err := run("ip", "-n", r.NS, "link", "set", "seg", "up"); err != nil {
		return nil, err
	}
	if l.Config.VLAN > 0 {
		if err := run("ip", "-n", r.NS, "link", "add", "link", "seg", "name", r.SegIf, "type", "vlan", "id", fmt.Sprint(l.Config.VLAN)); err != nil {
			return nil, err
		}
		if err := Sysctl(r.NS, "net.ipv6.conf."+sysctlIf(r.SegIf)+".accept_dad=0"); err != nil {
			return nil, err
		}
	}
	if err := l.addAddrs(r.NS, r.SegIf, r.Addr); err != nil {
		return nil, err
	}
	if err := l.addAddrs(r.NS, r.FarIf, r.FarAddr); err != nil {
		return nil, err
	}
	for _, ifn := range []string{r.SegIf, r.FarIf} {
		if err := run("ip", "-n", r.NS, "link", "set", ifn, "up"); err != nil {
			return nil, err
		}
	}
	if !Poll(10*time.Second, 20*time.Millisecond, func() bool {
		r.LinkLocal, err = linkLocal(r.NS, r.SegIf)
		return err == nil
	}) {
		return nil, fmt.Errorf("router %s: %w", r.Name, err)
	}
	return r, nil
}

// linkLocal is the interface's own link-local address (not fe80::1).
func linkLocal(nsName, ifName string) (netip.Addr, error) {
	out, err := Exec(context.Background(), nsName, "ip", "-6", "-o", "addr", "show", "dev", ifName, "scope", "link")
	if err != nil {
		return netip.Addr{}, err
	}
	for _, f := range strings.Fields(string(out)) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr() != GatewayLL {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no link-local address on %s in %s yet", ifName, nsName)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// radvdConf is the router's radvd.conf.
func (r *Router) radvdConf() string {
	c := r.lab.Config
	life := int(c.RouterLifetime / time.Second)
	maxInt := min(10, max(4, life/3))
	if life == 0 {
		maxInt = 10
	}
	minInt := max(3, maxInt*3/4-1)
	src := ""
	if c.Mode == VRRP {
		// Only the master holds fe80::1: the backup's radvd sends
		// nothing.
		src = fmt.Sprintf("\tAdvRASrcAddress {\n\t\t%s;\n\t};\n", GatewayLL)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `interface %s {
	AdvSendAdvert on;
	MinRtrAdvInterval %d;
	MaxRtrAdvInterval %d;
	AdvDefaultLifetime %d;
	AdvDefaultPreference %s;
	AdvManagedFlag %s;
	AdvOtherConfigFlag %s;
%s	prefix %s {
		AdvOnLink on;
		AdvAutonomous %s;
	};
	RDNSS %s {
	};
`, r.SegIf, minInt, maxInt, life, c.Preference,
		onOff(c.Addressing == DHCPv6Stateful), onOff(c.Addressing == DHCPv6Stateful || c.Addressing == DHCPv6Stateless),
		src, c.Prefix, onOff(c.Addressing == SLAAC || c.Addressing == DHCPv6Stateless), r.lab.DNS)
	if c.SearchDomain != "" {
		fmt.Fprintf(&b, "\tDNSSL %s {\n\t};\n", c.SearchDomain)
	}
	b.WriteString("};\n")
	// The far link: the far host's default route (the return path).
	fmt.Fprintf(&b, `interface %s {
	AdvSendAdvert on;
	MinRtrAdvInterval 3;
	MaxRtrAdvInterval 10;
	AdvDefaultLifetime 1800;
%s};
`, r.FarIf, src)
	return b.String()
}

// keepalivedConf is the router's keepalived.conf: one VRRPv3 instance per
// leg, in one sync group (the master of one is the master of both).
func (r *Router) keepalivedConf() string {
	c := r.lab.Config
	adv := fmt.Sprintf("%.2f", c.AdvertInterval.Seconds())
	inst := func(name, ifn string, vrid int, gw netip.Addr) string {
		return fmt.Sprintf(`vrrp_instance %s {
	state BACKUP
	interface %s
	virtual_router_id %d
	priority %d
	advert_int %s
	version 3
	virtual_ipaddress {
		%s/64
		%s/64
	}
}
`, name, ifn, vrid, r.Priority, adv, GatewayLL, gw)
	}
	return fmt.Sprintf(`global_defs {
	router_id up-%s
	vrrp_garp_master_delay 0
	vrrp_garp_master_repeat 3
}
vrrp_sync_group UP {
	group {
		SEG
		FAR
	}
}
`, r.Name) + inst("SEG", r.SegIf, 22, r.lab.Gateway) + inst("FAR", r.FarIf, 23, hostAddr(FarPrefix, 1))
}

func (r *Router) start() error {
	l := r.lab
	conf := filepath.Join(l.Dir, r.Name+"-radvd.conf")
	if err := os.WriteFile(conf, []byte(r.radvdConf()), 0o644); err != nil {
		return err
	}
	var err error
	r.radvd, err = l.start(r.NS, r.logPath, nil, "radvd", "--nodaemon", "--config", conf,
		"--pidfile", filepath.Join(l.Dir, r.Name+"-radvd.pid"), "--logmethod", "stderr", "--debug", "1")
	if err != nil {
		return err
	}
	if l.Config.Mode == VRRP {
		kconf := filepath.Join(l.Dir, r.Name+"-keepalived.conf")
		if err := os.WriteFile(kconf, []byte(r.keepalivedConf()), 0o644); err != nil {
			return err
		}
		// -P: VRRP only; -n: foreground; -l: log to the console.
		r.keep, err = l.start(r.NS, r.logPath, nil, "keepalived", "-P", "-n", "-l", "-D", "-f", kconf,
			"-p", filepath.Join(l.Dir, r.Name+"-keepalived.pid"), "-r", filepath.Join(l.Dir, r.Name+"-vrrp.pid"),
			"-i", "up-"+l.ID+"-"+r.Name)
		if err != nil {
			return err
		}
	}
	time.Sleep(50 * time.Millisecond)
	if r.radvd.exited() || (r.keep != nil && r.keep.exited()) {
		return fmt.Errorf("router %s: a daemon exited at start:\n%s", r.Name, r.logTail())
	}
	return nil
}

// IsMaster reports whether the router holds fe80::1 on its segment leg
// (VRRP mode).
func (r *Router) IsMaster() bool {
	if r.dead {
		return false
	}
	out, err := Exec(context.Background(), r.NS, "ip", "-6", "-o", "addr", "show", "dev", r.SegIf)
	return err == nil && strings.Contains(string(out), " "+GatewayLL.String()+"/64 ")
}

// Master is the router holding the virtual gateway (VRRP mode), nil
// when none does (yet). In TwoRouters mode it is r1 while r1 lives.
func (l *Lab) Master() *Router {
	for _, r := range l.Routers {
		if r == nil || r.dead {
			continue
		}
		if l.Config.Mode == TwoRouters || r.IsMaster() {
			return r
		}
	}
	return nil
}

// Other is the router that is not r.
func (l *Lab) Other(r *Router) *Router {
	if l.Routers[0] == r {
		return l.Routers[1]
	}
	return l.Routers[0]
}

// RouterByLinkLocal is the router whose own link-local on the segment is
// a (nil if none).
func (l *Lab) RouterByLinkLocal(a netip.Addr) *Router {
	for _, r := range l.Routers {
		if r.LinkLocal == a.WithZone("") {
			return r
		}
	}
	return nil
}

// Kill simulates a power loss of r: its daemons are frozen (SIGSTOP: no
// VRRP priority-0 advert, no final RA with lifetime 0), its links cut
// (its switch ports deleted), then the daemons are killed and its netns
// deleted. The other router notices only by the missing adverts.
func (l *Lab) Kill(r *Router) error {
	if r == nil || r.dead {
		return fmt.Errorf("upstream: kill: no such live router")
	}
	r.dead = true
	procs := []*proc{r.radvd}
	if r.keep != nil {
		procs = append(procs, r.keep)
	}
	for _, p := range procs {
		p.signal(syscall.SIGSTOP)
	}
	var firstErr error
	for _, port := range r.ports {
		if err := run("ip", "-n", l.Switch, "link", "del", port); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, p := range procs {
		p.kill()
	}
	if err := run("ip", "netns", "del", r.NS); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// Alive reports whether r has not been killed.
func (r *Router) Alive() bool { return !r.dead }

// LogPath is the router's daemons' log.
func (r *Router) LogPath() string { return r.logPath }

func (r *Router) logTail() string { return tailFile(r.logPath, 4000) }

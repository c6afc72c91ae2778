package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// upstream is the demo's upstream router: a network namespace running
// BIRD 2 (AS 65000), joined to the host (the node) by a veth pair. ipamd
// (AS 65001) announces the node's blocks to it by BGP, and it routes to the
// containers with no NAT.
type upstream struct {
	netns      string
	hostIf     string
	routerAddr string
	nodeAddr   string
	ctl        string
	bird       *exec.Cmd
	birdDone   chan struct{}
}

func (d *demo) startUpstream(ctx context.Context) (*upstream, error) {
	if _, err := os.Stat("/usr/sbin/bird"); err != nil {
		return nil, fmt.Errorf("BIRD 2 is missing (Debian package bird2; make demo installs it): %w", err)
	}
	u := &upstream{
		netns:      fmt.Sprintf("v6demo-%s-rtr", d.id),
		hostIf:     "v6d" + d.id + "up",
		routerAddr: fmt.Sprintf("2001:db8:ffff:%s::1", d.id[:4]),
		nodeAddr:   fmt.Sprintf("2001:db8:ffff:%s::2", d.id[:4]),
		ctl:        filepath.Join(d.tmp, "bird.ctl"),
	}
	if err := d.createNetns(ctx, u.netns); err != nil {
		return nil, err
	}
	d.linksCreated = append(d.linksCreated, u.hostIf)
	for _, c := range [][]string{
		{"ip", "link", "add", u.hostIf, "type", "veth", "peer", "name", "down0", "netns", u.netns},
		{"ip", "netns", "exec", u.netns, "sysctl", "-qw", "net.ipv6.conf.down0.accept_dad=0"},
		{"ip", "addr", "add", u.nodeAddr + "/64", "dev", u.hostIf, "nodad"},
		{"ip", "-n", u.netns, "addr", "add", u.routerAddr + "/64", "dev", "down0", "nodad"},
		{"ip", "link", "set", u.hostIf, "up"},
		{"ip", "-n", u.netns, "link", "set", "down0", "up"},
		{"ip", "-n", u.netns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	conf := filepath.Join(d.tmp, "bird.conf")
	birdConf := fmt.Sprintf(`router id 10.255.255.1;
protocol device { }
protocol kernel { ipv6 { export all; }; }
protocol bgp node {
  local %s as 65000;
  neighbor %s as 65001;
  graceful restart on;
  ipv6 { import all; export none; };
}
`, u.routerAddr, u.nodeAddr)
	if err := os.WriteFile(conf, []byte(birdConf), 0o600); err != nil {
		return nil, err
	}
	u.bird = exec.Command("ip", "netns", "exec", u.netns, "/usr/sbin/bird", "-f", "-c", conf, "-s", u.ctl)
	if err := u.bird.Start(); err != nil {
		return nil, fmt.Errorf("start bird: %w", err)
	}
	u.birdDone = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(u.bird, u.birdDone)
	deadline := time.Now().Add(10 * time.Second)
	for exec.CommandContext(ctx, "/usr/sbin/birdc", "-s", u.ctl, "show", "status").Run() != nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bird in %s: control socket not answering", u.netns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	step("upstream router %s: BIRD 2, AS 65000, at %s (node at %s)", u.netns, u.routerAddr, u.nodeAddr)
	return u, nil
}

// ipamdConfig is the config file that makes ipamd peer with the router.
func (u *upstream) ipamdConfig(path string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`bgp:
  asn: 65001
  routerID: 10.255.255.2
  peers:
    - address: %s
      asn: 65000
`, u.routerAddr)), 0o600)
}

// routes is what BIRD learned by BGP.
func (u *upstream) routes(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "/usr/sbin/birdc", "-s", u.ctl, "show", "route", "protocol", "node").CombinedOutput()
	return string(out), err
}

// waitRoutes waits until BIRD holds every prefix, and says how long it took.
func (u *upstream) waitRoutes(ctx context.Context, prefixes []string) (time.Duration, error) {
	start := time.Now()
	for {
		out, err := u.routes(ctx)
		missing := ""
		for _, p := range prefixes {
			if !strings.Contains(out, p) {
				missing = p
			}
		}
		if err == nil && missing == "" {
			return time.Since(start), nil
		}
		if time.Since(start) > 20*time.Second {
			return 0, fmt.Errorf("upstream router did not learn %s by BGP within 20s: %v\n%s", missing, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (u *upstream) stop() {
	if u == nil || u.bird == nil {
		return
	}
	u.bird.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.birdDone:
	case <-time.After(5 * time.Second):
		u.bird.Process.Kill()
		<-u.birdDone
	}
	u.bird = nil
}

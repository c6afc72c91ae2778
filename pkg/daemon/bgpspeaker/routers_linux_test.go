package bgpspeaker

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/wait"
)

func slogToStderr() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// peerRoute is a route as an upstream router shows it.
type peerRoute struct {
	NextHop     netip.Addr
	Communities []string // "65001:100"
	Stale       bool     // gobgpd only: BIRD does not show stale routes
}

// router is an upstream BGP router in its own netns.
type router interface {
	// routes returns the router's BGP routes (both families) learned
	// from the speaker.
	routes() (map[netip.Prefix]peerRoute, error)
	// start (re)starts the daemon; stop kills it (SIGTERM).
	start()
	stop()
	// gracefulRestartActive reports whether the router still holds the
	// speaker's routes as stale (BIRD; gobgpd answers from the RIB).
	gracefulRestartActive() bool
}

type neighbor struct {
	addr     netip.Addr // the speaker's address
	password string
}

func newRouter(t *testing.T, kind, ns string, neighbors ...neighbor) router {
	t.Helper()
	if len(neighbors) == 0 {
		neighbors = []neighbor{{addr: speakerAddr}}
	}
	var r router
	switch kind {
	case "bird":
		r = newBird(t, ns, neighbors)
	case "gobgpd":
		r = newGobgpd(t, ns, neighbors)
	default:
		t.Fatalf("unknown router %q", kind)
	}
	r.start()
	return r
}

// --- BIRD 2 ---------------------------------------------------------------

type bird struct {
	t               *testing.T
	ns, dir, birdc  string
	conf, ctl, pidf string
}

func newBird(t *testing.T, ns string, neighbors []neighbor) *bird {
	requireBinary(t, "bird", "bird2")
	b := &bird{t: t, ns: ns, dir: t.TempDir(), birdc: requireBinary(t, "birdc", "bird2")}
	b.conf, b.ctl, b.pidf = filepath.Join(b.dir, "bird.conf"), filepath.Join(b.dir, "bird.ctl"), filepath.Join(b.dir, "bird.pid")
	var sb strings.Builder
	fmt.Fprintf(&sb, "router id 10.255.0.1;\nlog %q all;\nprotocol device { }\n", filepath.Join(b.dir, "bird.log"))
	sb.WriteString("protocol kernel { ipv6 { export all; }; }\nprotocol kernel { ipv4 { export all; }; }\n")
	for i, n := range neighbors {
		fmt.Fprintf(&sb, "protocol bgp node%d {\n  local %s as 65000;\n  neighbor %s as 65001;\n", i, routerAddr, n.addr)
		if n.password != "" {
			fmt.Fprintf(&sb, "  password %q;\n", n.password)
		}
		sb.WriteString("  graceful restart on;\n  ipv6 { import all; export none; };\n  ipv4 { import all; export none; };\n}\n")
	}
	if err := os.WriteFile(b.conf, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(b.dir, "bird.log"))
			t.Logf("bird log:\n%s", log)
		}
	})
	return b
}

func (b *bird) start() {
	b.t.Helper()
	run(b.t, "ip", "netns", "exec", b.ns, "bird", "-c", b.conf, "-s", b.ctl, "-P", b.pidf)
	if !wait.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		return exec.Command(b.birdc, "-s", b.ctl, "show", "status").Run() == nil
	}) {
		b.t.Fatal("bird: control socket not answering")
	}
}

// stop kills the BIRD this test started (pid from its pid file) and
// waits until it is gone.
func (b *bird) stop() {
	data, err := os.ReadFile(b.pidf)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	wait.Poll(10*time.Second, 20*time.Millisecond, func() bool { return syscall.Kill(pid, 0) != nil })
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = os.Remove(b.pidf)
}

func (b *bird) cli(args ...string) (string, error) {
	out, err := exec.Command(b.birdc, append([]string{"-s", b.ctl}, args...)...).CombinedOutput()
	return string(out), err
}

// routes parses `birdc show route all`:
//
//	Table master6:
//	2001:db8:100::/64    unicast [node0 19:03:01.123] * (100) [AS65001i]
//		via 2001:db8:ffff::2 on r0
//		...
//		BGP.community: (65001,100)
func (b *bird) routes() (map[netip.Prefix]peerRoute, error) {
	out, err := b.cli("show", "route", "all")
	if err != nil {
		return nil, fmt.Errorf("birdc: %v: %s", err, out)
	}
	m := map[netip.Prefix]peerRoute{}
	var cur netip.Prefix
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			p, err := netip.ParsePrefix(f[0])
			if err != nil {
				cur = netip.Prefix{}
				continue
			}
			cur = p
			if !strings.Contains(line, "[node") { // not from BGP
				cur = netip.Prefix{}
				continue
			}
			m[cur] = peerRoute{}
			continue
		}
		if !cur.IsValid() {
			continue
		}
		r := m[cur]
		switch {
		case f[0] == "via" && len(f) > 1:
			r.NextHop, _ = netip.ParseAddr(f[1])
		case f[0] == "BGP.community:":
			for _, c := range f[1:] {
				r.Communities = append(r.Communities, strings.NewReplacer("(", "", ")", "", ",", ":").Replace(c))
			}
		}
		m[cur] = r
	}
	return m, nil
}

func (b *bird) gracefulRestartActive() bool {
	out, _ := b.cli("show", "protocols", "all")
	return strings.Contains(out, "graceful restart active")
}

// --- gobgpd ---------------------------------------------------------------

type gobgpd struct {
	t         *testing.T
	ns, dir   string
	conf      string
	gobgp     string
	cmd       *exec.Cmd
	exited    chan struct{}
	logBuffer *lockedBuffer
}

func newGobgpd(t *testing.T, ns string, neighbors []neighbor) *gobgpd {
	requireBinary(t, "gobgpd", "gobgpd")
	g := &gobgpd{t: t, ns: ns, dir: t.TempDir(), gobgp: requireBinary(t, "gobgp", "gobgpd"), logBuffer: &lockedBuffer{}}
	g.conf = filepath.Join(g.dir, "gobgpd.toml")
	var sb strings.Builder
	sb.WriteString("[global.config]\n  as = 65000\n  router-id = \"10.255.0.1\"\n")
	for _, n := range neighbors {
		fmt.Fprintf(&sb, "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = %q\n    peer-as = 65001\n", n.addr)
		if n.password != "" {
			fmt.Fprintf(&sb, "    auth-password = %q\n", n.password)
		}
		sb.WriteString("  [neighbors.transport.config]\n    passive-mode = true\n")
		sb.WriteString("  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n")
		for _, fam := range []string{"ipv6-unicast", "ipv4-unicast"} {
			fmt.Fprintf(&sb, "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = %q\n", fam)
			sb.WriteString("    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n")
		}
	}
	if err := os.WriteFile(g.conf, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gobgpd log:\n%s", g.logBuffer.String())
		}
	})
	return g
}

func (g *gobgpd) start() {
	g.t.Helper()
	g.cmd = exec.Command("ip", "netns", "exec", g.ns, "gobgpd", "-f", g.conf, "-p",
		"--api-hosts=127.0.0.1:50051", "--pprof-disable")
	g.cmd.Stdout, g.cmd.Stderr = g.logBuffer, g.logBuffer
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(g.cmd, g.exited)
	if !wait.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		return g.cli("neighbor") == nil
	}) {
		g.t.Fatal("gobgpd: API not answering")
	}
}

func (g *gobgpd) cliOut(args ...string) ([]byte, error) {
	return exec.Command("ip", append([]string{"netns", "exec", g.ns, g.gobgp, "-u", "127.0.0.1", "-p", "50051"}, args...)...).CombinedOutput()
}

func (g *gobgpd) cli(args ...string) error {
	_, err := g.cliOut(args...)
	return err
}

// stop kills the gobgpd this test started, by pid.
func (g *gobgpd) stop() {
	if g.cmd == nil || g.cmd.Process == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	g.cmd = nil
}

// routes parses `gobgp -j global rib -a ipv6|ipv4`.
func (g *gobgpd) routes() (map[netip.Prefix]peerRoute, error) {
	m := map[netip.Prefix]peerRoute{}
	for _, fam := range []string{"ipv6", "ipv4"} {
		out, err := g.cliOut("-j", "global", "rib", "-a", fam)
		if err != nil {
			return nil, fmt.Errorf("gobgp global rib -a %s: %v: %s", fam, err, out)
		}
		var rib map[string][]struct {
			Stale bool `json:"stale"`
			Attrs []struct {
				Type        int      `json:"type"`
				NextHop     string   `json:"nexthop"`
				Communities []uint32 `json:"communities"`
			} `json:"attrs"`
		}
		if err := json.Unmarshal(out, &rib); err != nil {
			return nil, fmt.Errorf("gobgp global rib -a %s: %v: %s", fam, err, out)
		}
		for ps, paths := range rib {
			p, err := netip.ParsePrefix(ps)
			if err != nil || len(paths) == 0 {
				continue
			}
			r := peerRoute{Stale: paths[0].Stale}
			for _, a := range paths[0].Attrs {
				if a.NextHop != "" {
					r.NextHop, _ = netip.ParseAddr(a.NextHop)
				}
				for _, c := range a.Communities {
					r.Communities = append(r.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
				}
			}
			m[p] = r
		}
	}
	return m, nil
}

func (g *gobgpd) gracefulRestartActive() bool {
	rs, err := g.routes()
	if err != nil {
		return false
	}
	for _, r := range rs {
		if r.Stale {
			return true
		}
	}
	return false
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// bgpLab is a router netns running BIRD 2 (AS 65000) and a node netns for
// ipamd (AS 65001), joined by a veth pair.
type bgpLab struct {
	router, node         string // netns names
	routerAddr, nodeAddr string
	birdCtl, birdConf    string
	bird                 *exec.Cmd
	birdDone             chan struct{}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newBGPLab(t *testing.T) *bgpLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("BGP tests need root: they create network namespaces and run BIRD")
	}
	for bin, pkg := range map[string]string{"/usr/sbin/bird": "bird2", "/usr/sbin/birdc": "bird2"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s missing (Debian package %s; run scripts/install-deps.sh)", bin, pkg)
		}
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	l := &bgpLab{router: "v6bgpr-" + id, node: "v6bgpn-" + id}
	sub := fmt.Sprintf("2001:db8:fff%s:%s", id[:1], id[1:5])
	// Canonical text: BIRD prints addresses without leading zeros.
	l.routerAddr = netip.MustParseAddr(sub + "::1").String()
	l.nodeAddr = netip.MustParseAddr(sub + "::2").String()
	sh(t, "ip", "netns", "add", l.router)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.router).Run() })
	sh(t, "ip", "netns", "add", l.node)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.node).Run() })
	sh(t, "ip", "link", "add", "v6bgp"+id, "netns", l.router, "type", "veth", "peer", "name", "up0", "netns", l.node)
	sh(t, "ip", "-n", l.router, "link", "set", "v6bgp"+id, "name", "down0")
	for _, c := range [][]string{
		// No DAD on the lab link: servers bind their link-local at once.
		{"ip", "netns", "exec", l.router, "sysctl", "-qw", "net.ipv6.conf.down0.accept_dad=0"},
		{"ip", "netns", "exec", l.node, "sysctl", "-qw", "net.ipv6.conf.up0.accept_dad=0"},
		{"ip", "-n", l.router, "addr", "add", l.routerAddr + "/64", "dev", "down0", "nodad"},
		{"ip", "-n", l.node, "addr", "add", l.nodeAddr + "/64", "dev", "up0", "nodad"},
		{"ip", "-n", l.router, "link", "set", "down0", "up"},
		{"ip", "-n", l.node, "link", "set", "up0", "up"},
		{"ip", "-n", l.router, "link", "set", "lo", "up"},
		{"ip", "-n", l.node, "link", "set", "lo", "up"},
	} {
		sh(t, c...)
	}
	dir := shortDir(t)
	l.birdCtl, l.birdConf = filepath.Join(dir, "bird.ctl"), filepath.Join(dir, "bird.conf")
	conf := fmt.Sprintf(`router id 10.255.0.1;
protocol device { }
protocol bgp node {
  local %s as 65000;
  neighbor %s as 65001;
  graceful restart on;
  ipv6 { import all; export none; };
}
`, l.routerAddr, l.nodeAddr)
	if err := os.WriteFile(l.birdConf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l.startBird(t)
	t.Cleanup(l.stopBird)
	return l
}

func (l *bgpLab) startBird(t *testing.T) {
	t.Helper()
	l.bird = exec.Command("ip", "netns", "exec", l.router, "/usr/sbin/bird", "-f", "-c", l.birdConf, "-s", l.birdCtl)
	if err := l.bird.Start(); err != nil {
		t.Fatal(err)
	}
	l.birdDone = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(l.bird, l.birdDone)
	waitFor(t, 10*time.Second, "bird control socket", func() bool {
		return exec.Command("/usr/sbin/birdc", "-s", l.birdCtl, "show", "status").Run() == nil
	})
}

func (l *bgpLab) stopBird() {
	if l.bird != nil && l.bird.Process != nil {
		l.bird.Process.Signal(syscall.SIGKILL)
		<-l.birdDone
		l.bird = nil
	}
}

// routes is BIRD's table as `birdc show route` prints it.
func (l *bgpLab) routes() string {
	out, _ := exec.Command("/usr/sbin/birdc", "-s", l.birdCtl, "show", "route").CombinedOutput()
	return string(out)
}

// hasRoute reports whether BIRD has prefix via the node.
func (l *bgpLab) hasRoute(prefix string) bool {
	for _, line := range strings.Split(l.routes(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), prefix) {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func (l *bgpLab) config(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ipamd.yaml")
	cfg := fmt.Sprintf(`gcInterval: 1s
blockGrace: 0s
bgp:
  asn: 65001
  routerID: 10.255.0.2
  peers:
    - address: %s
      asn: 65000
  gracefulRestart:
    restartTime: 60
`, l.routerAddr)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBGPAnnouncesBlocks: ipamd announces every block it claims to a real
// BIRD 2 with its own address as next hop, keeps them through a planned
// restart (graceful restart: the route never leaves BIRD's table), withdraws
// a released block, and says STATUS 51 when the peer is gone.
func TestBGPAnnouncesBlocks(t *testing.T) {
	l := newBGPLab(t)
	dir := shortDir(t)
	cfg := l.config(t, dir)
	d := startIpamdIn(t, l.node, dir, "--config", cfg)
	ctx := context.Background()
	cli := ipamapi.NewClient(d.socket)
	req := func(cid string) *ipamapi.Request {
		c := `{"cniVersion":"1.1.0","name":"bgpnet","ipam":{"type":"ipam-v6","bgpCommunities":["65001:100"],"ranges":[[{"subnet":"2001:db8:7e::/48","blockSize":126}]]}}`
		return &ipamapi.Request{Network: "bgpnet", ContainerID: cid, IfName: "eth0", Config: []byte(c)}
	}
	// /126 blocks hold two containers: three ADDs claim two blocks.
	claimed := time.Now()
	for _, cid := range []string{"c1", "c2", "c3"} {
		if _, err := cli.Add(ctx, req(cid)); err != nil {
			t.Fatal(err)
		}
	}
	took := waitFor(t, 30*time.Second, "blocks at BIRD", func() bool {
		return l.hasRoute("2001:db8:7e::/126") && l.hasRoute("2001:db8:7e::4/126")
	})
	t.Logf("block claim → route at BIRD: %v", time.Since(claimed).Round(time.Millisecond))
	_ = took
	if r := l.routes(); !strings.Contains(r, "via "+l.nodeAddr) {
		t.Errorf("BIRD's routes do not go via the node %s:\n%s", l.nodeAddr, r)
	}
	all, _ := exec.Command("/usr/sbin/birdc", "-s", l.birdCtl, "show", "route", "all").CombinedOutput()
	if !strings.Contains(string(all), "(65001,100)") {
		t.Errorf("the network's bgpCommunities are not on BIRD's routes:\n%s", all)
	}
	var out, errOut bytes.Buffer
	if err := run([]string{"bgp", "--socket", d.socket}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "established") || !strings.Contains(out.String(), "2001:db8:7e::4/126") {
		t.Errorf("ipamd bgp:\n%s", out.String())
	}
	if err := cli.Status(ctx, req("")); err != nil {
		t.Errorf("STATUS with the peer up: %v", err)
	}

	// Planned restart: poll BIRD throughout; the route must never go.
	var missing, polls atomic.Int32
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			polls.Add(1)
			if !l.hasRoute("2001:db8:7e::/126") {
				missing.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	d.stop(t)
	d = startIpamdIn(t, l.node, dir, "--config", cfg)
	cli = ipamapi.NewClient(d.socket)
	waitFor(t, 30*time.Second, "session back after restart", func() bool {
		st, err := cli.BGP(ctx)
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Established
	})
	time.Sleep(500 * time.Millisecond)
	close(stopPoll)
	<-pollDone
	if missing.Load() > 0 {
		t.Errorf("route missing at BIRD in %d of %d polls during a planned restart", missing.Load(), polls.Load())
	}
	t.Logf("planned restart: route present in all %d polls", polls.Load())

	// Release: the emptied second block goes back to the pool and is withdrawn.
	if err := cli.Del(ctx, req("c3")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "withdrawal of the released block", func() bool {
		return !l.hasRoute("2001:db8:7e::4/126")
	})
	if !l.hasRoute("2001:db8:7e::/126") {
		t.Error("the block still in use was withdrawn")
	}

	// Peer gone: STATUS 51.
	l.stopBird()
	waitFor(t, 30*time.Second, "STATUS 51 with the peer gone", func() bool {
		err := cli.Status(ctx, req(""))
		var te *types.Error
		return errors.As(err, &te) && te.Code == types.ErrLimitedConnectivity
	})
}

// TestBGPPasswordNeverShown: a TCP-MD5 password from the config file, a
// password file or the environment shows up in no log line and no CLI
// output, also while the session fails (here the router has no password:
// the session stays down).
func TestBGPPasswordNeverShown(t *testing.T) {
	const secret = "v6cni-s3cret-md5-key"
	for _, source := range []string{"password", "passwordFile", "passwordEnv"} {
		t.Run(source, func(t *testing.T) {
			l := newBGPLab(t)
			dir := shortDir(t)
			value := secret
			switch source {
			case "passwordFile":
				value = filepath.Join(dir, "bgp-password")
				if err := os.WriteFile(value, []byte(secret+"\n"), 0o400); err != nil {
					t.Fatal(err)
				}
			case "passwordEnv":
				value = "V6CNI_TEST_BGP_PASSWORD"
				t.Setenv(value, secret) // inherited by the ipamd process
			}
			cfg := filepath.Join(dir, "ipamd.yaml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`bgp:
  asn: 65001
  routerID: 10.255.0.2
  peers:
    - address: %s
      asn: 65000
      %s: %s
`, l.routerAddr, source, value)), 0o600); err != nil {
				t.Fatal(err)
			}
			d := startIpamdIn(t, l.node, dir, "--config", cfg, "--log-format", "json")
			var out, errOut bytes.Buffer
			time.Sleep(2 * time.Second) // let the session try and fail
			for _, args := range [][]string{{"bgp"}, {"bgp", "-o", "json"}, {"status", "-o", "json"}} {
				if err := run(append(args, "--socket", d.socket), &out, &errOut); err != nil {
					t.Fatalf("ipamd %v: %v", args, err)
				}
			}
			if !strings.Contains(out.String(), l.routerAddr) {
				t.Errorf("ipamd bgp does not list the peer:\n%s", out.String())
			}
			d.stop(t) // its log is complete (and no longer written) after this
			for what, text := range map[string]string{"CLI output": out.String() + errOut.String(), "ipamd log": d.log.String()} {
				if strings.Contains(text, secret) {
					t.Errorf("the BGP password appears in the %s", what)
				}
			}
		})
	}
}

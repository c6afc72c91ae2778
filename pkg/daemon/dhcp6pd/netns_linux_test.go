package dhcp6pd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// topo is a router netns and a node netns joined by a veth pair: the
// delegating server runs on routerIf, the client on nodeIf.
type topo struct {
	router, node string
}

const (
	routerIf = "pdr0"
	nodeIf   = "pdn0"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run go test as root")
	}
}

func requireBinary(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return filepath.Join(dir, name)
			}
		}
		t.Fatalf("%s not found: install the Debian package %s (scripts/install-deps.sh)", name, pkg)
	}
	return p
}

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTopo builds the two namespaces. With dad, the node's link-local
// address goes through DAD (it is tentative for a second or two after
// newTopo returns); without, it is usable at once.
func newTopo(t *testing.T, dad ...bool) *topo {
	t.Helper()
	requireRoot(t)
	var id [4]byte
	rand.Read(id[:])
	tp := &topo{router: "pdr-" + hex.EncodeToString(id[:]), node: "pdn-" + hex.EncodeToString(id[:])}
	for _, ns := range []string{tp.router, tp.node} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", tp.router, "link", "add", routerIf, "type", "veth", "peer", "name", nodeIf, "netns", tp.node)
	// No DAD on the test link: the client can bind its link-local at once.
	run(t, "ip", "netns", "exec", tp.router, "sysctl", "-qw", "net.ipv6.conf."+routerIf+".accept_dad=0")
	nodeDAD := "0"
	if len(dad) > 0 && dad[0] {
		nodeDAD = "1"
	}
	run(t, "ip", "netns", "exec", tp.node, "sysctl", "-qw", "net.ipv6.conf."+nodeIf+".accept_dad="+nodeDAD)
	// dhcpd needs a global address inside a declared subnet6.
	run(t, "ip", "-n", tp.router, "addr", "add", "2001:db8:ffff::1/64", "dev", routerIf, "nodad")
	for _, l := range [][2]string{{tp.router, routerIf}, {tp.router, "lo"}, {tp.node, nodeIf}, {tp.node, "lo"}} {
		run(t, "ip", "-n", l[0], "link", "set", l[1], "up")
	}
	return tp
}

// runClient runs c.Run in the node netns (on a locked thread that dies with
// the goroutine) until the test ends.
func (tp *topo) runClient(t *testing.T, c *Client) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is in another netns
		f, err := os.Open("/var/run/netns/" + tp.node)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", tp.node, err)
			return
		}
		errc <- c.Run(ctx)
	}()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-errc:
			case <-time.After(10 * time.Second):
				runErr = fmt.Errorf("Run did not return 10 s after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return stop
}

// server is a DHCPv6 server process in the router netns.
type server struct {
	name string
	dir  string
	args []string
	env  []string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func (s *server) start(t *testing.T, tp *topo) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", tp.router}, s.args...)...) // ip execs the server: same pid
	cmd.Env = append(os.Environ(), s.env...)
	if s.log == nil {
		f, err := os.Create(filepath.Join(s.dir, s.name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		s.log = f
		t.Cleanup(func() { f.Close() })
	}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.name, err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)
	t.Cleanup(func() { s.stop(t) })
	// Ready when port 547 is bound in the router netns.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "exec", tp.router, "ss", "-Hlun", "sport", "=", ":547").Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			return
		}
		select {
		case <-s.done:
			t.Fatalf("%s exited at start:\n%s", s.name, s.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on 547 after 10 s:\n%s", s.name, s.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop terminates the server by its pid and waits (bounded) for it.
func (s *server) stop(t *testing.T) {
	if s.cmd == nil {
		return
	}
	start := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
	t.Logf("%s stopped in %v", s.name, time.Since(start))
}

func (s *server) logText() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, s.name+".log"))
	return string(b)
}

type keaConfig struct {
	serverID        string // hex identifier of a DUID-EN
	pool            string // prefix of the pd-pool
	poolLen, delLen int
	rapid           bool
	preferred       int // seconds; 0: 4
	valid           int // seconds; 0: 6
}

func newKea(t *testing.T, dir string, kc keaConfig) *server {
	t.Helper()
	bin := requireBinary(t, "kea-dhcp6", "kea-dhcp6-server")
	if kc.preferred == 0 {
		kc.preferred, kc.valid = 4, 6
	}
	conf := fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": [%q]},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": %q, "persist": false},
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "renew-timer": 2, "rebind-timer": 3, "preferred-lifetime": %d, "valid-lifetime": %d,
  "subnet6": [{"id": 1, "subnet": "2001:db8:ffff::/64", "interface": %q, "rapid-commit": %v,
    "pd-pools": [{"prefix": %q, "prefix-len": %d, "delegated-len": %d}]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
}}`, routerIf, kc.serverID, dir, filepath.Join(dir, "leases6.csv"), kc.preferred, kc.valid, routerIf, kc.rapid, kc.pool, kc.poolLen, kc.delLen)
	path := filepath.Join(dir, "kea-dhcp6.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return &server{name: "kea-dhcp6", dir: dir, args: []string{bin, "-c", path},
		env: []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}}
}

// newDhcpd configures dhcpd with T1 2 s, T2 3 s and the given lifetimes
// (in seconds).
func newDhcpd(t *testing.T, dir string, rapid bool, preferred, valid int, extra ...string) *server {
	t.Helper()
	bin := requireBinary(t, "dhcpd", "isc-dhcp-server")
	rc := ""
	if rapid {
		rc = "option dhcp6.rapid-commit;"
	}
	conf := fmt.Sprintf(`default-lease-time %d;
max-lease-time %d;
preferred-lifetime %d;
option dhcp-renewal-time 2;
option dhcp-rebinding-time 3;
prefix-length-mode prefer;
%s
subnet6 2001:db8:ffff::/64 {
  prefix6 2001:db8:300:: 2001:db8:300:ffff:: /64;
  prefix6 2001:db8:400:: 2001:db8:400:ff00:: /56;
}
`, valid, valid, preferred, rc+"\n"+strings.Join(extra, "\n"))
	path := filepath.Join(dir, "dhcpd6.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	leases := filepath.Join(dir, "dhcpd6.leases")
	if err := os.WriteFile(leases, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return &server{name: "dhcpd", dir: dir, args: []string{bin, "-6", "-f", "-d", "-cf", path, "-lf", leases, "-pf", filepath.Join(dir, "dhcpd6.pid"), routerIf}}
}

// recorder keeps every binding OnChange reported.
type recorder struct {
	mu  sync.Mutex
	all []Binding
}

func (r *recorder) onChange(b Binding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, b)
}

func (r *recorder) last() (Binding, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.all) == 0 {
		return Binding{}, 0
	}
	return r.all[len(r.all)-1], len(r.all)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

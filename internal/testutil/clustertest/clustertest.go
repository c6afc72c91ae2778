// Package clustertest runs a small v6cni cluster for tests: an N-member
// etcd cluster of Debian's etcd-server (/usr/bin/etcd) on loopback ports,
// and N real ipamd processes (the binary built once per test binary run)
// using it, each member and each ipamd stoppable, startable and killable
// with SIGKILL. With Options.PD, a delegating DHCPv6 server (Debian's Kea)
// runs in its own network namespace and every ipamd gets an uplink to it
// (--pd-interface), so pd-ipam networks work (pd.go). Check reads the whole
// key space at one revision and returns every broken invariant
// (store.Check). It is for tests only: the model test and the
// fault-injection scenarios share it.
//
// Every process is started by the test and killed by pid when it ends;
// logs are kept in a temporary directory and their tails printed when the
// test failed.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// EtcdBin is Debian's etcd-server (scripts/install-deps.sh installs it).
const EtcdBin = "/usr/bin/etcd"

// Options size a cluster. Zero values take the defaults.
type Options struct {
	// Members is the number of etcd members (default 3).
	Members int
	// Nodes is the number of ipamd processes (default 3), named node-0...
	Nodes int
	// IpamdArgs are extra flags of every `ipamd serve`.
	IpamdArgs []string
	// PD, if set, starts a delegating DHCPv6 server (PDServer) and gives
	// every ipamd an uplink to it (--pd-interface): pd-ipam networks work.
	PD *PDOptions
}

// Cluster is a running etcd cluster and the ipamds using it.
type Cluster struct {
	t       testing.TB
	dir     string
	Members []*Member
	Nodes   []*Node
	// Etcd is a client of all members, for reading the key space.
	Etcd *clientv3.Client
	// PD is the delegating DHCPv6 server (Options.PD), or nil.
	PD *PDServer
}

// Start starts the etcd members and then the ipamds, waits until each
// ipamd answers its health check, and stops everything when the test ends.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Members == 0 {
		o.Members = 3
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if _, err := os.Stat(EtcdBin); err != nil {
		t.Fatalf("%s missing (Debian package etcd-server; run scripts/install-deps.sh as root): %v", EtcdBin, err)
	}
	bin := IpamdBinary(t)
	// Not t.TempDir(): unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "ct-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, dir: dir}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.Kill()
			if t.Failed() {
				t.Logf("ipamd %s log (tail):\n%s", n.Name, tailFile(n.logPath, 4000))
			}
		}
		if c.Etcd != nil {
			c.Etcd.Close()
		}
		for _, m := range c.Members {
			m.Kill()
			if t.Failed() {
				t.Logf("etcd %s log (tail):\n%s", m.Name, tailFile(m.logPath, 2000))
			}
		}
		os.RemoveAll(dir)
	})

	ports := freePorts(t, 2*o.Members)
	var initial []string
	for i := range o.Members {
		name := fmt.Sprintf("m%d", i)
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		initial = append(initial, name+"="+peer)
		c.Members = append(c.Members, &Member{Name: name, ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])})
	}
	for i, m := range c.Members {
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		m.logPath = filepath.Join(dir, m.Name+".log")
		m.args = []string{
			"--name", m.Name, "--data-dir", filepath.Join(dir, m.Name),
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "v6cni-ct-" + filepath.Base(dir),
			// Fast elections: a stopped leader is replaced in about a second.
			"--heartbeat-interval", "100", "--election-timeout", "1000",
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
	}
	c.Etcd, err = clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(c.Endpoints(), ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	// Wait for a leader: a linearizable read succeeds.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Etcd.Get(ctx, "health")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster not serving after 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if o.PD != nil {
		c.PD = StartPDServer(t, dir, *o.PD)
	}
	for i := range o.Nodes {
		n := &Node{
			Name:    fmt.Sprintf("node-%d", i),
			bin:     bin,
			Socket:  filepath.Join(dir, fmt.Sprintf("n%d.sock", i)),
			logPath: filepath.Join(dir, fmt.Sprintf("node-%d.log", i)),
		}
		n.args = append([]string{"serve", "--node-name", n.Name, "--socket", n.Socket,
			"--data-dir", filepath.Join(dir, fmt.Sprintf("n%d-data", i)),
			"--etcd-endpoints", c.Endpoints()}, o.IpamdArgs...)
		if c.PD != nil {
			if n.PDInterface, err = c.PD.Uplink(); err != nil {
				t.Fatal(err)
			}
			n.args = append(n.args, "--pd-interface", n.PDInterface, "--pd-prefix-length", strconv.Itoa(c.PD.DelegatedLen))
		}
		n.Client = ipamapi.NewClient(n.Socket)
		c.Nodes = append(c.Nodes, n)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Endpoints are the client URLs of all members, comma-separated, as
// ipamd's --etcd-endpoints takes them.
func (c *Cluster) Endpoints() string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return strings.Join(eps, ",")
}

// Check reads the key space at one revision and returns its broken
// invariants (none when consistent) and the snapshot they were found in.
func (c *Cluster) Check(ctx context.Context) ([]store.Problem, *store.Snapshot, error) {
	snap, err := store.New(c.Etcd).Snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	return store.Check(snap), snap, nil
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	args      []string
	logPath   string
	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{}
}

// Start starts the member (again) on its data dir; it does not wait for it
// to join.
func (m *Member) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("etcd %s already running", m.Name)
	}
	cmd, done, err := startLogged(EtcdBin, m.args, m.logPath)
	if err != nil {
		return fmt.Errorf("start etcd %s: %w", m.Name, err)
	}
	m.cmd, m.done = cmd, done
	return nil
}

// Stop stops the member with SIGTERM (SIGKILL after 10 s).
func (m *Member) Stop() { m.signal(syscall.SIGTERM) }

// Kill stops the member with SIGKILL.
func (m *Member) Kill() { m.signal(syscall.SIGKILL) }

// Running reports whether the member's process is running.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

func (m *Member) signal(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	stopProc(m.cmd, m.done, sig)
	m.cmd = nil
}

// Node is one ipamd process.
type Node struct {
	// Name is the --node-name.
	Name   string
	Socket string
	// Client talks to this ipamd's socket.
	Client *ipamapi.Client
	// PDInterface is the uplink of its DHCPv6-PD client ("" without PD).
	PDInterface string
	bin         string
	args        []string
	logPath     string
	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
}

// Start starts ipamd (again) and waits up to 60 s until it answers its
// health check and, with a PD uplink, until its PD client holds a prefix
// (at once after a restart: the binding is restored from etcd).
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("ipamd %s already running", n.Name)
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "---- ipamd serve started at %s\n", time.Now().Format(time.RFC3339Nano))
	f.Close()
	cmd, done, err := startLogged(n.bin, n.args, n.logPath)
	if err != nil {
		return fmt.Errorf("start ipamd %s: %w", n.Name, err)
	}
	n.cmd, n.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.Client.Health(ctx)
		cancel()
		if err == nil && n.PDInterface == "" {
			return nil
		}
		if err == nil {
			_, err := n.waitPrefix(time.Until(deadline))
			return err
		}
		select {
		case <-done:
			n.cmd = nil
			return fmt.Errorf("ipamd %s exited while starting (log %s): %s", n.Name, n.logPath, tailFile(n.logPath, 2000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ipamd %s not ready after 60s: %v", n.Name, err)
		}
	}
}

// Stop stops ipamd with SIGTERM (SIGKILL after 10 s, then an error).
func (n *Node) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	clean := stopProc(n.cmd, n.done, syscall.SIGTERM)
	n.cmd = nil
	if !clean {
		return fmt.Errorf("ipamd %s did not exit within 10s of SIGTERM: killed", n.Name)
	}
	return nil
}

// Kill stops ipamd with SIGKILL: no cleanup of any kind.
func (n *Node) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	stopProc(n.cmd, n.done, syscall.SIGKILL)
	n.cmd = nil
}

// Restart is Stop then Start.
func (n *Node) Restart() error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start()
}

// Running reports whether ipamd's process is running.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// LogPath is the file ipamd's stdout and stderr go to.
func (n *Node) LogPath() string { return n.logPath }

func startLogged(bin string, args []string, logPath string) (*exec.Cmd, chan struct{}, error) {
	return startLoggedEnv(bin, args, logPath)
}

// startLoggedEnv starts bin with env added to the test's environment, its
// output appended to logPath.
func startLoggedEnv(bin string, args []string, logPath string, env ...string) (*exec.Cmd, chan struct{}, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	// Killed with the test binary even when a test panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	return cmd, done, nil
}

// stopProc signals cmd (by pid) and waits for it; SIGKILL after 10 s. It
// reports whether the process exited by itself after sig.
func stopProc(cmd *exec.Cmd, done chan struct{}, sig syscall.Signal) bool {
	if cmd == nil {
		return true
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = cmd.Process.Kill()
	}
	select {
	case <-done:
		return true
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// IpamdBinary builds ipamd once per test binary run and returns its path.
func IpamdBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ct-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "ipamd")
		_, self, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(self), "..", "..", "..")
		cmd := exec.Command("go", "build", "-o", buildBin, "./ipamd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./ipamd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// RemoveBinaries removes what IpamdBinary built; a package's TestMain
// calls it after m.Run, since no single test knows it is the last user.
func RemoveBinaries() {
	if buildBin != "" {
		os.RemoveAll(filepath.Dir(buildBin))
	}
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

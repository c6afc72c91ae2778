package clustertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// KeaBin is Debian's Kea DHCPv6 server (package kea-dhcp6-server;
// scripts/install-deps.sh installs it).
const KeaBin = "/usr/sbin/kea-dhcp6"

// PDOptions give every ipamd of a cluster a DHCPv6-PD uplink (--pd-interface)
// served by a real delegating DHCPv6 server (PDServer). Zero values take the
// defaults.
type PDOptions struct {
	// Pool is the prefix the server delegates from (default
	// 2001:db8:c000::/40).
	Pool netip.Prefix
	// DelegatedLen is the length of the prefix each node gets (default 56:
	// pd-ipam subnet IDs 0..255).
	DelegatedLen int
	// Renew and Rebind are the server's T1 and T2, Preferred and Valid the
	// lifetimes, in seconds (defaults 10, 16, 600, 900: renewals happen
	// during a test, expiry does not).
	Renew, Rebind, Preferred, Valid int
}

func (o *PDOptions) defaults() {
	if !o.Pool.IsValid() {
		o.Pool = netip.MustParsePrefix("2001:db8:c000::/40")
	}
	if o.DelegatedLen == 0 {
		o.DelegatedLen = 56
	}
	if o.Renew == 0 {
		o.Renew, o.Rebind = 10, 16
	}
	if o.Preferred == 0 {
		o.Preferred, o.Valid = 600, 900
	}
}

// PDServer is a delegating DHCPv6 server (Kea) in its own network namespace,
// on a bridge with one veth per uplink; the other end of each veth is in
// the host namespace, where the ipamds run. It can be stopped and started
// again (its leases persist in its directory).
type PDServer struct {
	// Netns is the server's network namespace.
	Netns string
	// Pool and DelegatedLen are what it delegates.
	Pool         netip.Prefix
	DelegatedLen int

	dir     string
	conf    string
	logPath string
	uplinks int
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
}

// bridgeIf is the server's interface in its namespace: a bridge joining
// the uplinks, so one subnet and one pool serve all nodes.
const bridgeIf = "br0"

// StartPDServer creates the server's namespace and bridge and starts Kea
// on it with o's pool and timers; Uplink adds a node's link to it. Torn
// down (Kea killed by pid, the namespace and its veths deleted) when the
// test ends; Kea's log tail is printed when the test failed.
func StartPDServer(t testing.TB, dir string, o PDOptions) *PDServer {
	t.Helper()
	o.defaults()
	if _, err := os.Stat(KeaBin); err != nil {
		t.Fatalf("%s missing (Debian package kea-dhcp6-server; run scripts/install-deps.sh as root): %v", KeaBin, err)
	}
	id := make([]byte, 4)
	rand.Read(id)
	s := &PDServer{
		Netns: "ctpd-" + hex.EncodeToString(id), Pool: o.Pool, DelegatedLen: o.DelegatedLen,
		dir: filepath.Join(dir, "kea"),
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.conf, s.logPath = filepath.Join(s.dir, "kea-dhcp6.conf"), filepath.Join(s.dir, "kea.log")
	if err := run("ip", "netns", "add", s.Netns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("kea-dhcp6 log (tail):\n%s", tailFile(s.logPath, 3000))
		}
		// Deleting the namespace deletes the veths (both ends).
		exec.Command("ip", "netns", "del", s.Netns).Run()
	})
	for _, c := range [][]string{
		{"ip", "-n", s.Netns, "link", "add", bridgeIf, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"},
		{"ip", "netns", "exec", s.Netns, "sysctl", "-qw", "net.ipv6.conf." + bridgeIf + ".accept_dad=0"},
		// Kea wants an address in the subnet it serves on the interface.
		{"ip", "-n", s.Netns, "addr", "add", "2001:db8:ffff::1/64", "dev", bridgeIf, "nodad"},
		{"ip", "-n", s.Netns, "link", "set", "lo", "up"},
		{"ip", "-n", s.Netns, "link", "set", bridgeIf, "up"},
	} {
		if err := run(c...); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": [%q]},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "0c1a5e7e", "persist": false},
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "renew-timer": %d, "rebind-timer": %d, "preferred-lifetime": %d, "valid-lifetime": %d,
  "subnet6": [{"id": 1, "subnet": "2001:db8:ffff::/64", "interface": %q, "rapid-commit": true,
    "pd-pools": [{"prefix": %q, "prefix-len": %d, "delegated-len": %d}]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
}}`, bridgeIf, s.dir, filepath.Join(s.dir, "leases6.csv"), o.Renew, o.Rebind, o.Preferred, o.Valid,
		bridgeIf, o.Pool.Addr(), o.Pool.Bits(), o.DelegatedLen)
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Uplink creates a veth from the host namespace to the server's bridge and
// returns the name of its host end, for --pd-interface. The host end has
// only its link-local address (no DAD, no router advertisements taken).
func (s *PDServer) Uplink() (string, error) {
	s.mu.Lock()
	i := s.uplinks
	s.uplinks++
	s.mu.Unlock()
	// 15 bytes at most: "ctpd" + 8 hex digits + the index.
	host := fmt.Sprintf("ctpd%s%d", strings.TrimPrefix(s.Netns, "ctpd-"), i)
	peer := fmt.Sprintf("up%d", i)
	for _, c := range [][]string{
		{"ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", s.Netns},
		{"sysctl", "-qw", "net.ipv6.conf." + host + ".accept_dad=0"},
		{"sysctl", "-qw", "net.ipv6.conf." + host + ".accept_ra=0"},
		{"ip", "-n", s.Netns, "link", "set", peer, "master", bridgeIf},
		{"ip", "-n", s.Netns, "link", "set", peer, "up"},
		{"ip", "link", "set", host, "up"},
	} {
		if err := run(c...); err != nil {
			return "", err
		}
	}
	return host, nil
}

// Start starts Kea (again) and waits until it listens on port 547.
func (s *PDServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("kea-dhcp6 already running")
	}
	// ip execs Kea: the pid is Kea's.
	cmd, done, err := startLoggedEnv("ip", []string{"netns", "exec", s.Netns, KeaBin, "-c", s.conf}, s.logPath,
		"KEA_PIDFILE_DIR="+s.dir, "KEA_LOCKFILE_DIR="+s.dir)
	if err != nil {
		return fmt.Errorf("start kea-dhcp6: %w", err)
	}
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "exec", s.Netns, "ss", "-Hlun", "sport", "=", ":547").Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("kea-dhcp6 exited at start: %s", tailFile(s.logPath, 2000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kea-dhcp6 does not listen on port 547 after 20s: %s", tailFile(s.logPath, 2000))
		}
	}
}

// Stop stops Kea with SIGTERM (SIGKILL after 10 s).
func (s *PDServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	stopProc(s.cmd, s.done, syscall.SIGTERM)
	s.cmd = nil
}

// Running reports whether Kea's process is running.
func (s *PDServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// waitPrefix waits until ipamd's PD client holds a prefix (restored from
// the binding in etcd, or obtained from the server) and returns it.
func (n *Node) waitPrefix(within time.Duration) (netip.Prefix, error) {
	deadline := time.Now().Add(within)
	for {
		p, err := n.DelegatedPrefix(context.Background())
		if err == nil {
			return p, nil
		}
		if time.Now().After(deadline) {
			return netip.Prefix{}, fmt.Errorf("ipamd %s: no delegated prefix on %s after %v: %w", n.Name, n.PDInterface, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DelegatedPrefix is the one prefix ipamd's PD client holds now (`ipamd
// pd`); an error when it holds none or several.
func (n *Node) DelegatedPrefix(ctx context.Context) (netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := n.Client.PD(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	if len(st.Prefixes) != 1 {
		return netip.Prefix{}, fmt.Errorf("ipamd %s holds %d delegated prefixes %v, want 1", n.Name, len(st.Prefixes), st.Prefixes)
	}
	return netip.ParsePrefix(st.Prefixes[0].Prefix)
}

// StoredPrefixes are the prefixes of n's PD binding as stored in etcd: the
// record a restarted ipamd restores and renews.
func (c *Cluster) StoredPrefixes(ctx context.Context, n *Node) ([]netip.Prefix, error) {
	raw, err := store.New(c.Etcd).LoadPD(ctx, n.Name, dhcp6pd.IAIDFromName(n.PDInterface))
	if err != nil || raw == nil {
		return nil, err
	}
	var b dhcp6pd.Binding
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("decode the stored PD binding of %s: %w", n.Name, err)
	}
	var out []netip.Prefix
	for _, p := range b.Prefixes {
		out = append(out, p.Prefix)
	}
	return out, nil
}

func run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

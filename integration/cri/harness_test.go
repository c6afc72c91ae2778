package cri

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/critest"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// testCtx is the context of one command of a test; not t.Context(), which
// is cancelled before the cleanups (which remove pods) run.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ipamd is one ipamd (embedded etcd) a test started.
type ipamd struct {
	dir, socket, dataDir, logPath, node string
	cmd                                 *exec.Cmd
	done                                chan error
}

// startIpamd starts ipamd in a fresh data dir and stops it (by pid) when
// the test ends, printing its log if the test failed.
func startIpamd(t *testing.T) *ipamd {
	t.Helper()
	dir, err := os.MkdirTemp("", "v6cri-d-")
	if err != nil {
		t.Fatal(err)
	}
	d := &ipamd{
		dir:     dir,
		socket:  filepath.Join(dir, "ipamd.sock"),
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "ipamd.log"),
		node:    "node-" + randomHex(t, 3),
	}
	t.Cleanup(func() {
		if err := d.terminate(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			log, _ := os.ReadFile(d.logPath)
			t.Logf("ipamd log (%s):\n%s", d.logPath, log)
		}
		os.RemoveAll(d.dir)
	})
	d.start(t)
	return d
}

func (d *ipamd) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(binDir, "ipamd"), "serve", "--node-name", d.node, "--socket", d.socket, "--data-dir", d.dataDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ipamd: %v", err)
	}
	d.cmd = cmd
	d.done = make(chan error, 1)
	go func() { d.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			if err := exec.Command(filepath.Join(binDir, "ipamd"), "state", "--socket", d.socket).Run(); err == nil {
				return
			}
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("ipamd exited while starting: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipamd not ready on %s after 30s", d.socket)
		}
	}
}

// terminate stops ipamd (SIGTERM by pid, SIGKILL after 15s).
func (d *ipamd) terminate() error {
	if d.cmd == nil {
		return nil
	}
	cmd := d.cmd
	d.cmd = nil
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM ipamd pid %d: %v", cmd.Process.Pid, err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			return fmt.Errorf("ipamd pid %d did not exit cleanly on SIGTERM: %v", cmd.Process.Pid, err)
		}
		return nil
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("ipamd pid %d still running 15s after SIGTERM: killed", cmd.Process.Pid)
	}
}

// kill kills ipamd with SIGKILL, as a crash.
func (d *ipamd) kill() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	d.cmd = nil
}

// gc runs `ipamd gc` (grace 0): ipamd releases this node's attachments
// whose netns is gone, the reclaim that stands in for CNI GC, which
// containerd never calls.
func (d *ipamd) gc(t *testing.T) {
	t.Helper()
	out, err := exec.CommandContext(testCtx(t), filepath.Join(binDir, "ipamd"), "gc", "--socket", d.socket, "--grace", "0s").CombinedOutput()
	if err != nil {
		t.Fatalf("ipamd gc: %v\n%s", err, out)
	}
}

// lease is one address ipamd holds.
type lease struct {
	Network     string
	Addr        netip.Addr
	ContainerID string
}

// leases returns every address in ipamd's state, sorted.
func (d *ipamd) leases(t *testing.T) []lease {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t), filepath.Join(binDir, "ipamd"), "state", "--socket", d.socket, "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ipamd state: %v: %s", err, stderr.String())
	}
	var st ipamapi.State
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("ipamd state: %v\n%s", err, out)
	}
	var ls []lease
	for _, n := range st.Networks {
		for _, b := range n.Blocks {
			for _, a := range b.Addrs {
				s, _, _ := strings.Cut(a.Addr, "/")
				addr, err := netip.ParseAddr(s)
				if err != nil {
					t.Fatalf("ipamd state: address %q: %v", a.Addr, err)
				}
				ls = append(ls, lease{Network: n.Network, Addr: addr, ContainerID: a.ContainerID})
			}
		}
	}
	slices.SortFunc(ls, func(a, b lease) int { return a.Addr.Compare(b.Addr) })
	return ls
}

// leasesOf returns the addresses ipamd holds for one pod, sorted.
func (d *ipamd) leasesOf(t *testing.T, id string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, l := range d.leases(t) {
		if l.ContainerID == id {
			out = append(out, l.Addr)
		}
	}
	return out
}

// network is a test's CNI network: a unique bridge, its subnets.
type network struct {
	name    string
	bridge  string
	subnets []string // one ranges set each
	sticky  bool     // ipam-v6 "sticky": a pod's addresses follow K8S_POD_NAME
}

// newNetwork names a network and its bridge uniquely (the bridge lives in
// containerd's own netns and goes with it).
func newNetwork(t *testing.T, subnets ...string) *network {
	t.Helper()
	return &network{name: "cri-" + randomHex(t, 3), bridge: "v6cri" + randomHex(t, 3), subnets: subnets}
}

// conflist is the network's bridge-v6 + ipam-v6 conflist at cniVersion 1.1.0
// (libcni calls STATUS from 1.1.0 on).
func (n *network) conflist(t *testing.T, socket string) []byte {
	t.Helper()
	var ranges []any
	for _, s := range n.subnets {
		// A /64 (IPv6) or /24 (IPv4) per node; a smaller subnet is one block.
		p := netip.MustParsePrefix(s)
		block := max(64, p.Bits())
		if p.Addr().Is4() {
			block = max(24, p.Bits())
		}
		ranges = append(ranges, []any{map[string]any{"subnet": s, "blockSize": block}})
	}
	ipam := map[string]any{"type": "ipam-v6", "socket": socket, "ranges": ranges}
	if n.sticky {
		ipam["sticky"] = true
	}
	b, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0",
		"name":       n.name,
		"plugins": []any{map[string]any{
			"type":             "bridge-v6",
			"bridge":           n.bridge,
			"isGateway":        true,
			"isDefaultGateway": true,
			"ipam":             ipam,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startContainerd starts a containerd whose CNI network is conflist, with
// v6cni's plugins and Debian's reference plugins, in a network namespace of
// its own: the bridge and the pods' veths never touch the host's.
func startContainerd(t *testing.T, conflist []byte) *critest.Containerd {
	t.Helper()
	return critest.Start(t, critest.Options{
		Netns:        critest.NewNetns(t),
		CNIBinDirs:   []string{binDir, "/usr/lib/cni"},
		ConfList:     conflist,
		PauseArchive: pauseArchive,
	})
}

// podAddrs returns a pod's addresses as crictl inspectp shows them, sorted.
func podAddrs(t *testing.T, c *critest.Containerd, id string) []netip.Addr {
	t.Helper()
	p, err := c.InspectPod(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, s := range p.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			t.Fatalf("pod %s: address %q: %v", id, s, err)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// ping pings dst once from inside a pod's network namespace (pause has no
// shell: nsenter on the pod's netns).
func ping(t *testing.T, c *critest.Containerd, id string, dst netip.Addr) {
	t.Helper()
	p, err := c.InspectPod(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Netns == "" {
		t.Fatalf("pod %s: no network namespace in crictl inspectp", id)
	}
	// A few tries: IPv6 DAD on a fresh veth may hold the address briefly.
	var out []byte
	for range 10 {
		out, err = exec.CommandContext(testCtx(t), "nsenter", "--net="+p.Netns, "ping", "-c", "1", "-W", "2", dst.String()).CombinedOutput()
		if err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("ping %s from pod %s: %v\n%s", dst, id, err, out)
}

// waitNetworkReady polls the runtime's NetworkReady until it is want,
// returning the last condition; containerd may cache the status a few
// seconds, so the timeout is generous.
func waitNetworkReady(t *testing.T, c *critest.Containerd, want bool) critest.Condition {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cond, err := c.NetworkReady(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if cond.Status == want {
			return cond
		}
		if time.Now().After(deadline) {
			t.Fatalf("NetworkReady is %v after 60s, want %v: %s: %s", cond.Status, want, cond.Reason, cond.Message)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// cniVersions are the spec versions every test runs with (CHECK exists from
// 0.4.0 on).
var cniVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// forEachVersion runs f as one subtest per CNI spec version.
func forEachVersion(t *testing.T, f func(t *testing.T, ver string)) {
	t.Helper()
	for _, ver := range cniVersions {
		t.Run("cniVersion="+ver, func(t *testing.T) { f(t, ver) })
	}
}

// testCtx is the context of one CNI call or command in a test. It is not
// derived from t.Context(), which is cancelled before cleanups run: cleanups
// call DEL too.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// randomHex returns n random bytes as hex.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ---- ipamd ----

// ipamd is one ipamd process a test started, with its own socket and data dir.
type ipamd struct {
	dir     string // short path: a unix socket path is limited to 108 bytes
	socket  string
	dataDir string
	logPath string
	node    string
	// binary and extra, when set, replace bin/ipamd and add flags.
	binary string
	extra  []string
	cmd    *exec.Cmd
	done   chan error
}

// startIpamd starts ipamd with an embedded etcd in a fresh data dir, waits
// until `ipamd state` answers, and stops it (by pid) when the test ends,
// printing its log if the test failed.
func startIpamd(t *testing.T) *ipamd {
	t.Helper()
	return startIpamdWith(t, "")
}

// startIpamdWith is startIpamd with another ipamd binary (e.g. an installed
// one) and extra flags.
func startIpamdWith(t *testing.T, binary string, extra ...string) *ipamd {
	t.Helper()
	dir, err := os.MkdirTemp("", "v6t-")
	if err != nil {
		t.Fatal(err)
	}
	d := &ipamd{
		dir:     dir,
		socket:  filepath.Join(dir, "ipamd.sock"),
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "ipamd.log"),
		node:    "node-" + randomHex(t, 3),
		binary:  binary,
		extra:   extra,
	}
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			log, _ := os.ReadFile(d.logPath)
			t.Logf("ipamd log (%s):\n%s", d.logPath, log)
		}
		os.RemoveAll(d.dir)
	})
	d.start(t)
	return d
}

// start runs ipamd serve and waits for its socket to answer.
func (d *ipamd) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- ipamd serve started by %s at %s\n", t.Name(), time.Now().Format(time.RFC3339Nano))
	bin := d.binary
	if bin == "" {
		bin = filepath.Join(binDir, "ipamd")
	}
	args := append([]string{"serve", "--node-name", d.node, "--socket", d.socket, "--data-dir", d.dataDir}, d.extra...)
	cmd := exec.Command(bin, args...)
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

// stop sends SIGTERM to the ipamd this test started and waits for it to exit;
// it kills it if it does not stop in time. A stop that is not clean fails
// the test.
func (d *ipamd) stop(t *testing.T) {
	t.Helper()
	if err := d.terminate(); err != nil {
		t.Error(err)
	}
}

// terminate sends SIGTERM to ipamd (by pid) and waits up to 15s for a clean
// exit, then kills it.
func (d *ipamd) terminate() error {
	if d.cmd == nil {
		return nil
	}
	cmd := d.cmd
	d.cmd = nil
	pid := cmd.Process.Pid
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM ipamd pid %d: %v", pid, err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			return fmt.Errorf("ipamd pid %d did not exit cleanly on SIGTERM: %v", pid, err)
		}
		return nil
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("ipamd pid %d still running 15s after SIGTERM: killed", pid)
	}
}

// restart stops ipamd and starts it again on the same data dir and socket.
func (d *ipamd) restart(t *testing.T) {
	t.Helper()
	if err := d.terminate(); err != nil {
		t.Fatal(err)
	}
	d.start(t)
}

// state returns `ipamd state --json`.
func (d *ipamd) state(t *testing.T) *ipamapi.State {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t), filepath.Join(binDir, "ipamd"), "state", "--socket", d.socket, "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ipamd state --json: %v: %s", err, stderr.String())
	}
	var st ipamapi.State
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("ipamd state --json: not an ipamapi.State: %v\n%s", err, out)
	}
	return &st
}

// lease is one address ipamd holds, with its network and attachment.
type lease struct {
	Network     string
	Addr        netip.Addr
	ContainerID string
	IfName      string
}

func (l lease) String() string {
	return fmt.Sprintf("%s %s %s/%s", l.Network, l.Addr, l.ContainerID, l.IfName)
}

// leases returns every address in use in ipamd's state, sorted.
func (d *ipamd) leases(t *testing.T) []lease {
	t.Helper()
	var out []lease
	for _, n := range d.state(t).Networks {
		for _, b := range n.Blocks {
			for _, a := range b.Addrs {
				addr, err := netip.ParseAddr(a.Addr)
				if err != nil {
					// Tolerate a prefix ("2001:db8::2/64") as well as a bare address.
					p, perr := netip.ParsePrefix(a.Addr)
					if perr != nil {
						t.Fatalf("ipamd state: address %q of block %s: %v", a.Addr, b.Block, err)
					}
					addr = p.Addr()
				}
				out = append(out, lease{Network: n.Network, Addr: addr, ContainerID: a.ContainerID, IfName: a.IfName})
			}
		}
	}
	slices.SortFunc(out, func(a, b lease) int { return a.Addr.Compare(b.Addr) })
	return out
}

// requireNoLeases fails the test if ipamd holds any address.
func (d *ipamd) requireNoLeases(t *testing.T) {
	t.Helper()
	if ls := d.leases(t); len(ls) != 0 {
		t.Fatalf("ipamd still holds %d addresses, want none: %v", len(ls), ls)
	}
}

// leasesOf returns the addresses ipamd holds for one container.
func (d *ipamd) leasesOf(t *testing.T, containerID string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, l := range d.leases(t) {
		if l.ContainerID == containerID {
			out = append(out, l.Addr)
		}
	}
	return out
}

// ---- network namespaces, bridges, subnets ----

// testNS is a network namespace a test created; Delete may run early (to
// test DEL without a netns) and again in cleanup.
type testNS struct {
	ns.NetNS
	once sync.Once
	name string
}

// newNetns creates a network namespace with a unique name, closed and
// unmounted when the test ends.
func newNetns(t *testing.T) *testNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	tn := &testNS{NetNS: n, name: filepath.Base(n.Path())}
	t.Cleanup(func() { tn.delete(t) })
	return tn
}

// delete closes and unmounts the namespace, once.
func (n *testNS) delete(t *testing.T) {
	t.Helper()
	n.once.Do(func() {
		path := n.Path()
		if err := n.Close(); err != nil {
			t.Errorf("close netns %s: %v", path, err)
		}
		if err := testutils.UnmountNS(n.NetNS); err != nil {
			t.Errorf("unmount netns %s: %v", path, err)
		}
	})
}

// newBridgeName returns a unique bridge name ("v6t" + 8 hex, 11 bytes) and
// deletes that bridge, if a plugin created it, when the test ends.
func newBridgeName(t *testing.T) string {
	t.Helper()
	name := "v6t" + randomHex(t, 4)
	t.Cleanup(func() {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return
		}
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("delete bridge %s: %v", name, err)
		}
	})
	return name
}

// randomSubnet6 returns a random 2001:db8:XXXX::/48 (documentation space),
// avoiding the subnets of conf/ that the demo uses.
func randomSubnet6(t *testing.T) netip.Prefix {
	t.Helper()
	for {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		x := binary.BigEndian.Uint16(b[:])
		if x < 0x1000 || x == 0xcafe || x == 0xbeef {
			continue
		}
		return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/48", x))
	}
}

// randomSubnet4 returns a random 10.X.0.0/16 with X in 100..243 (the demo
// uses 10.244.0.0/16). Only ever used inside a test's own bridge.
func randomSubnet4(t *testing.T) netip.Prefix {
	t.Helper()
	var b [1]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 100+int(b[0])%144))
}

// ---- network configurations ----

// testNet is one network of a test: a conflist with bridge-v6 and ipam-v6.
type testNet struct {
	Name   string
	Bridge string
	// IPAM is the ipam section as written into the conflist; tests that feed
	// bad input change it freely.
	IPAM map[string]any
}

// newNet returns a network with a unique bridge and a random IPv6 /48 (and,
// if dual, a random IPv4 /16) served by d.
func newNet(t *testing.T, d *ipamd, dual bool) *testNet {
	t.Helper()
	ranges := []any{[]any{map[string]any{"subnet": randomSubnet6(t).String(), "blockSize": 64}}}
	if dual {
		ranges = append(ranges, []any{map[string]any{"subnet": randomSubnet4(t).String(), "blockSize": 24}})
	}
	return &testNet{
		Name:   "v6t-" + randomHex(t, 4),
		Bridge: newBridgeName(t),
		IPAM: map[string]any{
			"type":   "ipam-v6",
			"socket": d.socket,
			"ranges": ranges,
		},
	}
}

// subnet returns the first subnet of range set i.
func (n *testNet) subnet(t *testing.T, i int) netip.Prefix {
	t.Helper()
	sets := n.IPAM["ranges"].([]any)
	r := sets[i].([]any)[0].(map[string]any)
	return netip.MustParsePrefix(r["subnet"].(string))
}

// pluginConf is the bridge-v6 entry of the conflist.
func (n *testNet) pluginConf() map[string]any {
	return map[string]any{
		"type":             "bridge-v6",
		"bridge":           n.Bridge,
		"isGateway":        true,
		"isDefaultGateway": true,
		"ipam":             n.IPAM,
	}
}

// confListBytes is the conflist as a runtime reads it from /etc/cni/net.d.
func (n *testNet) confListBytes(t *testing.T, ver string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"cniVersion": ver,
		"name":       n.Name,
		"plugins":    []any{n.pluginConf()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// confList parses the conflist with libcni.
func (n *testNet) confList(t *testing.T, ver string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes(n.confListBytes(t, ver))
	if err != nil {
		t.Fatalf("libcni.ConfListFromBytes: %v", err)
	}
	return l
}

// pluginConfBytes is the single-plugin configuration bridge-v6 receives on
// stdin (and passes whole to ipam-v6).
func (n *testNet) pluginConfBytes(t *testing.T, ver string) []byte {
	t.Helper()
	c := n.pluginConf()
	c["cniVersion"] = ver
	c["name"] = n.Name
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- CNI calls ----

// newCNI returns a libcni client for the built plugins, caching results in a
// temporary directory instead of /var/lib/cni.
func newCNI(t *testing.T) *libcni.CNIConfig {
	t.Helper()
	return libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
}

// container is one attachment of a network namespace to a network.
type container struct {
	ID     string
	NS     *testNS
	IfName string
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
}

// newContainer creates a netns and a unique container ID for network list.
func newContainer(t *testing.T, cni *libcni.CNIConfig, list *libcni.NetworkConfigList) *container {
	t.Helper()
	return &container{
		ID:     "v6t-" + randomHex(t, 8),
		NS:     newNetns(t),
		IfName: "eth0",
		cni:    cni,
		list:   list,
	}
}

func (c *container) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: c.ID,
		NetNS:       c.NS.Path(),
		IfName:      c.IfName,
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", c.ID}},
	}
}

// add runs ADD through libcni, as a runtime does. On success it registers a
// DEL for the end of the test.
func (c *container) add(t *testing.T) (*current.Result, error) {
	t.Helper()
	res, err := c.cni.AddNetworkList(testCtx(t), c.list, c.runtimeConf())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := c.cni.DelNetworkList(context.Background(), c.list, c.runtimeConf()); err != nil {
			t.Errorf("cleanup: DEL %s: %v", c.ID, err)
		}
	})
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("ADD %s: convert result %v: %v", c.ID, res, err)
	}
	if res.Version() != c.list.CNIVersion {
		t.Errorf("ADD %s: result cniVersion %q, want %q (the conflist's)", c.ID, res.Version(), c.list.CNIVersion)
	}
	return r, nil
}

// mustAdd is add that fails the test on error.
func (c *container) mustAdd(t *testing.T) *current.Result {
	t.Helper()
	r, err := c.add(t)
	if err != nil {
		t.Fatalf("ADD %s: %v", c.ID, err)
	}
	return r
}

// del runs DEL through libcni.
func (c *container) del(t *testing.T) error {
	t.Helper()
	return c.cni.DelNetworkList(testCtx(t), c.list, c.runtimeConf())
}

// check runs CHECK through libcni (it uses the cached ADD result as prevResult).
func (c *container) check(t *testing.T) error {
	t.Helper()
	return c.cni.CheckNetworkList(testCtx(t), c.list, c.runtimeConf())
}

// execIPAM runs ipam-v6 directly, as bridge-v6 delegates to it, with the
// whole plugin configuration of n on stdin.
func execIPAM(t *testing.T, n *testNet, ver, command string, c *container) (*current.Result, error) {
	t.Helper()
	args := &invoke.Args{
		Command:     command,
		ContainerID: c.ID,
		NetNS:       c.NS.Path(),
		IfName:      c.IfName,
		Path:        binDir,
	}
	plugin := filepath.Join(binDir, "ipam-v6")
	conf := n.pluginConfBytes(t, ver)
	if command != "ADD" {
		return nil, invoke.ExecPluginWithoutResult(testCtx(t), plugin, conf, args, nil)
	}
	res, err := invoke.ExecPluginWithResult(testCtx(t), plugin, conf, args, nil)
	if err != nil {
		return nil, err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("ipam-v6 ADD: convert result: %v", err)
	}
	return r, nil
}

// execResult is what a plugin binary did when exec'd by hand.
type execResult struct {
	exitCode int
	stdout   []byte
	stderr   []byte
}

// execPluginRaw runs a plugin binary with exactly env (plus PATH) and stdin,
// as a careless runtime might.
func execPluginRaw(t *testing.T, plugin string, env []string, stdin []byte) execResult {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t), filepath.Join(binDir, plugin))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("exec %s: %v", plugin, err)
	}
	return execResult{exitCode: cmd.ProcessState.ExitCode(), stdout: stdout.Bytes(), stderr: stderr.Bytes()}
}

// requireCNIError fails unless err carries a CNI error with code and a
// message containing every one of want.
func requireCNIError(t *testing.T, err error, code uint, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want CNI error %d", code)
	}
	var ce *types.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %T %q, want a CNI error %d", err, err, code)
	}
	if ce.Code != code {
		t.Fatalf("got CNI error %d %q (details %q), want code %d", ce.Code, ce.Msg, ce.Details, code)
	}
	text := ce.Msg + " " + ce.Details
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("CNI error %d %q (details %q) does not name %q", ce.Code, ce.Msg, ce.Details, w)
		}
	}
}

// requireExecCNIError fails unless the plugin exited non-zero and printed on
// stdout a CNI error with code whose message contains every one of want.
func requireExecCNIError(t *testing.T, r execResult, code uint, want ...string) {
	t.Helper()
	if r.exitCode == 0 {
		t.Fatalf("plugin exited 0, want CNI error %d; stdout %s", code, r.stdout)
	}
	var ce types.Error
	if err := json.Unmarshal(r.stdout, &ce); err != nil || ce.Code == 0 {
		t.Fatalf("stdout is not a CNI error (%v): %q; stderr %q", err, r.stdout, r.stderr)
	}
	requireCNIError(t, &ce, code, want...)
}

// ---- what is in a netns, what is on the host ----

// ping sends one echo request from inside n to addr (ping's own -W2 is the
// only wait).
func ping(t *testing.T, n *testNS, addr net.IP) error {
	t.Helper()
	family := "-6"
	if addr.To4() != nil {
		family = "-4"
	}
	out, err := exec.CommandContext(testCtx(t), "nsenter", "--net="+n.Path(),
		"ping", family, "-c1", "-W2", addr.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", addr, n.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// requirePing fails the test unless addr answers from inside n.
func requirePing(t *testing.T, n *testNS, addr net.IP) {
	t.Helper()
	if err := ping(t, n, addr); err != nil {
		t.Error(err)
	}
}

// linkState is what a link inside a netns looks like.
type linkState struct {
	MAC   string
	Addrs []string // CIDR notation, global scope only
}

// linkIn reads link ifname inside n with netlink.
func linkIn(t *testing.T, n *testNS, ifname string) (linkState, error) {
	t.Helper()
	var st linkState
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("link %s in %s: %w", ifname, n.name, err)
		}
		st.MAC = l.Attrs().HardwareAddr.String()
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("addresses of %s in %s: %w", ifname, n.name, err)
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				continue
			}
			st.Addrs = append(st.Addrs, a.IPNet.String())
		}
		return nil
	})
	return st, err
}

// linksIn returns the names of all links inside n.
func linksIn(t *testing.T, n *testNS) []string {
	t.Helper()
	var names []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("links in %s: %v", n.name, err)
	}
	slices.Sort(names)
	return names
}

// vethsInto returns the host's veths whose peer lives in n: what an
// attachment of n leaves on the host.
func vethsInto(t *testing.T, n *testNS) []string {
	t.Helper()
	nsid, err := netlink.GetNetNsIdByFd(int(n.Fd()))
	if err != nil {
		t.Fatalf("netns id of %s: %v", n.name, err)
	}
	if nsid < 0 {
		return nil // no link of the host ever pointed into n
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("host links: %v", err)
	}
	var out []string
	for _, l := range links {
		if a := l.Attrs(); l.Type() == "veth" && a.NetNsID == nsid {
			out = append(out, a.Name)
		}
	}
	return out
}

// bridgePorts returns the names of the links attached to bridge (none if the
// bridge does not exist).
func bridgePorts(t *testing.T, bridge string) []string {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("host links: %v", err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// requireNothingLeft fails if an attachment of n left a veth on the host, a
// port on bridge, a link other than wantLinks in n, or an address in ipamd.
// It is for tests where n was the only container of bridge.
func requireNothingLeft(t *testing.T, d *ipamd, bridge string, n *testNS, wantLinks ...string) {
	t.Helper()
	if v := vethsInto(t, n); len(v) != 0 {
		t.Errorf("veths left on the host for netns %s: %v", n.name, v)
	}
	if p := bridgePorts(t, bridge); len(p) != 0 {
		t.Errorf("ports left on bridge %s: %v", bridge, p)
	}
	want := append([]string{"lo"}, wantLinks...)
	slices.Sort(want)
	if got := linksIn(t, n); !slices.Equal(got, want) {
		t.Errorf("links in netns %s: got %v, want %v", n.name, got, want)
	}
	d.requireNoLeases(t)
}

// ---- results ----

// addrs returns the addresses of a result as netip prefixes.
func addrs(t *testing.T, r *current.Result) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, ip := range r.IPs {
		p, ok := netipPrefix(ip.Address)
		if !ok {
			t.Fatalf("result address %v is not an IP prefix", ip.Address)
		}
		out = append(out, p)
	}
	return out
}

// netipPrefix converts a net.IPNet (as CNI results carry) to a netip.Prefix.
func netipPrefix(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// sandboxInterface returns the result's interface inside the container.
func sandboxInterface(t *testing.T, r *current.Result, nsPath string) *current.Interface {
	t.Helper()
	for _, itf := range r.Interfaces {
		if itf.Sandbox == nsPath {
			return itf
		}
	}
	t.Fatalf("result has no interface with sandbox %s: %v", nsPath, r.Interfaces)
	return nil
}

// leaseAddrs returns the addresses of a result, bare, sorted.
func leaseAddrs(t *testing.T, r *current.Result) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, p := range addrs(t, r) {
		out = append(out, p.Addr())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// runIn runs a command inside netns n (nsenter --net).
func runIn(t *testing.T, n *testNS, name string, args ...string) ([]byte, error) {
	t.Helper()
	return exec.CommandContext(testCtx(t), "nsenter", append([]string{"--net=" + n.Path(), name}, args...)...).CombinedOutput()
}

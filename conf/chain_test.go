package conf

import (
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/link"
)

// debianPlugins is where Debian's containernetworking-plugins (1.1.1:
// cniVersion at most 1.0.0) installs portmap, tuning, bandwidth, firewall.
const debianPlugins = "/usr/lib/cni"

// upstreamPlugins is the containernetworking/plugins release whose portmap
// the test builds from the Go module proxy (the version go.mod requires):
// the first release supporting cniVersion 1.1.0 is v1.6.0.
const upstreamPlugins = "v1.10.0"

// oldLibcni is the libcni containerd 1.7 (every release to v1.7.35) and
// Debian 12's podman 4.3 link: it knows cniVersion up to 1.0.0 and
// ignores cniVersions. The test runs its cnitool.
const oldLibcni = "v1.1.2"

// chainCase is one conflist run through libcni as a runtime runs it.
type chainCase struct {
	name string
	conf []byte
	// path is CNI_PATH after our plugins' directory.
	path string
	// portmap: the chain maps a port; the rules must appear at ADD and go
	// at DEL.
	portmap bool
	// invalid: ValidateNetworkList must refuse the list (a chained plugin
	// does not support its cniVersion); nothing else runs.
	invalid bool
	// checkFails: CHECK is expected to fail (a chained plugin's own bug).
	checkFails bool
	// oldLibcni: run through cnitool of libcni v1.1.2 (what containerd 1.7
	// and Debian 12's podman link) instead of this module's libcni.
	oldLibcni bool
	// addFails: ADD is expected to fail (and DEL to clean up after it).
	addFails bool
	// leak: run it as containerd does with a chained plugin refusing the
	// version (no ValidateNetworkList): ADD and DEL fail, the lease is
	// left, the netns goes; ipamd's reclaim must release it.
	leak bool
}

// TestConflistsThroughLibcni runs every shipped conflist (conf/*.conflist
// and the conflists of the Kubernetes ConfigMaps) through libcni against
// the real binaries — our plugins, Debian's from /usr/lib/cni, a real
// ipamd on a one-member etcd, with a delegated prefix from Kea for the
// pd-ipam networks — in a real netns: VERSION of every plugin
// (ValidateNetworkList), ADD, CHECK, STATUS, GC with the attachment
// valid, DEL; then nothing is left: no lease, no veth, no portmap rule.
// Each also runs through cnitool of libcni v1.1.2 (containerd 1.7's), which
// runs it at 1.0.0. The portmap variants conf/README.md describes run too:
// what works with Debian's portmap, what needs upstream's, and the leak a
// chain refusing its version leaves under containerd, which only ipamd's
// reclaim cleans up.
func TestConflistsThroughLibcni(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (real netns, veths, bridges, ip6tables, Kea): run as root")
	}
	if _, err := os.Stat(filepath.Join(debianPlugins, "portmap")); err != nil {
		t.Fatalf("Debian's portmap missing (%v): apt-get install containernetworking-plugins", err)
	}
	ours := buildPlugins(t)
	upstream := upstreamPortmap(t)
	oldCnitool := goInstall(t, "github.com/containernetworking/cni/cnitool@"+oldLibcni)
	c := clustertest.Start(t, clustertest.Options{Members: 1, Nodes: 1, PD: &clustertest.PDOptions{}})
	node := c.Nodes[0]

	var cases []chainCase
	files, err := filepath.Glob("*.conflist")
	if err != nil || len(files) < 4 {
		t.Fatalf("conflists: %v %v", files, err)
	}
	shipped := map[string][]byte{}
	for _, f := range files {
		if f == "providernet.conflist" {
			// Its ADD enslaves the node's uplink (eth1.22): not on this
			// host. TestExampleConflists parses it; bridge-v6's
			// TestProvider* run the same keys against a lab uplink.
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		shipped[f] = b
	}
	for _, f := range []string{"kubernetes/embedded/20-configmap.yaml", "kubernetes/cluster/20-configmap.yaml"} {
		for key, b := range configMapConflists(t, f) {
			shipped[f+":"+key] = b
		}
	}
	for _, name := range slices.Sorted(maps.Keys(shipped)) {
		b := shipped[name]
		checkVersions(t, name, b)
		cases = append(cases,
			chainCase{name: name, conf: b, path: debianPlugins},
			chainCase{name: name + "/libcni-v1.1.2", conf: b, path: debianPlugins, oldLibcni: true})
	}
	// pdnet with portmap chained, as README.md says to add it.
	pd, err := os.ReadFile("pdnet.conflist")
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases,
		// Debian's portmap 1.1.1 supports at most 1.0.0: at 1.1.0 the
		// runtime's ADD, DEL and STATUS would fail at its VERSION check.
		chainCase{name: "pdnet+portmap@1.1.0/debian", conf: withPortmap(t, pd, "1.1.0"), path: debianPlugins, portmap: true, invalid: true},
		// What that does under containerd, and what cleans it up.
		chainCase{name: "pdnet+portmap@1.1.0/debian/leak-then-reclaim", conf: withPortmap(t, pd, "1.1.0"), path: debianPlugins, portmap: true, leak: true},
		// At 1.0.0 it works (no STATUS, no GC), but its CHECK of an
		// IPv6-only attachment fails whatever bridge-v6 did (it looks for
		// IPv4 rules): containerd never calls CHECK.
		chainCase{name: "pdnet+portmap@1.0.0/debian", conf: withPortmap(t, pd, "1.0.0"), path: debianPlugins, portmap: true, checkFails: true},
		chainCase{name: "pdnet+portmap@1.1.0/upstream-" + upstreamPlugins, conf: withPortmap(t, pd, "1.1.0"), path: upstream, portmap: true},
		// Why the shipped lists say cniVersion 1.0.0 with cniVersions
		// [1.0.0, 1.1.0]: pinned to 1.1.0, libcni v1.1.2 cannot read the
		// 1.1.0 result, so ADD fails after the plugins succeeded (its DEL
		// still cleans up).
		chainCase{name: "pdnet@1.1.0-only/libcni-v1.1.2", conf: pinned(t, pd, "1.1.0"), path: debianPlugins, oldLibcni: true, addFails: true},
	)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.oldLibcni {
				runOldLibcni(t, tc, i, ours, oldCnitool, node)
				return
			}
			if tc.leak {
				runLeakThenReclaim(t, tc, i, ours, node)
				return
			}
			runChain(t, tc, i, ours, node)
		})
	}
}

// checkVersions: a shipped conflist says cniVersion 1.0.0 for a libcni
// that knows no more (v1.1.x: containerd 1.7, Debian 12's podman) and
// cniVersions [1.0.0, 1.1.0], from which libcni >= v1.2.0 (containerd 2,
// CRI-O, cnitool) takes 1.1.0 and so sends STATUS and GC.
func checkVersions(t *testing.T, name string, b []byte) {
	t.Helper()
	var raw struct {
		CNIVersion  string   `json:"cniVersion"`
		CNIVersions []string `json:"cniVersions"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if raw.CNIVersion != "1.0.0" || !slices.Equal(raw.CNIVersions, []string{"1.0.0", "1.1.0"}) {
		t.Errorf("%s: cniVersion %q cniVersions %q, want 1.0.0 and [1.0.0 1.1.0]", name, raw.CNIVersion, raw.CNIVersions)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if list.CNIVersion != "1.1.0" {
		t.Errorf("%s: this module's libcni runs it at %s, want 1.1.0", name, list.CNIVersion)
	}
}

// runOldLibcni runs the conflist through cnitool v1.1.2 (libcni v1.1.2,
// which ignores cniVersions): ADD, CHECK, DEL in a real netns; then no
// lease and no veth is left.
func runOldLibcni(t *testing.T, tc chainCase, i int, ours, cnitool string, node *clustertest.Node) {
	bridge := fmt.Sprintf("cfo%d%s", i, randHex(4))
	conf := rewrite(t, tc.conf, bridge, node.Socket)
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	var hdr struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(conf, &hdr); err != nil {
		t.Fatal(err)
	}
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, hdr.Name+".conflist"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	nsName := newNetns(t)
	nsPath := "/run/netns/" + nsName
	// cnitool's container ID: a hash of the netns path.
	sum := sha512.Sum512([]byte(nsPath))
	containerID := fmt.Sprintf("cnitool-%x", sum[:10])
	run := func(verb string) (string, error) {
		cmd := exec.Command(cnitool, verb, hdr.Name, nsPath)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+ours+":"+tc.path,
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=conf-old-"+nsName)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			run("del")
		}
	})

	out, err := run("add")
	switch {
	case tc.addFails && err == nil:
		t.Fatalf("ADD through libcni v1.1.2 succeeded: %s", out)
	case tc.addFails:
		t.Logf("ADD failed, as expected: %s", strings.TrimSpace(out))
	case err != nil:
		t.Fatalf("ADD: %v: %s", err, out)
	default:
		leases, err := node.Client.Leases(ctx, hdr.Name)
		if err != nil {
			t.Fatalf("leases: %v", err)
		}
		if n := countLeases(leases, containerID); n != 1 {
			t.Errorf("after ADD: %d leases of the container in ipamd, want 1 (%+v)", n, leases)
		}
		if out, err := run("check"); err != nil {
			t.Errorf("CHECK: %v: %s", err, out)
		}
	}
	if out, err := run("del"); err != nil {
		t.Fatalf("DEL: %v: %s", err, out)
	}
	deleted = true
	leases, err := node.Client.Leases(ctx, hdr.Name)
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	if n := countLeases(leases, containerID); n != 0 {
		t.Errorf("after DEL: %d leases of the container left in ipamd (%+v)", n, leases)
	}
	if ok, _ := link.LinkExists(link.HostVethName(containerID, "eth0")); ok {
		t.Error("after DEL: host veth left")
	}
	if ports := bridgePorts(t, bridge); len(ports) != 0 {
		t.Errorf("after DEL: links still on bridge %s: %v", bridge, ports)
	}
}

// runLeakThenReclaim runs the chain as containerd (go-cni, libcni >=
// v1.2) does when a chained plugin refuses the list's version: ADD fails
// after bridge-v6 and its IPAM succeeded, DEL runs in reverse and stops at
// that plugin, STATUS fails; containerd ignores the failed DEL of a
// sandbox without a CNI result and removes the netns. The lease is left,
// and ipamd's reclaim (`ipamd gc`, here with no grace) is what releases it.
func runLeakThenReclaim(t *testing.T, tc chainCase, i int, ours string, node *clustertest.Node) {
	bridge := fmt.Sprintf("cfl%d%s", i, randHex(4))
	conf := rewrite(t, tc.conf, bridge, node.Socket)
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatalf("libcni: %v", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{ours, tc.path}, t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nsName := newNetns(t)
	containerID := randHex(32)
	rt := &libcni.RuntimeConf{
		ContainerID: containerID, NetNS: "/run/netns/" + nsName, IfName: "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "conf-leak"}},
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 18000 + i, "containerPort": 8080, "protocol": "tcp"}}},
	}
	if _, err := cni.AddNetworkList(ctx, list, rt); err == nil {
		t.Fatal("ADD succeeded with a chained plugin refusing the version")
	}
	if err := cni.DelNetworkList(ctx, list, rt); err == nil {
		t.Fatal("DEL succeeded with a chained plugin refusing the version")
	}
	if err := cni.GetStatusNetworkList(ctx, list); err == nil {
		t.Error("STATUS succeeded with a chained plugin refusing the version")
	}
	leases, err := node.Client.Leases(ctx, list.Name)
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	if n := countLeases(leases, containerID); n != 1 {
		t.Fatalf("after the failed ADD and DEL: %d leases of the container, want the leaked 1", n)
	}
	// containerd removes the netns; the kernel then deletes the veth pair.
	if out, err := exec.Command("ip", "netns", "del", nsName).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	rel, err := node.Client.Reclaim(ctx, &ipamapi.AdminRequest{})
	if err != nil {
		t.Fatalf("reclaim: %v", err)
	}
	if n := countLeases(rel.Released, containerID); n != 1 {
		t.Errorf("reclaim released %+v, want the leaked attachment", rel.Released)
	}
	leases, err = node.Client.Leases(ctx, list.Name)
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	if n := countLeases(leases, containerID); n != 0 {
		t.Errorf("after reclaim: %d leases of the container left", n)
	}
	// The netns goes asynchronously in the kernel, and its veth with it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ok, _ := link.LinkExists(link.HostVethName(containerID, "eth0"))
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("host veth still there 30 s after its netns was deleted")
		}
	}
}

// newNetns creates a network namespace with `ip netns add`, deleted when
// the test ends. Not testutils.NewNS: NewNS ends an OS thread of the test
// binary, and etcd and ipamd die with the thread that started them
// (clustertest sets Pdeathsig).
func newNetns(t *testing.T) string {
	t.Helper()
	name := "cfns-" + randHex(6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// runChain rewrites the conflist for this test (a unique bridge, ipamd's
// socket of the test cluster) and runs it as a runtime does.
func runChain(t *testing.T, tc chainCase, i int, ours string, node *clustertest.Node) {
	bridge := fmt.Sprintf("cfc%d%s", i, randHex(4))
	conf := rewrite(t, tc.conf, bridge, node.Socket)
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatalf("libcni: %v", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{ours, tc.path}, t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// What a runtime checks before using a network: every plugin found and
	// supporting the list's cniVersion.
	_, verr := cni.ValidateNetworkList(ctx, list)
	if tc.invalid {
		if verr == nil {
			t.Fatalf("ValidateNetworkList accepted cniVersion %s with %s", list.CNIVersion, tc.path)
		}
		t.Logf("refused, as expected: %v", verr)
		// And a runtime that polls STATUS anyway never gets ready.
		if err := cni.GetStatusNetworkList(ctx, list); err == nil {
			t.Error("STATUS succeeded with a chained plugin refusing the version")
		} else {
			t.Logf("STATUS fails, as expected: %v", err)
		}
		return
	}
	if verr != nil {
		t.Fatalf("ValidateNetworkList: %v", verr)
	}

	netns, err := ns.GetNS("/run/netns/" + newNetns(t))
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() { netns.Close() })
	containerID := randHex(32)
	rt := &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netns.Path(),
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "conf-" + containerID[:8]}},
	}
	if tc.portmap {
		rt.CapabilityArgs = map[string]any{
			"portMappings": []map[string]any{{"hostPort": 18000 + i, "containerPort": 8080, "protocol": "tcp"}},
		}
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			cni.DelNetworkList(context.Background(), list, rt)
		}
	})

	res, err := cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != list.CNIVersion {
		t.Errorf("ADD result cniVersion %s, list %s", res.Version(), list.CNIVersion)
	}
	leases, err := node.Client.Leases(ctx, list.Name)
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	if n := countLeases(leases, containerID); n != 1 {
		t.Errorf("after ADD: %d leases of the container in ipamd, want 1 (%+v)", n, leases)
	}
	if ok, err := link.LinkExists(link.HostVethName(containerID, "eth0")); err != nil || !ok {
		t.Errorf("after ADD: host veth missing (%v)", err)
	}
	if tc.portmap && !natMentions(t, containerID) {
		t.Error("after ADD: no NAT rule of portmap names the container")
	}

	err = cni.CheckNetworkList(ctx, list, rt)
	switch {
	case tc.checkFails && err == nil:
		t.Error("CHECK passed: Debian's portmap fixed? Update README.md and this case")
	case tc.checkFails:
		t.Logf("CHECK failed, as expected with this portmap: %v", err)
	case err != nil:
		t.Errorf("CHECK: %v", err)
	}

	// STATUS and GC: libcni sends them only from 1.1.0 (below, both are
	// no-ops that succeed). GC with the attachment valid, as CRI-O sends
	// it, must release nothing.
	hasV11, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0")
	if err := cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: containerID, IfName: "eth0"}}}); err != nil {
		t.Errorf("GC: %v", err)
	}
	if leases, err := node.Client.Leases(ctx, list.Name); err != nil || countLeases(leases, containerID) != 1 {
		t.Errorf("after GC with the attachment valid (cniVersion %s, GC sent: %v): leases %+v (%v), want the container's", list.CNIVersion, hasV11, leases, err)
	}

	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	deleted = true
	leases, err = node.Client.Leases(ctx, list.Name)
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	if n := countLeases(leases, containerID); n != 0 {
		t.Errorf("after DEL: %d leases of the container left in ipamd (%+v)", n, leases)
	}
	if ok, _ := link.LinkExists(link.HostVethName(containerID, "eth0")); ok {
		t.Error("after DEL: host veth left")
	}
	if ports := bridgePorts(t, bridge); len(ports) != 0 {
		t.Errorf("after DEL: links still on bridge %s: %v", bridge, ports)
	}
	if err := netns.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return fmt.Errorf("eth0 left in the netns")
		}
		return nil
	}); err != nil {
		t.Errorf("after DEL: %v", err)
	}
	if tc.portmap && natMentions(t, containerID) {
		t.Error("after DEL: a NAT rule of portmap still names the container")
	}
}

// buildPlugins builds our plugins (CGO_ENABLED=0, as `make build`) into
// a temporary directory: the first entry of CNI_PATH.
func buildPlugins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	_, self, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/",
		"./plugins/bridge-v6", "./plugins/ipam-v6", "./plugins/pd-ipam")
	cmd.Dir = filepath.Join(filepath.Dir(self), "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build plugins: %v\n%s", err, out)
	}
	return dir
}

// upstreamPortmap returns the directory of upstream's portmap at
// upstreamPlugins.
func upstreamPortmap(t *testing.T) string {
	t.Helper()
	return filepath.Dir(goInstall(t, "github.com/containernetworking/plugins/plugins/meta/portmap@"+upstreamPlugins))
}

// goInstall builds pkg@version with `go install` from the Go module proxy
// (outside this module: go.mod and go.sum stay as they are) into a
// temporary directory and returns the binary's path.
func goInstall(t *testing.T, pkgVersion string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "install", pkgVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", pkgVersion, err, out)
	}
	pkg, _, _ := strings.Cut(pkgVersion, "@")
	return filepath.Join(dir, filepath.Base(pkg))
}

// configMapConflists returns the *.conflist keys of the ConfigMap in f.
func configMapConflists(t *testing.T, f string) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil || cm.Kind != "ConfigMap" {
		t.Fatalf("%s: not a ConfigMap (%v)", f, err)
	}
	out := map[string][]byte{}
	for k, v := range cm.Data {
		if strings.HasSuffix(k, ".conflist") {
			out[k] = []byte(v)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no *.conflist key", f)
	}
	return out
}

// pinned returns the conflist at cniVersion v only (no cniVersions).
func pinned(t *testing.T, conf []byte, v string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	m["cniVersion"] = v
	delete(m, "cniVersions")
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withPortmap returns the conflist at cniVersion v only, with portmap
// chained after its plugins.
func withPortmap(t *testing.T, conf []byte, v string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(pinned(t, conf, v), &m); err != nil {
		t.Fatal(err)
	}
	plugins, _ := m["plugins"].([]any)
	m["plugins"] = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}})
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rewrite points the conflist's bridge-v6 at a bridge of this test and its
// IPAM at the test's ipamd; everything else stays as shipped.
func rewrite(t *testing.T, conf []byte, bridge, socket string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	plugins, _ := m["plugins"].([]any)
	found := false
	for _, p := range plugins {
		pm, _ := p.(map[string]any)
		if pm["type"] != "bridge-v6" {
			continue
		}
		found = true
		pm["bridge"] = bridge
		ipam, _ := pm["ipam"].(map[string]any)
		if ipam == nil {
			t.Fatal("bridge-v6 without ipam")
		}
		ipam["socket"] = socket
	}
	if !found {
		t.Fatal("no bridge-v6 in the conflist")
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func countLeases(leases []ipamapi.Lease, containerID string) int {
	n := 0
	for _, l := range leases {
		if l.ContainerID == containerID {
			n++
		}
	}
	return n
}

// bridgePorts names the links enslaved to the bridge.
func bridgePorts(t *testing.T, bridge string) []string {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil // never created or already gone: no ports
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// natMentions reports whether a NAT rule names the container (portmap's
// rules carry its ID in a comment): ip6tables, or nftables for an
// upstream portmap on its nftables backend.
func natMentions(t *testing.T, containerID string) bool {
	t.Helper()
	var dump []byte
	for _, c := range [][]string{{"ip6tables-save", "-t", "nat"}, {"iptables-save", "-t", "nat"}, {"nft", "list", "ruleset"}} {
		if _, err := exec.LookPath(c[0]); err != nil {
			continue
		}
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(c, " "), err)
		}
		dump = append(dump, out...)
	}
	return strings.Contains(string(dump), containerID)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

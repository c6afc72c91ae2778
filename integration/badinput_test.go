package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requireRejected runs ADD for n twice — through libcni (bridge-v6 delegating
// to ipam-v6) and by exec'ing ipam-v6 directly — and requires the CNI error
// code and message parts in both, with nothing allocated and no veth left.
func requireRejected(t *testing.T, d *ipamd, n *testNet, ver string, code uint, want ...string) {
	t.Helper()
	list := n.confList(t, ver)
	c := newContainer(t, newCNI(t), list)
	_, err := c.add(t)
	requireCNIError(t, err, code, want...)
	requireNothingLeft(t, d, n.Bridge, c.NS)

	c2 := newContainer(t, nil, nil)
	_, err = execIPAM(t, n, ver, "ADD", c2)
	requireCNIError(t, err, code, want...)
	d.requireNoLeases(t)
}

// TestBadConfigRejected feeds invalid ipam sections through the plugins:
// each is refused with code 7 naming the field, and nothing is allocated.
func TestBadConfigRejected(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)

		t.Run("missing ranges", func(t *testing.T) {
			n := newNet(t, d, false)
			delete(n.IPAM, "ranges")
			requireRejected(t, d, n, ver, 7, "ipam.ranges")
		})

		t.Run("subnet not a network address", func(t *testing.T) {
			n := newNet(t, d, false)
			s := randomSubnet6(t)
			host := s.Addr().Next().String() + "/48"
			n.IPAM["ranges"] = []any{[]any{map[string]any{"subnet": host, "blockSize": 64}}}
			requireRejected(t, d, n, ver, 7, "ipam.ranges[0][0].subnet", host)
		})

		t.Run("IPv4 block size for an IPv6 /48", func(t *testing.T) {
			n := newNet(t, d, false)
			n.IPAM["ranges"] = []any{[]any{map[string]any{"subnet": randomSubnet6(t).String(), "blockSize": 24}}}
			requireRejected(t, d, n, ver, 7, "ipam.ranges[0][0].blockSize")
		})

		t.Run("overlapping ranges", func(t *testing.T) {
			n := newNet(t, d, false)
			s := randomSubnet6(t)
			inner := s.Addr().String() + "/56"
			n.IPAM["ranges"] = []any{
				[]any{map[string]any{"subnet": s.String(), "blockSize": 64}},
				[]any{map[string]any{"subnet": inner, "blockSize": 64}},
			}
			requireRejected(t, d, n, ver, 7, "ipam.ranges", s.String(), inner)
		})

		t.Run("ipamd not running", func(t *testing.T) {
			n := newNet(t, d, true)
			dir, err := os.MkdirTemp("", "v6t-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			sock := filepath.Join(dir, "no-ipamd.sock")
			n.IPAM["socket"] = sock
			requireRejected(t, d, n, ver, 11, sock)
		})

		t.Run("same network, different pool", func(t *testing.T) {
			n := newNet(t, d, false)
			first := n.subnet(t, 0)
			c1 := newContainer(t, newCNI(t), n.confList(t, ver))
			r1 := c1.mustAdd(t)

			other := randomSubnet6(t)
			for other == first {
				other = randomSubnet6(t)
			}
			n.IPAM["ranges"] = []any{[]any{map[string]any{"subnet": other.String(), "blockSize": 64}}}
			c2 := newContainer(t, newCNI(t), n.confList(t, ver))
			_, err := c2.add(t)
			requireCNIError(t, err, 7, first.String(), other.String())
			if v := vethsInto(t, c2.NS); len(v) != 0 {
				t.Errorf("veths left on the host for the refused ADD: %v", v)
			}
			if p := bridgePorts(t, n.Bridge); len(p) != 1 {
				t.Errorf("ports of bridge %s: %v, want only %s's", n.Bridge, p, c1.ID)
			}
			if got := linksIn(t, c2.NS); len(got) != 1 {
				t.Errorf("links in the refused container's netns: %v, want only lo", got)
			}
			if ls := d.leases(t); len(ls) != len(r1.IPs) {
				t.Errorf("ipamd holds %v, want only %s's addresses", ls, c1.ID)
			}
			requireLeased(t, d, c1, r1)
			if err := c1.del(t); err != nil {
				t.Fatalf("DEL %s: %v", c1.ID, err)
			}
			d.requireNoLeases(t)
		})
	})
}

// TestBadInvocationRejected execs the plugins by hand with broken input:
// malformed JSON is code 6, a missing CNI_CONTAINERID or CNI_IFNAME code 4
// naming the variable; nothing is allocated and no veth is left.
func TestBadInvocationRejected(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		for _, plugin := range []string{"bridge-v6", "ipam-v6"} {
			t.Run(plugin, func(t *testing.T) {
				n := newNet(t, d, true)
				good := n.pluginConfBytes(t, ver)
				cases := []struct {
					name  string
					drop  string // env variable left out
					stdin []byte
					code  uint
					want  []string
				}{
					{name: "malformed JSON", stdin: good[:len(good)/2], code: 6},
					{name: "not JSON at all", stdin: []byte("cniVersion: " + ver), code: 6},
					{name: "missing CNI_CONTAINERID", drop: "CNI_CONTAINERID", stdin: good, code: 4, want: []string{"CNI_CONTAINERID"}},
					{name: "missing CNI_IFNAME", drop: "CNI_IFNAME", stdin: good, code: 4, want: []string{"CNI_IFNAME"}},
				}
				for _, tc := range cases {
					t.Run(tc.name, func(t *testing.T) {
						netns := newNetns(t)
						env := map[string]string{
							"CNI_COMMAND":     "ADD",
							"CNI_CONTAINERID": "v6t-" + randomHex(t, 8),
							"CNI_NETNS":       netns.Path(),
							"CNI_IFNAME":      "eth0",
							"CNI_PATH":        binDir,
						}
						delete(env, tc.drop)
						var envList []string
						for k, v := range env {
							envList = append(envList, k+"="+v)
						}
						r := execPluginRaw(t, plugin, envList, tc.stdin)
						requireExecCNIError(t, r, tc.code, tc.want...)
						requireNothingLeft(t, d, n.Bridge, netns)
					})
				}
			})
		}
	})
}

// TestPluginsDoNotLinkHeavyDependencies keeps the plugins small: they are
// exec'd per container and must not link etcd, gRPC or GoBGP.
func TestPluginsDoNotLinkHeavyDependencies(t *testing.T) {
	forbidden := []string{"go.etcd.io/", "google.golang.org/grpc", "github.com/osrg/gobgp"}
	for _, pkg := range []string{"./plugins/bridge-v6", "./plugins/ipam-v6", "./plugins/pd-ipam"} {
		t.Run(strings.TrimPrefix(pkg, "./plugins/"), func(t *testing.T) {
			cmd := exec.CommandContext(testCtx(t), "go", "list", "-deps", pkg)
			cmd.Dir = repoRoot
			out, err := cmd.Output()
			if err != nil {
				var stderr []byte
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = ee.Stderr
				}
				t.Fatalf("go list -deps %s: %v: %s", pkg, err, stderr)
			}
			var bad []string
			for dep := range strings.Lines(string(out)) {
				dep = strings.TrimSpace(dep)
				for _, f := range forbidden {
					if strings.HasPrefix(dep, f) {
						bad = append(bad, dep)
					}
				}
			}
			if len(bad) > 0 {
				t.Errorf("%s links %d forbidden packages:\n%s", pkg, len(bad), strings.Join(bad, "\n"))
			}
		})
	}
}

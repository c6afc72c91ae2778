package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/link"
)

// fakeIPAM is a stand-in IPAM plugin: it logs every call and answers ADD
// with the result in $FAKE_IPAM_RESULT (or an error when $FAKE_IPAM_FAIL is
// set, or exits 1 for STATUS when $FAKE_IPAM_DOWN is set, or fails DEL
// when $FAKE_IPAM_DEL_FAIL is set).
const fakeIPAM = `#!/bin/sh
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> "$FAKE_IPAM_LOG"
cat > /dev/null
case "$CNI_COMMAND" in
ADD)
	if [ -n "$FAKE_IPAM_FAIL" ]; then
		echo '{"cniVersion":"1.0.0","code":11,"msg":"fake ipam: try again later"}'
		exit 1
	fi
	cat "$FAKE_IPAM_RESULT" ;;
DEL)
	if [ -n "$FAKE_IPAM_DEL_FAIL" ]; then
		echo '{"cniVersion":"1.0.0","code":11,"msg":"fake ipam: DEL failed, lease kept"}'
		exit 1
	fi ;;
STATUS)
	if [ -n "$FAKE_IPAM_DOWN" ]; then
		echo '{"cniVersion":"1.1.0","code":50,"msg":"fake ipam: ipamd down"}'
		exit 1
	fi ;;
VERSION)
	echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
esac
exit 0
`

const fakeIPAMResult = `{
  "cniVersion": "1.0.0",
  "ips": [
    {"address": "2001:db8:cafe:3::2/64", "gateway": "2001:db8:cafe:3::1"},
    {"address": "10.244.5.2/24", "gateway": "10.244.5.1"}
  ],
  "routes": [{"dst": "2001:db8:beef::/48"}],
  "dns": {"nameservers": ["2001:db8:cafe:a::e"], "search": ["example.com"]}
}`

type testEnv struct {
	host, cont ns.NetNS
	bridge     string
	log        string
}

// setup makes a "host" netns (the plugin's host side runs there, so the
// real host is never touched), a container netns and the fake IPAM on PATH
// (testutils passes PATH as CNI_PATH).
func setup(t *testing.T) *testEnv {
	t.Helper()
	linktest.RequireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fake-ipam"), []byte(fakeIPAM), 0o755); err != nil {
		t.Fatal(err)
	}
	resultFile := filepath.Join(dir, "result.json")
	if err := os.WriteFile(resultFile, []byte(fakeIPAMResult), 0o644); err != nil {
		t.Fatal(err)
	}
	env := &testEnv{
		host:   linktest.NewNS(t),
		cont:   linktest.NewNS(t),
		bridge: fmt.Sprintf("v6tb%d", os.Getpid()%100000),
		log:    filepath.Join(dir, "ipam.log"),
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	t.Setenv("FAKE_IPAM_LOG", env.log)
	t.Setenv("FAKE_IPAM_RESULT", resultFile)
	return env
}

func (e *testEnv) conf(cniVersion string, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"v6net","type":"bridge-v6","bridge":%q,"isDefaultGateway":true,"mtu":1400%s,"ipam":{"type":"fake-ipam"}}`,
		cniVersion, e.bridge, extra))
}

func (e *testEnv) ipamCalls(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(e.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

func (e *testEnv) args(containerID string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: containerID, Netns: e.cont.Path(), IfName: "eth0", StdinData: conf}
}

// inHost runs f in the host netns.
func (e *testEnv) inHost(t *testing.T, f func() error) error {
	t.Helper()
	return e.host.Do(func(ns.NetNS) error { return f() })
}

// noAttachmentLeft fails t if the host veth of containerID or eth0 in the
// container is still there: what a failed ADD must not leave (after is
// what failed, for the message).
func (e *testEnv) noAttachmentLeft(t *testing.T, containerID, after string) {
	t.Helper()
	_ = e.inHost(t, func() error {
		if ok, _ := link.LinkExists(link.HostVethName(containerID, "eth0")); ok {
			t.Errorf("host veth left after %s", after)
		}
		return nil
	})
	_ = e.cont.Do(func(ns.NetNS) error {
		if ok, _ := link.LinkExists("eth0"); ok {
			t.Errorf("eth0 left in the container after %s", after)
		}
		return nil
	})
}

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	var cniErr *types.Error
	if !errors.As(err, &cniErr) {
		t.Fatalf("error %v (%T) is not a *types.Error", err, err)
	}
	return cniErr.Code
}

func TestAddCheckDel(t *testing.T) {
	for _, ver := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			e := setup(t)
			const containerID = "c0ffee00c0ffee00"
			args := e.args(containerID, e.conf(ver, ""))

			var raw []byte
			if err := e.inHost(t, func() error {
				var err error
				_, raw, err = testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
				return err
			}); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var versioned struct {
				CNIVersion string `json:"cniVersion"`
			}
			if err := json.Unmarshal(raw, &versioned); err != nil || versioned.CNIVersion != ver {
				t.Fatalf("result cniVersion = %q (err %v), want %q: %s", versioned.CNIVersion, err, ver, raw)
			}
			res := mustResult(t, ver, raw)

			hostVeth := link.HostVethName(containerID, "eth0")
			if len(res.Interfaces) != 3 ||
				res.Interfaces[0].Name != e.bridge || res.Interfaces[1].Name != hostVeth ||
				res.Interfaces[2].Name != "eth0" || res.Interfaces[2].Sandbox != e.cont.Path() {
				t.Fatalf("interfaces = %+v", res.Interfaces)
			}
			if want := link.ContainerMAC("v6net", containerID, "eth0").String(); res.Interfaces[2].Mac != want {
				t.Errorf("container mac = %s, want %s", res.Interfaces[2].Mac, want)
			}
			for _, ip := range res.IPs {
				if ip.Interface == nil || *ip.Interface != 2 {
					t.Errorf("ip %s interface = %v, want 2", ip.Address.String(), ip.Interface)
				}
			}
			routes := map[string]bool{}
			for _, r := range res.Routes {
				routes[r.Dst.String()+" "+r.GW.String()] = true
			}
			for _, want := range []string{"::/0 2001:db8:cafe:3::1", "0.0.0.0/0 10.244.5.1", "2001:db8:beef::/48 2001:db8:cafe:3::1"} {
				if !routes[want] {
					t.Errorf("result routes %v lack %s", routes, want)
				}
			}
			if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "2001:db8:cafe:a::e" {
				t.Errorf("dns = %+v", res.DNS)
			}

			// The host side: bridge with both gateways, forwarding on.
			if err := e.inHost(t, func() error {
				br, err := link.BridgeByName(e.bridge)
				if err != nil {
					return err
				}
				if br.MTU != 1400 {
					t.Errorf("bridge MTU = %d, want 1400", br.MTU)
				}
				for key, want := range map[string]string{"net/ipv6/conf/all/forwarding": "1", "net/ipv4/ip_forward": "1"} {
					if got, _ := sysctl.Sysctl(key); got != want {
						t.Errorf("%s = %s, want %s", key, got, want)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}

			// CHECK with the result as prevResult.
			checkConf := e.conf(ver, `,"prevResult":`+string(raw))
			checkArgs := e.args(containerID, checkConf)
			check := func() error {
				return e.inHost(t, func() error {
					return testutils.CmdCheckWithArgs(checkArgs, func() error { return cmdCheck(checkArgs) })
				})
			}
			if err := check(); err != nil {
				t.Fatalf("CHECK after ADD: %v", err)
			}
			if !strings.Contains(e.ipamCalls(t), "CHECK "+containerID) {
				t.Errorf("CHECK did not call IPAM CHECK: %q", e.ipamCalls(t))
			}
			// Remove the IPv6 address: CHECK names it.
			if err := e.cont.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					return err
				}
				addr, _ := netlink.ParseAddr("2001:db8:cafe:3::2/64")
				return netlink.AddrDel(l, addr)
			}); err != nil {
				t.Fatal(err)
			}
			err := check()
			want := "address 2001:db8:cafe:3::2/64 missing on eth0 in " + e.cont.Path()
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("CHECK without the address: err = %v, want %q", err, want)
			}

			// DEL, twice: the second finds nothing and succeeds.
			for i := range 2 {
				if err := e.inHost(t, func() error {
					return testutils.CmdDelWithArgs(args, func() error { return cmdDel(args) })
				}); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if n := strings.Count(e.ipamCalls(t), "DEL "+containerID); n != 2 {
				t.Errorf("IPAM DEL called %d times, want 2", n)
			}
			if err := e.inHost(t, func() error {
				if ok, _ := link.LinkExists(hostVeth); ok {
					t.Errorf("host veth %s left after DEL", hostVeth)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := e.cont.Do(func(ns.NetNS) error {
				if ok, _ := link.LinkExists("eth0"); ok {
					t.Error("eth0 left in the container after DEL")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// mustResult parses a result of any spec version into the current type.
func mustResult(t *testing.T, ver string, raw []byte) *current.Result {
	t.Helper()
	r, err := version.NewResult(ver, raw)
	if err != nil {
		t.Fatalf("parse %s result: %v", ver, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	return res
}

func TestAddIfnameExistsAllocatesNothing(t *testing.T) {
	e := setup(t)
	if err := e.cont.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", TxQLen: -1}, PeerName: "eth0peer"})
	}); err != nil {
		t.Fatal(err)
	}
	args := e.args("abc123", e.conf("1.1.0", ""))
	err := e.inHost(t, func() error {
		_, _, err := testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	})
	if err == nil {
		t.Fatal("ADD with an existing CNI_IFNAME succeeded")
	}
	if code := cniCode(t, err); code != types.ErrInvalidEnvironmentVariables {
		t.Errorf("code = %d, want %d", code, types.ErrInvalidEnvironmentVariables)
	}
	if want := `CNI_IFNAME "eth0" already exists in netns ` + e.cont.Path(); !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
	if calls := e.ipamCalls(t); calls != "" {
		t.Errorf("IPAM was called: %q", calls)
	}
}

func TestAddFailureRollsBack(t *testing.T) {
	e := setup(t)
	// A non-bridge link where the bridge should be makes ADD fail (IPAM
	// runs meanwhile): the config is at fault (7), and the link is left as
	// it was.
	if err := e.inHost(t, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: e.bridge, TxQLen: -1}, PeerName: e.bridge + "p"})
	}); err != nil {
		t.Fatal(err)
	}
	state := func() (s string) {
		_ = e.inHost(t, func() error {
			l, err := netlink.LinkByName(e.bridge)
			if err != nil {
				t.Fatal(err)
			}
			a := l.Attrs()
			s = fmt.Sprintf("flags %v mtu %d master %d", a.Flags, a.MTU, a.MasterIndex)
			return nil
		})
		return s
	}
	before := state()
	const containerID = "deadbeef"
	args := e.args(containerID, e.conf("1.1.0", ""))
	err := e.inHost(t, func() error {
		_, _, err := testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	})
	if err == nil {
		t.Fatal("ADD succeeded over a non-bridge link")
	}
	if code := cniCode(t, err); code != types.ErrInvalidNetworkConfig {
		t.Errorf("code = %d, want %d", code, types.ErrInvalidNetworkConfig)
	}
	for _, want := range []string{"bridge: ", e.bridge, "veth"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ADD err = %v, want it to contain %q", err, want)
		}
	}
	if calls := e.ipamCalls(t); !strings.Contains(calls, "ADD "+containerID) || !strings.Contains(calls, "DEL "+containerID) {
		t.Errorf("IPAM calls %q: want ADD then DEL", calls)
	}
	e.noAttachmentLeft(t, containerID, "a failed ADD")
	if after := state(); after != before {
		t.Errorf("link %s changed by the refused ADD: %s, was %s", e.bridge, after, before)
	}
}

func TestAddIPAMFailure(t *testing.T) {
	e := setup(t)
	t.Setenv("FAKE_IPAM_FAIL", "1")
	args := e.args("feed", e.conf("1.1.0", ""))
	err := e.inHost(t, func() error {
		_, _, err := testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	})
	if err == nil {
		t.Fatal("ADD succeeded with a failing IPAM")
	}
	if code := cniCode(t, err); code != types.ErrTryAgainLater {
		t.Errorf("code = %d, want IPAM's %d passed through", code, types.ErrTryAgainLater)
	}
	// The veth is made while IPAM runs: a refused ADD must remove it, and
	// must not release what IPAM never allocated.
	e.noAttachmentLeft(t, "feed", "IPAM refused the ADD")
	if calls := e.ipamCalls(t); strings.Contains(calls, "DEL") {
		t.Errorf("IPAM calls %q: DEL after a failed IPAM ADD", calls)
	}
}

func TestDelWithoutNetns(t *testing.T) {
	e := setup(t)
	for _, netnsPath := range []string{"", "/run/netns/v6cni-test-gone-" + fmt.Sprint(os.Getpid())} {
		args := &skel.CmdArgs{ContainerID: "gone", Netns: netnsPath, IfName: "eth0", StdinData: e.conf("1.1.0", "")}
		if err := e.inHost(t, func() error {
			return testutils.CmdDelWithArgs(args, func() error { return cmdDel(args) })
		}); err != nil {
			t.Errorf("DEL with netns %q: %v", netnsPath, err)
		}
	}
	if n := strings.Count(e.ipamCalls(t), "DEL gone"); n != 2 {
		t.Errorf("IPAM DEL called %d times, want 2", n)
	}
}

func TestCheckNeedsPrevResult(t *testing.T) {
	e := setup(t)
	args := e.args("c", e.conf("1.1.0", ""))
	err := testutils.CmdCheckWithArgs(args, func() error { return cmdCheck(args) })
	if err == nil || cniCode(t, err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "required prevResult missing") {
		t.Errorf("CHECK without prevResult: err = %v", err)
	}
}

func TestStatusAndGCForwardToIPAM(t *testing.T) {
	e := setup(t)
	args := &skel.CmdArgs{StdinData: e.conf("1.1.0", "")}
	if err := testutils.CmdStatus(func() error { return cmdStatus(args) }); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	t.Setenv("FAKE_IPAM_DOWN", "1")
	err := testutils.CmdStatus(func() error { return cmdStatus(args) })
	if err == nil || cniCode(t, err) != 50 {
		t.Errorf("STATUS with IPAM down: err = %v, want code 50", err)
	}
	t.Setenv("CNI_COMMAND", "GC")
	t.Setenv("CNI_PATH", os.Getenv("PATH"))
	gcArgs := &skel.CmdArgs{StdinData: e.conf("1.1.0", `,"cni.dev/valid-attachments":[]`)}
	if err := cmdGC(gcArgs); err != nil {
		t.Errorf("GC: %v", err)
	}
	calls := e.ipamCalls(t)
	if strings.Count(calls, "STATUS") != 2 || !strings.Contains(calls, "GC") {
		t.Errorf("IPAM calls %q: want STATUS twice and GC", calls)
	}
}

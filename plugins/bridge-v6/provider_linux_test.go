package main

import (
	"bytes"
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
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// The provider segment of the tests: an upstream router netns holding a
// bridge (the segment) with the router's address, the node's uplink (in
// the test's "host" netns) and a host of the segment as ports.
const (
	segPrefix   = "2001:db8:22::/64"
	routerAddr  = "2001:db8:22::1"
	nodeAddr    = "2001:db8:22::100"
	segHostAddr = "2001:db8:22::200"
	// beyondPrefix is routed by a static route on the node's uplink: the
	// test checks it moves to the bridge.
	beyondPrefix = "2001:db8:99::/48"
)

// providerIPAM answers ADD with $PROVIDER_IPAM_DIR/<containerID>.json, so
// that concurrent ADDs get different addresses, and logs every call.
const providerIPAM = `#!/bin/sh
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> "$PROVIDER_IPAM_DIR/log"
cat > /dev/null
case "$CNI_COMMAND" in
ADD) cat "$PROVIDER_IPAM_DIR/$CNI_CONTAINERID.json" ;;
VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
esac
exit 0
`

type providerLab struct {
	*testEnv
	router, segHost ns.NetNS
	seg             string // the segment's bridge, in router
	uplink          string // the node's uplink, in host
	ipamDir         string
}

// newProviderLab builds the segment and the node's uplink, with the
// node's address and a static route on it, as a node's eth1 would have.
func newProviderLab(t *testing.T) *providerLab {
	t.Helper()
	l := &providerLab{testEnv: setup(t), router: linktest.NewNS(t), segHost: linktest.NewNS(t)}
	l.ipamDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(filepath.Dir(l.log), "provider-ipam"), []byte(providerIPAM), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROVIDER_IPAM_DIR", l.ipamDir)
	l.seg = linktest.Name("seg")
	l.uplink = linktest.Name("upl")
	link.ProviderLockDir = t.TempDir()

	linktest.Bridge(t, l.router, l.seg)
	linktest.Do(t, l.router, func() error { return addAddr(l.seg, routerAddr+"/64") })
	linktest.Attach(t, l.router, l.seg, linktest.Name("rn"), l.host, l.uplink,
		net.HardwareAddr{0x02, 0x00, 0x5e, 0x22, 0x01, 0x00}, nil)
	linktest.Attach(t, l.router, l.seg, linktest.Name("rh"), l.segHost, "eth0",
		net.HardwareAddr{0x02, 0x00, 0x5e, 0x22, 0x02, 0x00}, nil)
	linktest.Do(t, l.segHost, func() error {
		if err := addAddr("eth0", segHostAddr+"/64"); err != nil {
			return err
		}
		return addRoute("eth0", "::/0", routerAddr)
	})
	linktest.Do(t, l.host, func() error {
		if err := addAddr(l.uplink, nodeAddr+"/64"); err != nil {
			return err
		}
		return addRoute(l.uplink, beyondPrefix, routerAddr)
	})
	return l
}

func addAddr(ifname, cidr string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	a.Flags = unix.IFA_F_NODAD
	return netlink.AddrAdd(l, a)
}

func addRoute(ifname, dst, gw string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		return err
	}
	return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: d, Gw: net.ParseIP(gw)})
}

// conf is a provider network config; provider holds extra keys of the
// provider object, extra extra top-level keys.
func (l *providerLab) conf(ver, provider, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"v6net","type":"bridge-v6","bridge":%q%s,"provider":{"master":%q%s},"ipam":{"type":"provider-ipam"}}`,
		ver, l.bridge, extra, l.uplink, provider))
}

// gatewayConf is conf with the router configured as the gateway.
func (l *providerLab) gatewayConf(ver string) []byte {
	return l.conf(ver, `,"gateway":"`+routerAddr+`"`, "")
}

// ipamAnswers makes the IPAM answer containerID's ADD with addr/64 (and a
// gateway of its own, which a provider network must ignore).
func (l *providerLab) ipamAnswers(t *testing.T, containerID string, addr netip.Addr) {
	t.Helper()
	res := fmt.Sprintf(`{"cniVersion":"1.0.0","ips":[{"address":"%s/64","gateway":"2001:db8:22::fffe"}]}`, addr)
	if err := os.WriteFile(filepath.Join(l.ipamDir, containerID+".json"), []byte(res), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (l *providerLab) ipamLog(t *testing.T) string {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(l.ipamDir, "log"))
	return string(b)
}

// add runs ADD in process in the host netns and returns the raw result.
func (l *providerLab) add(t *testing.T, args *skel.CmdArgs) ([]byte, error) {
	t.Helper()
	var raw []byte
	err := l.inHost(t, func() error {
		var err error
		_, raw, err = testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	})
	return raw, err
}

// startRadvd runs radvd on the segment's bridge: RAs every 3–4 s, a
// solicited one at once, default router lifetime 30 s, the segment's
// prefix (A flag), RDNSS and DNSSL; flags adds interface options
// ("AdvManagedFlag on;").
func (l *providerLab) startRadvd(t *testing.T, flags string) {
	t.Helper()
	bin := linktest.RequireCommand(t, "radvd", "radvd")
	dir := t.TempDir()
	conf := fmt.Sprintf(`interface %s {
  AdvSendAdvert on;
  MinRtrAdvInterval 3;
  MaxRtrAdvInterval 4;
  AdvDefaultLifetime 30;
  %s
  prefix %s { AdvOnLink on; AdvAutonomous on; };
  RDNSS 2001:db8:22::53 {};
  DNSSL example.net {};
};
`, l.seg, flags, segPrefix)
	if err := os.WriteFile(filepath.Join(dir, "radvd.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	linktest.Start(t, l.router, bin, "-n", "-m", "stderr", "-C", filepath.Join(dir, "radvd.conf"), "-p", filepath.Join(dir, "radvd.pid"))
}

// assertNodeReachable: the node's address, now on the bridge, answers the
// router, and the node's static route went with it.
func (l *providerLab) assertUplinkMoved(t *testing.T) {
	t.Helper()
	linktest.Do(t, l.host, func() error {
		up, err := netlink.LinkByName(l.uplink)
		if err != nil {
			return err
		}
		br, err := netlink.LinkByName(l.bridge)
		if err != nil {
			return err
		}
		if up.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("uplink %s master index %d, want bridge %s (%d)", l.uplink, up.Attrs().MasterIndex, l.bridge, br.Attrs().Index)
		}
		if up.Attrs().HardwareAddr.String() != br.Attrs().HardwareAddr.String() {
			t.Errorf("bridge MAC %s, want the uplink's %s", br.Attrs().HardwareAddr, up.Attrs().HardwareAddr)
		}
		if !hasAddr(t, br, nodeAddr) {
			t.Errorf("node address %s not on bridge %s", nodeAddr, l.bridge)
		}
		if hasAddr(t, up, nodeAddr) {
			t.Errorf("node address %s still on uplink %s", nodeAddr, l.uplink)
		}
		routes, err := netlink.RouteList(br, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Dst != nil && r.Dst.String() == beyondPrefix && r.Gw.String() == routerAddr
		}) {
			t.Errorf("route %s via %s not moved to bridge %s: %v", beyondPrefix, routerAddr, l.bridge, routes)
		}
		v, err := sysctl.Sysctl("net/ipv6/conf/" + l.uplink + "/accept_ra")
		if err != nil || v != "0" {
			t.Errorf("uplink accept_ra = %q (%v), want 0", v, err)
		}
		return nil
	})
	if err := ping6(l.router, nodeAddr, 10*time.Second); err != nil {
		t.Errorf("node address %s after the uplink moved: %v", nodeAddr, err)
	}
}

func hasAddr(t *testing.T, l netlink.Link, addr string) bool {
	t.Helper()
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.String() == addr })
}

// cniVersions are the versions the provider tests run with; CHECK from
// 0.4.0 on.
var cniVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func TestProviderUplinkAndStatic(t *testing.T) {
	for _, ver := range cniVersions {
		t.Run(ver, func(t *testing.T) {
			l := newProviderLab(t)
			const id = "9a0f1de000000001"
			want := netip.MustParseAddr("2001:db8:22::10")
			l.ipamAnswers(t, id, want)
			args := l.args(id, l.gatewayConf(ver))
			raw, err := l.add(t, args)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			res := mustResult(t, ver, raw)
			if len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != want.String() || res.IPs[0].Gateway.String() != routerAddr {
				t.Errorf("result IPs %+v, want %s via gateway %s", res.IPs, want, routerAddr)
			}
			if !slices.ContainsFunc(res.Routes, func(r *types.Route) bool { return r.Dst.String() == "::/0" && r.GW.String() == routerAddr }) {
				t.Errorf("result routes %v lack ::/0 via %s", res.Routes, routerAddr)
			}
			l.assertUplinkMoved(t)
			// No v6cni gateway on the bridge, no forwarding.
			linktest.Do(t, l.host, func() error {
				br, err := netlink.LinkByName(l.bridge)
				if err != nil {
					return err
				}
				addrs, _ := netlink.AddrList(br, netlink.FAMILY_V6)
				for _, a := range addrs {
					if !a.IP.IsLinkLocalUnicast() && a.IP.String() != nodeAddr {
						t.Errorf("bridge has address %s", a.IPNet)
					}
				}
				if v, _ := sysctl.Sysctl("net/ipv6/conf/all/forwarding"); v != "0" {
					t.Errorf("forwarding = %s, want 0", v)
				}
				return nil
			})
			linktest.Do(t, l.cont, func() error {
				for key, want := range map[string]string{
					"net/ipv6/conf/eth0/accept_dad":              "1",
					"net/ipv6/conf/eth0/optimistic_dad":          "1",
					"net/ipv6/conf/eth0/use_optimistic":          "1",
					"net/ipv6/conf/eth0/accept_ra":               "0",
					"net/ipv6/neigh/eth0/base_reachable_time_ms": "500",
					"net/ipv6/neigh/eth0/delay_first_probe_time": "1",
					"net/ipv6/neigh/eth0/retrans_time_ms":        "100",
					"net/ipv6/neigh/eth0/ucast_solicit":          "3",
					"net/ipv6/neigh/eth0/mcast_solicit":          "3",
				} {
					if v, err := sysctl.Sysctl(key); err != nil || v != want {
						t.Errorf("%s = %q (%v), want %s", key, v, err, want)
					}
				}
				return nil
			})
			for _, dst := range []string{routerAddr, segHostAddr} {
				if err := ping6(l.cont, dst, 10*time.Second); err != nil {
					t.Errorf("container → %s: %v", dst, err)
				}
			}
			if ver != "0.3.1" {
				args.StdinData = withPrevResult(t, l.gatewayConf(ver), raw)
				if err := l.inHost(t, func() error { return testutils.CmdCheckWithArgs(args, func() error { return cmdCheck(args) }) }); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := l.inHost(t, func() error { return testutils.CmdDelWithArgs(args, func() error { return cmdDel(args) }) }); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			l.noAttachmentLeft(t, id, "DEL")
			// The bridge and its uplink serve other containers: they stay.
			l.assertUplinkMoved(t)

			// A second ADD on the set-up bridge finds it so.
			l.ipamAnswers(t, "9a0f1de000000002", netip.MustParseAddr("2001:db8:22::11"))
			if _, err := l.add(t, l.args("9a0f1de000000002", l.gatewayConf(ver))); err != nil {
				t.Fatalf("second ADD: %v", err)
			}
			l.assertUplinkMoved(t)
		})
	}
}

func TestProviderCheckUplink(t *testing.T) {
	l := newProviderLab(t)
	const id = "9a0f1de000000003"
	l.ipamAnswers(t, id, netip.MustParseAddr("2001:db8:22::12"))
	args := l.args(id, l.gatewayConf("1.1.0"))
	raw, err := l.add(t, args)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	args.StdinData = withPrevResult(t, l.gatewayConf("1.1.0"), raw)
	check := func() error {
		return l.inHost(t, func() error { return testutils.CmdCheckWithArgs(args, func() error { return cmdCheck(args) }) })
	}
	if err := check(); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	linktest.Do(t, l.host, func() error {
		up, err := netlink.LinkByName(l.uplink)
		if err != nil {
			return err
		}
		return netlink.LinkSetNoMaster(up)
	})
	err = check()
	if err == nil || !strings.Contains(err.Error(), l.uplink) || !strings.Contains(err.Error(), l.bridge) {
		t.Errorf("CHECK with the uplink out of the bridge: %v, want an error naming %s and %s", err, l.uplink, l.bridge)
	}
}

func TestProviderLearnedRouter(t *testing.T) {
	for _, ver := range cniVersions {
		t.Run(ver, func(t *testing.T) {
			l := newProviderLab(t)
			l.startRadvd(t, "")
			// The node learns its default route from the router on
			// its uplink before the uplink moves.
			linktest.Eventually(t, 15*time.Second, 50*time.Millisecond, "node's RA default route on the uplink", func() (bool, string) {
				return l.raDefault(t, l.uplink), "none yet"
			})
			const id = "9a0f1de000000004"
			// IPAM's dns too: the RA's is merged into it.
			res := `{"cniVersion":"1.0.0","ips":[{"address":"2001:db8:22::13/64"}],"dns":{"nameservers":["2001:db8:22::54"],"search":["ipam.example"]}}`
			if err := os.WriteFile(filepath.Join(l.ipamDir, id+".json"), []byte(res), 0o644); err != nil {
				t.Fatal(err)
			}
			conf := l.conf(ver, "", "")
			args := l.args(id, conf)
			raw, err := l.add(t, args)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			result := mustResult(t, ver, raw)
			if len(result.IPs) != 1 || result.IPs[0].Gateway != nil {
				t.Errorf("result IPs %+v, want one without a gateway (learned)", result.IPs)
			}
			assertDNS(t, result, []string{"2001:db8:22::54", "2001:db8:22::53"}, []string{"ipam.example", "example.net"})
			l.assertUplinkMoved(t)
			// The bridge relearns the node's default route.
			linktest.Eventually(t, 15*time.Second, 50*time.Millisecond, "node's RA default route on the bridge", func() (bool, string) {
				return l.raDefault(t, l.bridge), "none yet"
			})
			linktest.Do(t, l.cont, func() error {
				if v, _ := sysctl.Sysctl("net/ipv6/conf/eth0/accept_ra"); v != "1" {
					t.Errorf("container accept_ra = %s, want 1", v)
				}
				if v, _ := sysctl.Sysctl("net/ipv6/conf/eth0/autoconf"); v != "0" {
					t.Errorf("container autoconf = %s, want 0 (static address)", v)
				}
				return nil
			})
			if !l.raDefaultIn(t, l.cont, "eth0") {
				t.Error("container has no RA default route after ADD")
			}
			for _, dst := range []string{routerAddr, segHostAddr} {
				if err := ping6(l.cont, dst, 10*time.Second); err != nil {
					t.Errorf("container → %s: %v", dst, err)
				}
			}
			if ver != "0.3.1" {
				args.StdinData = withPrevResult(t, conf, raw)
				if err := l.inHost(t, func() error { return testutils.CmdCheckWithArgs(args, func() error { return cmdCheck(args) }) }); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
		})
	}
}

// assertDNS checks the result's dns: IPAM's, then radvd's RDNSS and
// DNSSL (RFC 8106) the plugin read from the RA the container received.
func assertDNS(t *testing.T, res *current.Result, servers, search []string) {
	t.Helper()
	if !slices.Equal(res.DNS.Nameservers, servers) || !slices.Equal(res.DNS.Search, search) {
		t.Errorf("result dns %+v, want nameservers %v and search %v", res.DNS, servers, search)
	}
}

// raDefault reports whether ifname in the host netns has an RA default route.
func (l *providerLab) raDefault(t *testing.T, ifname string) bool {
	return l.raDefaultIn(t, l.host, ifname)
}

func (l *providerLab) raDefaultIn(t *testing.T, netns ns.NetNS, ifname string) bool {
	t.Helper()
	found := false
	linktest.Do(t, netns, func() error {
		lk, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		routes, err := netlink.RouteList(lk, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		found = slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Protocol == unix.RTPROT_RA && (r.Dst == nil || r.Dst.String() == "::/0")
		})
		return nil
	})
	return found
}

// eui64 is the address an eui64 IPAM and the container's SLAAC agree on.
func eui64(containerID string) netip.Addr {
	return macaddr.EUI64(netip.MustParsePrefix(segPrefix), macaddr.Derive("v6net", containerID, "eth0"))
}

func TestProviderSelfConfiguringModes(t *testing.T) {
	for _, tt := range []struct {
		mode, radvd string
		formed      bool // the container's kernel forms the address (SLAAC)
		gateway     bool // provider.gateway set: the default route, not the RAs'
	}{
		{"slaac", "", true, false},
		{"slaac", "", true, true},
		{"dhcpv6-stateless", "AdvOtherConfigFlag on;", true, false},
		{"dhcpv6-stateful", "AdvManagedFlag on; AdvOtherConfigFlag on;", false, false},
	} {
		for _, ver := range []string{"0.3.1", "1.1.0"} {
			name := tt.mode + "/" + ver
			if tt.gateway {
				name = tt.mode + "+gateway/" + ver
			}
			t.Run(name, func(t *testing.T) {
				l := newProviderLab(t)
				l.startRadvd(t, tt.radvd)
				id := "5e1fc0f000000001"
				want := eui64(id)
				l.ipamAnswers(t, id, want)
				gw := ""
				if tt.gateway {
					gw = `,"gateway":"` + routerAddr + `"`
				}
				conf := l.conf(ver, gw, `,"ipv6Mode":"`+tt.mode+`"`)
				conf = bytes.Replace(conf, []byte(`"type":"provider-ipam"`), []byte(`"type":"provider-ipam","addressing":"eui64"`), 1)
				raw, err := l.add(t, l.args(id, conf))
				if err != nil {
					t.Fatalf("ADD: %v", err)
				}
				res := mustResult(t, ver, raw)
				if len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != want.String() {
					t.Errorf("result IPs %+v, want %s", res.IPs, want)
				}
				if tt.formed {
					// The RA that formed the address carried the DNS.
					assertDNS(t, res, []string{"2001:db8:22::53"}, []string{"example.net"})
				}
				var have bool
				linktest.Do(t, l.cont, func() error {
					lk, err := netlink.LinkByName("eth0")
					if err != nil {
						return err
					}
					have = hasAddr(t, lk, want.String())
					return nil
				})
				if have != tt.formed {
					t.Errorf("address %s in the container: %v, want %v", want, have, tt.formed)
				}
				if got := l.raDefaultIn(t, l.cont, "eth0"); got == tt.gateway {
					t.Errorf("container has an RA default route: %v, want %v", got, !tt.gateway)
				}
				if tt.formed {
					if err := ping6(l.cont, segHostAddr, 10*time.Second); err != nil {
						t.Errorf("container → %s: %v", segHostAddr, err)
					}
				}
				if ver == "0.3.1" {
					return
				}
				args := l.args(id, withPrevResult(t, conf, raw))
				check := func() error {
					return l.inHost(t, func() error { return testutils.CmdCheckWithArgs(args, func() error { return cmdCheck(args) }) })
				}
				if tt.formed {
					if err := check(); err != nil {
						t.Errorf("CHECK: %v", err)
					}
					return
				}
				// dhcpv6-stateful: CHECK fails until the workload's
				// DHCPv6 client has the address (none here: it is
				// added as a client adds it, a /128).
				if err := check(); err == nil || !strings.Contains(err.Error(), want.String()) {
					t.Errorf("CHECK before the DHCPv6 client: %v, want an error naming %s", err, want)
				}
				linktest.Do(t, l.cont, func() error { return addAddr("eth0", want.String()+"/128") })
				if err := check(); err != nil {
					t.Errorf("CHECK once the client has the address: %v", err)
				}
				if err := ping6(l.cont, segHostAddr, 10*time.Second); err != nil {
					t.Errorf("container → %s: %v", segHostAddr, err)
				}
				// ipamd serves nothing on a provider bridge: the
				// plugin's request names no bridge or mode (the fake
				// IPAM here is exec'd; ipamplugin's test covers it).
			})
		}
	}
}

func TestProviderDuplicateAddress(t *testing.T) {
	l := newProviderLab(t)
	const id = "d0b1e0000000001"
	// The segment's host already holds the address IPAM hands out.
	l.ipamAnswers(t, id, netip.MustParseAddr(segHostAddr))
	_, err := l.add(t, l.args(id, l.gatewayConf("1.1.0")))
	if err == nil {
		t.Fatal("ADD of an address another host holds succeeded")
	}
	for _, want := range []string{segHostAddr, l.bridge, l.uplink, "duplicate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	l.noAttachmentLeft(t, id, "the failed ADD")
	if log := l.ipamLog(t); !strings.Contains(log, "DEL "+id) {
		t.Errorf("IPAM not released after the failed ADD: calls %q", log)
	}
	// The segment's host keeps its address.
	if err := ping6(l.router, segHostAddr, 5*time.Second); err != nil {
		t.Errorf("segment host after the failed ADD: %v", err)
	}
}

// TestProviderDuplicateSLAAC: the segment's host holds the EUI-64 address
// the container's kernel forms from the RA: ADD fails at the DAD failure
// (not at the 5 s wait for the address) with the DAD error, which the
// rollback's IPAM DEL names as a duplicate (ipam-v6/pd-ipam), and leaves
// nothing behind.
func TestProviderDuplicateSLAAC(t *testing.T) {
	l := newProviderLab(t)
	l.startRadvd(t, "")
	const id = "d0b1e0000000005"
	want := eui64(id)
	linktest.Do(t, l.segHost, func() error { return addAddr("eth0", want.String()+"/64") })
	l.ipamAnswers(t, id, want)
	conf := l.conf("1.1.0", "", `,"ipv6Mode":"slaac"`)
	conf = bytes.Replace(conf, []byte(`"type":"provider-ipam"`), []byte(`"type":"provider-ipam","addressing":"eui64"`), 1)
	_, err := l.add(t, l.args(id, conf))
	var dad *link.DADError
	if !errors.As(err, &dad) || dad.Addr.Addr() != want || !strings.Contains(err.Error(), "duplicate address detection failed: "+want.String()+"/64") {
		t.Fatalf("ADD of a SLAAC address the segment host holds: %v, want the DAD failure of %s", err, want)
	}
	l.noAttachmentLeft(t, id, "the failed ADD")
	if log := l.ipamLog(t); !strings.Contains(log, "DEL "+id) {
		t.Errorf("IPAM not released after the failed ADD: calls %q", log)
	}
}

// execPlugin runs the bridge-v6 binary in the host netns, as a runtime does.
func (l *providerLab) execPlugin(t *testing.T, command, id string, conf []byte) (string, error) {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+l.host.Path(), "--", pluginBinary(t))
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+id, "CNI_NETNS="+l.cont.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH="+os.Getenv("PATH"))
	cmd.Stdin = bytes.NewReader(conf)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestProviderConcurrentFirstAdds(t *testing.T) {
	l := newProviderLab(t)
	second := linktest.NewNS(t)
	ids := []string{"c0c0000000000001", "c0c0000000000002"}
	l.ipamAnswers(t, ids[0], netip.MustParseAddr("2001:db8:22::21"))
	l.ipamAnswers(t, ids[1], netip.MustParseAddr("2001:db8:22::22"))
	pluginBinary(t)
	// The binary locks in its default directory.
	t.Cleanup(func() { _ = os.Remove(filepath.Join("/run/v6cni", "provider-"+l.bridge+".lock")) })
	var wg sync.WaitGroup
	errs := make([]error, 2)
	outs := make([]string, 2)
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lab := *l
			env := *l.testEnv
			if i == 1 {
				env.cont = second
			}
			lab.testEnv = &env
			outs[i], errs[i] = lab.execPlugin(t, "ADD", id, l.gatewayConf("1.1.0"))
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil {
			t.Errorf("ADD %d: %v: %s", i, errs[i], outs[i])
		}
	}
	l.assertUplinkMoved(t)
	for _, c := range []ns.NetNS{l.cont, second} {
		if err := ping6(c, routerAddr, 10*time.Second); err != nil {
			t.Errorf("container → router: %v", err)
		}
	}
}

// withPrevResult is conf with raw (an ADD result) as its prevResult.
func withPrevResult(t *testing.T, conf, raw []byte) []byte {
	t.Helper()
	i := bytes.LastIndexByte(conf, '}')
	if i < 0 {
		t.Fatalf("conf %s is not an object", conf)
	}
	return append(append(slices.Clone(conf[:i]), `,"prevResult":`+string(raw)+`}`...), conf[i+1:]...)
}

// TestProviderFigures measures ADD on a provider network, N=5 per case
// after a first ADD that set the bridge up, and logs them as
// "PROVIDER-FIGURES" lines. It asserts nothing about time.
func TestProviderFigures(t *testing.T) {
	const n = 5
	l := newProviderLab(t)
	l.startRadvd(t, "")
	warm := "f16000000000000"
	l.ipamAnswers(t, warm, netip.MustParseAddr("2001:db8:22::2f"))
	if _, err := l.add(t, l.args(warm, l.gatewayConf("1.1.0"))); err != nil {
		t.Fatalf("first ADD: %v", err)
	}
	slaacConf := bytes.Replace(l.conf("1.1.0", "", `,"ipv6Mode":"slaac"`),
		[]byte(`"type":"provider-ipam"`), []byte(`"type":"provider-ipam","addressing":"eui64"`), 1)
	cases := []struct {
		name string
		conf []byte
		eui  bool
	}{
		{"static-optimistic-dad", l.gatewayConf("1.1.0"), false},
		{"static-standard-dad", l.conf("1.1.0", `,"gateway":"`+routerAddr+`","optimisticDad":false`, ""), false},
		{"static-router-from-ra", l.conf("1.1.0", "", ""), false},
		{"slaac", slaacConf, true},
	}
	for ci, c := range cases {
		var took []time.Duration
		for i := range n {
			id := fmt.Sprintf("f16%02d%02d00000000", ci, i)
			addr := netip.MustParseAddr(fmt.Sprintf("2001:db8:22::%x", 0x100*(ci+1)+i+0x30))
			if c.eui {
				addr = eui64(id)
			}
			l.ipamAnswers(t, id, addr)
			env := *l.testEnv
			env.cont = linktest.NewNS(t)
			lab := *l
			lab.testEnv = &env
			args := lab.args(id, c.conf)
			start := time.Now()
			if _, err := lab.add(t, args); err != nil {
				t.Fatalf("%s: ADD %d: %v", c.name, i, err)
			}
			took = append(took, time.Since(start))
			if err := lab.inHost(t, func() error { return testutils.CmdDelWithArgs(args, func() error { return cmdDel(args) }) }); err != nil {
				t.Fatalf("%s: DEL %d: %v", c.name, i, err)
			}
		}
		slices.Sort(took)
		t.Logf("PROVIDER-FIGURES ADD %s: median %s (min %s – max %s) N=%d", c.name,
			ms(took[n/2]), ms(took[0]), ms(took[n-1]), n)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// TestProviderDeadRouter measures how long a container pinging its
// configured router takes to notice the router is gone (its neighbour
// entry FAILED), with the NUD timers the plugin sets, N=5.
func TestProviderDeadRouter(t *testing.T) {
	const n = 5
	pingBin := linktest.RequireCommand(t, "ping", "iputils-ping")
	l := newProviderLab(t)
	const id = "dead000000000001"
	l.ipamAnswers(t, id, netip.MustParseAddr("2001:db8:22::40"))
	if _, err := l.add(t, l.args(id, l.gatewayConf("1.1.0"))); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	linktest.Start(t, l.cont, pingBin, "-6", "-n", "-q", "-i", "0.05", routerAddr)
	router := net.ParseIP(routerAddr)
	neighState := func() (int, bool) {
		state, found := 0, false
		linktest.Do(t, l.cont, func() error {
			lk, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			neighs, err := netlink.NeighList(lk.Attrs().Index, netlink.FAMILY_V6)
			if err != nil {
				return err
			}
			for _, nb := range neighs {
				if nb.IP.Equal(router) {
					state, found = nb.State, true
				}
			}
			return nil
		})
		return state, found
	}
	var took []time.Duration
	for range n {
		linktest.Eventually(t, 10*time.Second, 10*time.Millisecond, "router's neighbour entry REACHABLE", func() (bool, string) {
			s, ok := neighState()
			return ok && s == netlink.NUD_REACHABLE, fmt.Sprintf("state %#x found %v", s, ok)
		})
		// The router dies: it no longer answers for its address.
		linktest.Do(t, l.router, func() error {
			lk, err := netlink.LinkByName(l.seg)
			if err != nil {
				return err
			}
			a, _ := netlink.ParseAddr(routerAddr + "/64")
			return netlink.AddrDel(lk, a)
		})
		start := time.Now()
		linktest.Eventually(t, 20*time.Second, 5*time.Millisecond, "router's neighbour entry FAILED", func() (bool, string) {
			s, ok := neighState()
			return !ok || s&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0, fmt.Sprintf("state %#x", s)
		})
		took = append(took, time.Since(start))
		linktest.Do(t, l.router, func() error { return addAddr(l.seg, routerAddr+"/64") })
	}
	slices.Sort(took)
	t.Logf("PROVIDER-FIGURES dead-router detection (router stops answering → its neighbour entry FAILED, container pinging it every 50 ms): median %s (min %s – max %s) N=%d",
		ms(took[n/2]), ms(took[0]), ms(took[n-1]), n)
}

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/internal/testutil/vmtest"
	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// vlanModules are what the VLAN tests need of a kernel that builds them as
// modules (a vmtest guest has no modprobe to load them on demand).
var vlanModules = []string{"bridge", "8021q", "veth"}

// Reachability within a VLAN must work at once; across VLANs it is given
// the time of a neighbour resolution that fails.
const (
	reachTimeout   = 5 * time.Second
	noReachTimeout = 1500 * time.Millisecond
)

// TestVLAN tests the vlan option against a kernel that has VLAN filtering
// bridges: the running one when it has them, else a vmtest guest booted
// with Debian's kernel runs this test (the project's own machines lack
// 802.1Q).
func TestVLAN(t *testing.T) {
	linktest.RequireRoot(t)
	if !vmtest.InGuest() && !vlanFilteringSupported(t) {
		t.Log("this kernel has no VLAN filtering bridges: running TestVLAN in a vmtest guest")
		vmtest.Run(t, vmtest.Config{Run: "^TestVLAN$", Modules: vlanModules})
		return
	}
	for _, ver := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) { testVLANAttachments(t, ver) })
	}
	t.Run("RefusesPortWithoutVLAN", testVLANRefusesPortWithoutVLAN)
	t.Run("ConcurrentAdds", testConcurrentVLANAdds)
}

// vlanFilteringSupported reports whether the running kernel can make a
// VLAN filtering bridge, trying in a netns of its own.
func vlanFilteringSupported(t *testing.T) bool {
	t.Helper()
	var supported bool
	if err := linktest.NewNS(t).Do(func(ns.NetNS) error {
		err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "v6probe0"}, VlanFiltering: new(true)})
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			return nil
		case err != nil:
			return fmt.Errorf("probe for VLAN filtering bridges: %w", err)
		}
		supported = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return supported
}

// vlanEnv is setup with the test binary on PATH as the static test IPAM
// and as bridge-v6.
func vlanEnv(t *testing.T) (*testEnv, string) {
	t.Helper()
	e := setup(t)
	dir := filepath.Dir(e.log)
	linkSelfAs(t, dir, staticIPAMName)
	return e, linkSelfAs(t, dir, pluginName)
}

// vlanAttachment is one container of the VLAN tests: its own netns and
// its config (the static test IPAM returns the address in it).
type vlanAttachment struct {
	id    string
	netns ns.NetNS
	conf  []byte
	raw   []byte // ADD's result
}

func (e *testEnv) vlanAttachment(t *testing.T, ver, id, bridge, extra, addr, gw string) *vlanAttachment {
	t.Helper()
	gwJSON := ""
	if gw != "" {
		gwJSON = fmt.Sprintf(`,"gateway":%q`, gw)
	}
	return &vlanAttachment{
		id:    id,
		netns: linktest.NewNS(t),
		conf: fmt.Appendf(nil, `{"cniVersion":%q,"name":"v6vlan","type":"bridge-v6","bridge":%q%s,"ipam":{"type":%q,"addresses":[{"address":%q%s}]}}`,
			ver, bridge, extra, staticIPAMName, addr, gwJSON),
	}
}

func (a *vlanAttachment) args(conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: a.id, Netns: a.netns.Path(), IfName: "eth0", StdinData: conf}
}

// port is the name of a's host veth, the bridge port.
func (a *vlanAttachment) port() string { return link.HostVethName(a.id, "eth0") }

// addVLAN runs ADD for a (DEL at cleanup) and keeps its result.
func (e *testEnv) addVLAN(t *testing.T, a *vlanAttachment) {
	t.Helper()
	raw, err := e.add(t, a.args(a.conf))
	if err != nil {
		t.Fatalf("ADD %s: %v", a.id, err)
	}
	a.raw = raw
	t.Cleanup(func() { _ = e.del(t, a.args(a.conf)) })
}

// vlansOf is `bridge vlan show dev <name>` in the host netns (for a bridge,
// its own entries).
func (e *testEnv) vlansOf(t *testing.T, name string) string {
	t.Helper()
	var s string
	if err := e.inHost(t, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		all, err := netlink.BridgeVlanList()
		if err != nil {
			return err
		}
		s = link.VLANString(all[int32(l.Attrs().Index)])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// testVLANAttachments: two containers of VLAN 10 reach each other and
// their gateway, which is on <bridge>.10 (not on the bridge); containers
// of VLAN 20 on the same bridge, with addresses of the same block (so on
// link: only layer 2 could carry them), reach each other but not VLAN 10;
// a container without a VLAN, attached before vlan_filtering was on,
// still reaches its gateway on the bridge; a bridge without VLAN networks
// is left alone. CHECK verifies the port's VLAN and the gateway interface;
// DEL removes the port and leaves the shared bridge and VLAN interface.
func testVLANAttachments(t *testing.T, ver string) {
	e, _ := vlanEnv(t)
	const (
		gw10   = "2001:db8:10::1"
		a10    = "2001:db8:10::2"
		b10    = "2001:db8:10::3"
		c20    = "2001:db8:10::4" // the block of VLAN 10: on link
		d20    = "2001:db8:10::5"
		gwN    = "2001:db8:300::1"
		gwO    = "2001:db8:200::1"
		vlan10 = `,"vlan":10,"isDefaultGateway":true`
		vlan20 = `,"vlan":20,"isGateway":false`
	)
	vif := link.VLANIfName(e.bridge, 10)
	if vif != e.bridge+".10" {
		t.Fatalf("VLANIfName(%s, 10) = %s", e.bridge, vif)
	}
	otherBridge := fmt.Sprintf("v6tc%d", os.Getpid()%100000)

	a := e.vlanAttachment(t, ver, "vlan10a", e.bridge, vlan10, a10+"/64", gw10)
	b := e.vlanAttachment(t, ver, "vlan10b", e.bridge, vlan10, b10+"/64", gw10)
	c := e.vlanAttachment(t, ver, "vlan20c", e.bridge, vlan20, c20+"/64", "")
	d := e.vlanAttachment(t, ver, "vlan20d", e.bridge, vlan20, d20+"/64", "")
	n := e.vlanAttachment(t, ver, "novlan", e.bridge, `,"isDefaultGateway":true`, "2001:db8:300::2/64", gwN)
	o := e.vlanAttachment(t, ver, "otherbr", otherBridge, `,"isDefaultGateway":true`, "2001:db8:200::2/64", gwO)

	// The network without a VLAN first: turning vlan_filtering on later
	// must not cut it off.
	e.addVLAN(t, n)
	if got := e.vlansOf(t, n.port()); got != "1 pvid untagged" {
		t.Fatalf("port of a network without vlan on a bridge without vlan_filtering: VLANs %q", got)
	}
	for _, x := range []*vlanAttachment{a, b, c, d, o} {
		e.addVLAN(t, x)
	}

	// The result names the gateway's VLAN interface after the others.
	res := mustResult(t, ver, a.raw)
	if len(res.Interfaces) != 4 || res.Interfaces[3].Name != vif || res.Interfaces[3].Sandbox != "" {
		t.Errorf("result interfaces of a VLAN 10 attachment: %+v, want the 4th to be %s", res.Interfaces, vif)
	}
	if res := mustResult(t, ver, c.raw); len(res.Interfaces) != 3 {
		t.Errorf("result interfaces of a VLAN attachment without gateway: %+v, want 3", res.Interfaces)
	}

	// The host side.
	if err := e.inHost(t, func() error {
		br, err := link.BridgeByName(e.bridge)
		if err != nil {
			return err
		}
		if br.VlanFiltering == nil || !*br.VlanFiltering {
			t.Errorf("bridge %s: vlan_filtering not on", e.bridge)
		}
		l, err := netlink.LinkByName(vif)
		if err != nil {
			return fmt.Errorf("VLAN interface: %w", err)
		}
		v, ok := l.(*netlink.Vlan)
		if !ok || v.VlanId != 10 || v.ParentIndex != br.Index || v.Flags&net.FlagUp == 0 {
			t.Errorf("%s = %+v, want VLAN 10 of %s, up", vif, l, e.bridge)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		found := false
		for _, ad := range addrs {
			if ad.IPNet.String() == gw10+"/64" {
				found = true
				if ad.Flags&unix.IFA_F_NODAD == 0 || ad.Flags&unix.IFA_F_TENTATIVE != 0 {
					t.Errorf("gateway %s on %s: flags %#x, want NODAD, not tentative", ad.IPNet, vif, ad.Flags)
				}
			}
		}
		if !found {
			t.Errorf("gateway %s/64 not on %s: %v", gw10, vif, addrs)
		}
		brAddrs, err := netlink.AddrList(br, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, ad := range brAddrs {
			if strings.HasPrefix(ad.IPNet.String(), "2001:db8:10:") {
				t.Errorf("VLAN 10's gateway %s is on the bridge itself", ad.IPNet)
			}
		}
		for key, want := range map[string]string{
			"net/ipv6/conf/" + vif + "/accept_ra":    "0",
			"net/ipv6/conf/" + vif + "/accept_dad":   "0",
			"net/ipv6/conf/" + vif + "/disable_ipv6": "0",
			"net/ipv6/conf/all/forwarding":           "1",
		} {
			if got, err := sysctl.Sysctl(key); err != nil || got != want {
				t.Errorf("%s = %q (%v), want %s", key, got, err, want)
			}
		}
		other, err := link.BridgeByName(otherBridge)
		if err != nil {
			return err
		}
		if other.VlanFiltering != nil && *other.VlanFiltering {
			t.Errorf("bridge %s without VLAN networks has vlan_filtering on", otherBridge)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// What `bridge vlan show` says of the ports and of the bridge itself:
	// untagged PVID in VLAN 1 (the gateways of networks without a VLAN),
	// tagged in VLAN 10 (for <bridge>.10), not in VLAN 20 (no gateway).
	for name, want := range map[string]string{
		a.port(): "10 pvid untagged",
		b.port(): "10 pvid untagged",
		c.port(): "20 pvid untagged",
		d.port(): "20 pvid untagged",
		n.port(): "1 pvid untagged",
		e.bridge: "1 pvid untagged, 10",
	} {
		if got := e.vlansOf(t, name); got != want {
			t.Errorf("VLANs of %s = %q, want %q", name, got, want)
		}
	}

	// Within a VLAN: layer 2 and the gateway; without one: as before.
	for _, p := range []struct {
		from *vlanAttachment
		to   string
	}{{a, gw10}, {b, gw10}, {a, b10}, {b, a10}, {c, d20}, {d, c20}, {n, gwN}, {o, gwO}} {
		if err := ping6(p.from.netns, p.to, reachTimeout); err != nil {
			t.Errorf("%s: %v", p.from.id, err)
		}
	}
	// Across VLANs on the same bridge, on link: the neighbour
	// solicitation never reaches the other VLAN.
	var wg sync.WaitGroup
	for _, p := range []struct {
		from *vlanAttachment
		to   string
	}{{c, a10}, {a, c20}, {d, b10}, {b, d20}} {
		// At once: each waits out its timeout.
		wg.Go(func() {
			if err := ping6(p.from.netns, p.to, noReachTimeout); err == nil {
				t.Errorf("%s reached %s in another VLAN", p.from.id, p.to)
			}
		})
	}
	wg.Wait()
	// Between networks with gateways the host routes, VLAN or not (a
	// firewall's job to stop): VLANs separate layer 2 only.
	if err := ping6(n.netns, a10, reachTimeout); err != nil {
		t.Errorf("%s (no VLAN) to %s (VLAN 10) through their gateways: %v", n.id, a10, err)
	}
	// The bridge learnt the VLAN 10 container's MAC in VLAN 10 only.
	macA := macaddr.Derive("v6vlan", a.id, "eth0")
	if err := e.inHost(t, func() error {
		fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		seen := false
		for _, f := range fdb {
			if f.HardwareAddr.String() != macA.String() {
				continue
			}
			if f.Vlan == 10 {
				seen = true
			} else {
				t.Errorf("fdb entry for %s (a VLAN 10 container) in VLAN %d", macA, f.Vlan)
			}
		}
		if !seen {
			t.Errorf("no fdb entry for %s in VLAN 10", macA)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// CHECK passes; then reports the port also in VLAN 1, then the
	// missing gateway interface.
	checkArgs := a.args([]byte(strings.TrimSuffix(string(a.conf), "}") + `,"prevResult":` + string(a.raw) + `}`))
	check := func() error {
		return e.inHost(t, func() error {
			return testutils.CmdCheckWithArgs(checkArgs, func() error { return cmdCheck(checkArgs) })
		})
	}
	if err := check(); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := e.inHost(t, func() error {
		l, err := netlink.LinkByName(a.port())
		if err != nil {
			return err
		}
		return netlink.BridgeVlanAdd(l, 1, false, true, false, true)
	}); err != nil {
		t.Fatal(err)
	}
	if err := check(); err == nil || !strings.Contains(err.Error(), "port "+a.port()+" has VLANs 1 untagged, 10 pvid untagged, want only 10 pvid untagged") {
		t.Errorf("CHECK with the port also in VLAN 1: err = %v", err)
	}
	if err := e.inHost(t, func() error {
		l, err := netlink.LinkByName(a.port())
		if err != nil {
			return err
		}
		if err := netlink.BridgeVlanDel(l, 1, false, true, false, true); err != nil {
			return err
		}
		return link.DeleteLinkByName(vif)
	}); err != nil {
		t.Fatal(err)
	}
	if err := check(); err == nil || !strings.Contains(err.Error(), "VLAN interface "+vif+" not found") {
		t.Errorf("CHECK without %s: err = %v", vif, err)
	}

	// The next ADD of VLAN 10 makes the gateway interface again.
	e.addVLAN(t, e.vlanAttachment(t, ver, "vlan10e", e.bridge, vlan10, "2001:db8:10::6/64", gw10))
	if err := check(); err != nil {
		t.Errorf("CHECK after %s was made again: %v", vif, err)
	}
	if err := ping6(a.netns, gw10, reachTimeout); err != nil {
		t.Errorf("after %s was made again: %v", vif, err)
	}

	// DEL: the port goes; the bridge and the VLAN interface, shared,
	// stay and still serve the VLAN.
	if err := e.del(t, b.args(b.conf)); err != nil {
		t.Fatal(err)
	}
	if err := e.inHost(t, func() error {
		for name, want := range map[string]bool{b.port(): false, vif: true, e.bridge: true} {
			if ok, err := link.LinkExists(name); err != nil || ok != want {
				t.Errorf("after DEL: %s exists = %v (%v), want %v", name, ok, err, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := ping6(a.netns, gw10, reachTimeout); err != nil {
		t.Errorf("after another container's DEL: %v", err)
	}
}

// testVLANRefusesPortWithoutVLAN: turning vlan_filtering on would cut off
// a port in no VLAN at all, so ADD fails naming it and leaves the bridge
// as it was.
func testVLANRefusesPortWithoutVLAN(t *testing.T) {
	e, _ := vlanEnv(t)
	n := e.vlanAttachment(t, "1.1.0", "novlan", e.bridge, "", "2001:db8:300::2/64", "2001:db8:300::1")
	e.addVLAN(t, n)
	if err := e.inHost(t, func() error {
		l, err := netlink.LinkByName(n.port())
		if err != nil {
			return err
		}
		return netlink.BridgeVlanDel(l, 1, true, true, false, true)
	}); err != nil {
		t.Fatal(err)
	}
	a := e.vlanAttachment(t, "1.1.0", "vlan10a", e.bridge, `,"vlan":10`, "2001:db8:10::2/64", "2001:db8:10::1")
	_, err := e.add(t, a.args(a.conf))
	if err == nil {
		t.Cleanup(func() { _ = e.del(t, a.args(a.conf)) })
		t.Fatal("ADD of a VLAN network succeeded on a bridge with a port in no VLAN")
	}
	if want := "turning vlan_filtering on would cut off port " + n.port() + ", which is in no VLAN"; !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to say %q", err, want)
	}
	if err := e.inHost(t, func() error {
		br, err := link.BridgeByName(e.bridge)
		if err != nil {
			return err
		}
		if br.VlanFiltering != nil && *br.VlanFiltering {
			t.Error("vlan_filtering turned on all the same")
		}
		if ok, _ := link.LinkExists(a.port()); ok {
			t.Error("the refused ADD left its veth")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// testConcurrentVLANAdds execs ADDs of one VLAN at once, as a runtime
// starting many pods does, on a new bridge whose name is too long for
// <bridge>.<vid>: all succeed, the bridge filters VLANs, one VLAN
// interface (the derived name) holds the gateway, every port is an access
// port of the VLAN and every container reaches the gateway.
func testConcurrentVLANAdds(t *testing.T) {
	e, bin := vlanEnv(t)
	bridge := fmt.Sprintf("v6vlanrc%07d", os.Getpid()%10000000)
	vif := link.VLANIfName(bridge, 3000)
	if len(bridge+".3000") <= 15 || len(vif) > 15 || !strings.HasPrefix(vif, "v6v") {
		t.Fatalf("bridge %s: VLAN interface name %s", bridge, vif)
	}
	const gw = "2001:db8:30::1"
	const n = 8
	atts := make([]*vlanAttachment, n)
	for i := range atts {
		atts[i] = e.vlanAttachment(t, "1.1.0", fmt.Sprintf("race%d", i), bridge, `,"vlan":3000,"isDefaultGateway":true`,
			fmt.Sprintf("2001:db8:30::%x/64", i+2), gw)
	}
	run := func(command string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, a := range atts {
			wg.Go(func() { _, errs[i] = e.execPlugin(t, bin, command, a.id, a.netns.Path(), a.conf) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s #%d: %v", command, i, err)
			}
		}
	}
	run("ADD")
	t.Cleanup(func() { run("DEL") })
	if t.Failed() {
		t.FailNow()
	}
	for _, a := range atts {
		if got := e.vlansOf(t, a.port()); got != "3000 pvid untagged" {
			t.Errorf("VLANs of port %s = %q", a.port(), got)
		}
	}
	if err := e.inHost(t, func() error {
		br, err := link.BridgeByName(bridge)
		if err != nil {
			return err
		}
		if br.VlanFiltering == nil || !*br.VlanFiltering {
			t.Error("vlan_filtering not on")
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		var vlans []string
		for _, l := range links {
			if _, ok := l.(*netlink.Vlan); ok {
				vlans = append(vlans, l.Attrs().Name)
			}
		}
		if len(vlans) != 1 || vlans[0] != vif {
			t.Errorf("VLAN interfaces %v, want [%s]", vlans, vif)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, a := range atts {
		if err := ping6(a.netns, gw, reachTimeout); err != nil {
			t.Errorf("%s: %v", a.id, err)
		}
	}
}

// TestVLANBadValue: a vlan out of range or combined with a self-configuring
// ipv6Mode is error 7, one of the wrong JSON type error 6 (as every decode
// error of the plugins), naming the field and the value,
// before IPAM is called and before any kernel work (so this runs on any
// kernel).
func TestVLANBadValue(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct {
		extra, value string
		code         uint
	}{
		{`,"vlan":4095`, "4095", types.ErrInvalidNetworkConfig},
		{`,"vlan":-3`, "-3", types.ErrInvalidNetworkConfig},
		{`,"vlan":"10"`, "string", types.ErrDecodingFailure},
		{`,"vlan":10,"ipv6Mode":"slaac"`, "slaac", types.ErrInvalidNetworkConfig},
	} {
		args := e.args("badvlan", e.conf("1.1.0", tc.extra))
		_, err := e.add(t, args)
		if err == nil {
			t.Fatalf("ADD with %s succeeded", tc.extra)
		}
		if code := cniCode(t, err); code != tc.code || !strings.Contains(err.Error(), "vlan") || !strings.Contains(err.Error(), tc.value) {
			t.Errorf("ADD with %s: code %d, err %v", tc.extra, code, err)
		}
	}
	if calls := e.ipamCalls(t); calls != "" {
		t.Errorf("IPAM was called: %q", calls)
	}
	if err := e.inHost(t, func() error {
		if ok, _ := link.LinkExists(e.bridge); ok {
			t.Errorf("bridge %s created for a refused config", e.bridge)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

package link

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

// newNS creates a network namespace removed when the test ends. Every test
// does its "host" work in one of these too, so the real host is never
// touched.
func newNS(t testing.TB) ns.NetNS {
	t.Helper()
	linktest.RequireRoot(t)
	return linktest.NewNS(t)
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestEnsureBridgeConcurrent(t *testing.T) {
	host := newNS(t)
	name := linktest.Name("v6tbr")

	const racers = 8
	var wg sync.WaitGroup
	indexes := make([]int, racers)
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			errs[i] = host.Do(func(ns.NetNS) error {
				br, err := EnsureBridge(name, 1400)
				if err == nil {
					indexes[i] = br.Index
				}
				return err
			})
		})
	}
	wg.Wait()
	for i := range racers {
		if errs[i] != nil {
			t.Fatalf("racer %d: %v", i, errs[i])
		}
		if indexes[i] == 0 || indexes[i] != indexes[0] {
			t.Fatalf("racers saw different bridges: %v", indexes)
		}
	}

	linktest.Do(t, host, func() error {
		// Reuse: same bridge, MTU changed to the new config.
		br, err := EnsureBridge(name, 9000)
		if err != nil {
			return err
		}
		if br.Index != indexes[0] {
			t.Errorf("reuse returned index %d, want %d", br.Index, indexes[0])
		}
		got, err := BridgeByName(name)
		if err != nil {
			return err
		}
		if got.MTU != 9000 {
			t.Errorf("bridge MTU = %d, want 9000", got.MTU)
		}
		if got.Flags&net.FlagUp == 0 {
			t.Error("bridge is not up")
		}
		if got.HardwareAddr.String() != bridgeMAC(name).String() {
			t.Errorf("bridge MAC = %s, want %s", got.HardwareAddr, bridgeMAC(name))
		}

		// mtu 0 leaves the MTU alone.
		if br, err = EnsureBridge(name, 0); err != nil {
			return err
		}
		if br.MTU != 9000 {
			t.Errorf("EnsureBridge(mtu 0) changed MTU to %d", br.MTU)
		}

		// A link of that name that is not a bridge is refused, by name.
		notBridge := linktest.Name("v6tdm")
		if err := addVethPair(notBridge); err != nil {
			return err
		}
		_, err = EnsureBridge(notBridge, 0)
		if err == nil || !strings.Contains(err.Error(), notBridge) || !strings.Contains(err.Error(), "not a bridge") {
			t.Errorf("EnsureBridge on a veth: err = %v, want one naming %s and 'not a bridge'", err, notBridge)
		}
		if _, err := BridgeByName(linktest.Name("v6tno")); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("BridgeByName of a missing bridge: err = %v", err)
		}
		return nil
	})
}

func TestGatewayAddrsNoDAD(t *testing.T) {
	host := newNS(t)
	cont := newNS(t)
	brName := linktest.Name("v6tbr")
	gw6 := mustPrefix("2001:db8:77::1/64")
	gw4 := mustPrefix("10.99.0.1/24")

	linktest.Do(t, host, func() error {
		br, err := EnsureBridge(brName, 0)
		if err != nil {
			return err
		}
		if err := PrepareBridge(brName, false); err != nil {
			return err
		}
		for range 2 { // idempotent: the second ADD on a bridge finds them there
			if err := AddGatewayAddrs(br, []netip.Prefix{gw6, gw4}, false); err != nil {
				return err
			}
		}
		// A port with carrier gives the bridge carrier: only then does the
		// kernel start (and, with NODAD, at once finish) address setup.
		_, err = CreateVeth(VethSpec{
			HostName: linktest.Name("v6tv"), ContainerName: "eth0",
			BridgeIndex: br.Index, NetNSFd: int(cont.Fd()),
		})
		if err != nil {
			return err
		}
		return nil
	})
	linktest.Do(t, cont, func() error {
		l, err := linkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})

	linktest.Do(t, host, func() error {
		br, err := BridgeByName(brName)
		if err != nil {
			return err
		}
		var addr6 *netlink.Addr
		deadline := time.Now().Add(2 * time.Second)
		for {
			addrs, err := addrList(br, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			addr6 = nil
			var found4 bool
			for i, a := range addrs {
				p, _ := PrefixFromIPNet(a.IPNet)
				switch p {
				case gw6:
					addr6 = &addrs[i]
				case gw4:
					found4 = true
				}
			}
			if addr6 == nil || !found4 {
				t.Fatalf("gateways %s and %s not both on %s: %v", gw6, gw4, brName, addrs)
			}
			// Without NODAD, DAD keeps it tentative for over a second;
			// with it, the address is usable as soon as the bridge has
			// carrier. The loop only waits for the veth to get carrier.
			if addr6.Flags&unix.IFA_F_TENTATIVE == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if addr6.Flags&unix.IFA_F_NODAD == 0 {
			t.Errorf("gateway %s flags %#x lack IFA_F_NODAD", gw6, addr6.Flags)
		}
		if addr6.Flags&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("gateway %s still tentative (flags %#x)", gw6, addr6.Flags)
		}
		v, err := sysctl.Sysctl("net/ipv6/conf/" + brName + "/accept_ra")
		if err != nil {
			return err
		}
		if v != "0" {
			t.Errorf("bridge accept_ra = %s, want 0", v)
		}
		return nil
	})
}

func TestCreateVethInNetNS(t *testing.T) {
	host := newNS(t)
	cont := newNS(t)
	brName := linktest.Name("v6tbr")
	const containerID, ifname = "4f1a5c2b9d0e", "eth0"
	spec := VethSpec{
		HostName:      HostVethName(containerID, ifname),
		HostMAC:       HostVethMAC(containerID, ifname),
		ContainerName: ifname,
		ContainerMAC:  ContainerMAC("testnet", containerID, ifname),
		MTU:           1400,
		NetNSFd:       int(cont.Fd()),
	}

	var brIndex int
	linktest.Do(t, host, func() error {
		br, err := EnsureBridge(brName, 1400)
		if err != nil {
			return err
		}
		brIndex = br.Index
		spec.BridgeIndex = br.Index
		veth, err := CreateVeth(spec)
		if err != nil {
			return err
		}
		if veth.Index == 0 {
			t.Error("CreateVeth returned no index")
		}
		l, err := linkByName(spec.HostName)
		if err != nil {
			return err
		}
		if l.Attrs().MasterIndex != brIndex {
			t.Errorf("host veth master = %d, want bridge %d", l.Attrs().MasterIndex, brIndex)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Error("host veth is not up")
		}
		if l.Attrs().MTU != 1400 {
			t.Errorf("host veth MTU = %d, want 1400", l.Attrs().MTU)
		}
		if l.Attrs().HardwareAddr.String() != spec.HostMAC.String() {
			t.Errorf("host veth MAC = %s, want %s", l.Attrs().HardwareAddr, spec.HostMAC)
		}
		if ok, _ := LinkExists(ifname); ok {
			t.Errorf("container end %s exists in the host netns", ifname)
		}
		return CheckHostVeth(spec.HostName, br)
	})

	linktest.Do(t, cont, func() error {
		l, err := linkByName(ifname)
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != spec.ContainerMAC.String() {
			t.Errorf("container MAC = %s, want %s", l.Attrs().HardwareAddr, spec.ContainerMAC)
		}
		if l.Attrs().MTU != 1400 {
			t.Errorf("container MTU = %d, want 1400", l.Attrs().MTU)
		}
		if l.Attrs().Flags&net.FlagUp != 0 {
			t.Error("container end is up before its sysctls are set")
		}
		return nil
	})

	linktest.Do(t, host, func() error {
		// A retried ADD finds the stale pair and replaces it.
		if _, err := CreateVeth(spec); err != nil {
			return err
		}
		// CHECK sees a veth moved off the bridge.
		if err := netlink.LinkSetNoMaster(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: spec.HostName, Index: mustIndex(t, spec.HostName)}}); err != nil {
			return err
		}
		br, err := BridgeByName(brName)
		if err != nil {
			return err
		}
		if err := CheckHostVeth(spec.HostName, br); err == nil || !strings.Contains(err.Error(), "not a port of bridge "+brName) {
			t.Errorf("CheckHostVeth off the bridge: err = %v", err)
		}
		// DEL: twice, the second finds nothing and still succeeds.
		for range 2 {
			if err := DeleteLinkByName(spec.HostName); err != nil {
				return err
			}
		}
		if err := CheckHostVeth(spec.HostName, br); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("CheckHostVeth after delete: err = %v", err)
		}
		return nil
	})
	linktest.Do(t, cont, func() error {
		if ok, err := LinkExists(ifname); err != nil || ok {
			t.Errorf("container end still exists after deleting the host end (err %v)", err)
		}
		return nil
	})
}

func mustIndex(t *testing.T, name string) int {
	t.Helper()
	l, err := linkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func TestConfigureAndCheckContainer(t *testing.T) {
	host := newNS(t)
	cont := newNS(t)
	brName := linktest.Name("v6tbr")
	addrs := []netip.Prefix{mustPrefix("2001:db8:77::2/64"), mustPrefix("10.99.0.2/24")}
	routes := []Route{
		{Dst: mustPrefix("::/0"), GW: netip.MustParseAddr("2001:db8:77::1")},
		{Dst: mustPrefix("0.0.0.0/0"), GW: netip.MustParseAddr("10.99.0.1")},
		{Dst: mustPrefix("2001:db8:1234::/48"), GW: netip.MustParseAddr("2001:db8:77::1")},
		{Dst: mustPrefix("192.0.2.0/24")}, // on-link
	}
	mac := ContainerMAC("testnet", "cid", "eth0")

	linktest.Do(t, host, func() error {
		br, err := EnsureBridge(brName, 0)
		if err != nil {
			return err
		}
		_, err = CreateVeth(VethSpec{
			HostName: linktest.Name("v6tv"), ContainerName: "eth0", ContainerMAC: mac,
			BridgeIndex: br.Index, NetNSFd: int(cont.Fd()),
		})
		return err
	})

	linktest.Do(t, cont, func() error {
		l, err := ConfigureContainerWith("eth0", addrs, routes, ContainerOptions{})
		if err != nil {
			return err
		}
		for key, want := range map[string]string{
			"net/ipv6/conf/eth0/accept_ra":    "0",
			"net/ipv6/conf/eth0/accept_dad":   "0",
			"net/ipv6/conf/eth0/disable_ipv6": "0",
			"net/ipv6/conf/eth0/ndisc_notify": "1",
		} {
			if got, err := sysctl.Sysctl(key); err != nil || got != want {
				t.Errorf("%s = %q (err %v), want %q", key, got, err, want)
			}
		}
		got, err := addrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		var nodad bool
		for _, a := range got {
			if p, _ := PrefixFromIPNet(a.IPNet); p == addrs[0] {
				nodad = a.Flags&unix.IFA_F_NODAD != 0
			}
		}
		if !nodad {
			t.Errorf("%s not on eth0 with IFA_F_NODAD: %v", addrs[0], got)
		}
		lo, err := linkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Error("lo is not up")
		}

		if err := CheckContainerWith("eth0", mac, addrs, routes, ContainerOptions{}); err != nil {
			t.Errorf("CheckContainer after ConfigureContainer: %v", err)
		}
		// Routes other plugins add are tolerated.
		extra := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(mustPrefix("2001:db8:9999::/48")), Gw: net.ParseIP("2001:db8:77::9")}
		if err := netlink.RouteAdd(extra); err != nil {
			return err
		}
		if err := CheckContainerWith("eth0", mac, addrs, routes, ContainerOptions{}); err != nil {
			t.Errorf("CheckContainer with an extra route: %v", err)
		}

		for _, tt := range []struct {
			name   string
			ifname string
			mac    net.HardwareAddr
			addrs  []netip.Prefix
			routes []Route
			want   string
		}{
			{"missing interface", "eth9", nil, nil, nil, "interface eth9 not found"},
			{"wrong mac", "eth0", ContainerMAC("other", "cid", "eth0"), nil, nil, "has MAC"},
			{"missing address", "eth0", mac, []netip.Prefix{mustPrefix("2001:db8:77::3/64")}, nil, "address 2001:db8:77::3/64 missing on eth0"},
			{"wrong prefix length", "eth0", mac, []netip.Prefix{mustPrefix("2001:db8:77::2/80")}, nil, "address 2001:db8:77::2/80 missing on eth0"},
			{"missing route", "eth0", mac, nil, []Route{{Dst: mustPrefix("2001:db8:4444::/48"), GW: netip.MustParseAddr("2001:db8:77::1")}}, "route 2001:db8:4444::/48 via 2001:db8:77::1 missing"},
			{"route via another gateway", "eth0", mac, nil, []Route{{Dst: mustPrefix("::/0"), GW: netip.MustParseAddr("2001:db8:77::5")}}, "route ::/0 via 2001:db8:77::5 missing"},
		} {
			err := CheckContainerWith(tt.ifname, tt.mac, tt.addrs, tt.routes, ContainerOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.want)
			}
		}
		return nil
	})
}

func TestPrepareBridgeForwardingKeepsRAs(t *testing.T) {
	host := newNS(t)
	linktest.Do(t, host, func() error {
		brName := linktest.Name("v6tbr")
		uplink := linktest.Name("v6tup")
		if err := addVethPair(uplink); err != nil {
			return err
		}
		if _, err := EnsureBridge(brName, 0); err != nil {
			return err
		}
		if err := PrepareBridge(brName, false); err != nil {
			return err
		}
		for key, v := range map[string]string{
			"net/ipv6/conf/all/forwarding":           "0",
			"net/ipv4/ip_forward":                    "0",
			"net/ipv6/conf/" + uplink + "/accept_ra": "1",
		} {
			if _, err := sysctl.Sysctl(key, v); err != nil {
				return err
			}
		}
		if err := PrepareBridge(brName, true); err != nil {
			return err
		}
		if err := EnableIPv4Forwarding(); err != nil {
			return err
		}
		for key, want := range map[string]string{
			"net/ipv6/conf/all/forwarding":           "1",
			"net/ipv4/ip_forward":                    "1",
			"net/ipv6/conf/" + uplink + "/accept_ra": "2",
			"net/ipv6/conf/" + brName + "/accept_ra": "0",
		} {
			if got, err := sysctl.Sysctl(key); err != nil || got != want {
				t.Errorf("%s = %q (err %v), want %q", key, got, err, want)
			}
		}

		// Forwarding already on: an interface with accept_ra=1 was the
		// admin's choice after forwarding was set; leave it.
		if _, err := sysctl.Sysctl("net/ipv6/conf/"+uplink+"/accept_ra", "1"); err != nil {
			return err
		}
		if err := PrepareBridge(brName, true); err != nil {
			return err
		}
		if got, _ := sysctl.Sysctl("net/ipv6/conf/" + uplink + "/accept_ra"); got != "1" {
			t.Errorf("accept_ra changed to %s with forwarding already on", got)
		}
		return nil
	})
}

func TestDeleteLinkByNameMissing(t *testing.T) {
	host := newNS(t)
	linktest.Do(t, host, func() error {
		if err := DeleteLinkByName(linktest.Name("v6tno")); err != nil {
			t.Errorf("DeleteLinkByName of a missing link: %v", err)
		}
		return nil
	})
}

// addVethPair creates a veth pair name/name+"p" in the calling thread's
// netns: a non-bridge link for tests (this kernel has no notBridge driver).
func addVethPair(name string) error {
	peer := name[:min(len(name), 14)] + "p"
	return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}, PeerName: peer})
}

func TestSysctlsRelativeAndAbsolute(t *testing.T) {
	host := newNS(t)
	linktest.Do(t, host, func() error {
		s := openSysctls()
		defer s.close()
		// Below a family directory: opened relative to it, and the
		// directory is opened once for both keys.
		if v, err := s.read("net/ipv6/conf/lo/mtu"); err != nil || v != "65536" {
			t.Errorf("net/ipv6/conf/lo/mtu = %q, %v; want 65536", v, err)
		}
		if err := s.set("net/ipv6/conf/lo/accept_ra", "0"); err != nil {
			t.Error(err)
		}
		if v, _ := s.read("net/ipv6/conf/lo/accept_ra"); v != "0" {
			t.Errorf("accept_ra = %q after set 0", v)
		}
		if len(s.dirs) != 1 {
			t.Errorf("opened %d family directories, want 1", len(s.dirs))
		}
		// Not below net/<family>/: opened by its full path.
		if v, err := s.read("kernel/ostype"); err != nil || v != "Linux" {
			t.Errorf("kernel/ostype = %q, %v", v, err)
		}
		// A missing key names its full path.
		if _, err := s.read("net/ipv6/conf/v6nosuch0/mtu"); err == nil || !strings.Contains(err.Error(), "/proc/sys/net/ipv6/conf/v6nosuch0/mtu") {
			t.Errorf("missing key: error %v does not name the path", err)
		}
		return nil
	})
}

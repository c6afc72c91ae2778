package main

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
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

const (
	ctr6 = "2001:db8:cafe:3::2"
	gw6  = "2001:db8:cafe:3::1"
)

// add runs ADD in the host netns and returns the raw result.
func (e *testEnv) add(t *testing.T, args *skel.CmdArgs) ([]byte, error) {
	t.Helper()
	var raw []byte
	err := e.inHost(t, func() error {
		var err error
		_, raw, err = testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	})
	return raw, err
}

func (e *testEnv) mustAdd(t *testing.T, args *skel.CmdArgs) *current.Result {
	t.Helper()
	raw, err := e.add(t, args)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	t.Cleanup(func() { _ = e.del(t, args) })
	return mustResult(t, "1.1.0", raw)
}

func (e *testEnv) del(t *testing.T, args *skel.CmdArgs) error {
	t.Helper()
	return e.inHost(t, func() error {
		return testutils.CmdDelWithArgs(args, func() error { return cmdDel(args) })
	})
}

// containerAddrs lists the IPv6 addresses of eth0 in the container.
func (e *testEnv) containerAddrs(t *testing.T) []netlink.Addr {
	t.Helper()
	var addrs []netlink.Addr
	if err := e.cont.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err = netlink.AddrList(l, netlink.FAMILY_V6)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return addrs
}

// settledAddrs is containerAddrs once the link-local address is no longer
// tentative, or after 500 ms. The kernel creates it when the veth's carrier
// comes up, tentative even with accept_dad=0, and its DAD worker clears the
// flag at once; a link-local address that really ran DAD would stay
// tentative for at least a retransmit interval (1 s), which noTentative
// then reports. Global addresses are returned as they are.
func (e *testEnv) settledAddrs(t *testing.T) []netlink.Addr {
	t.Helper()
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		addrs := e.containerAddrs(t)
		settled := true
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE != 0 {
				settled = false
			}
		}
		if settled || time.Now().After(deadline) {
			return addrs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func noTentative(t *testing.T, addrs []netlink.Addr) {
	t.Helper()
	for _, a := range addrs {
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			t.Errorf("address %s is tentative or dadfailed after ADD (flags %#x)", a.IPNet, a.Flags)
		}
	}
}

// TestFirstPingAndAnnouncement: on a brand-new bridge, no address is
// tentative after ADD, the very first ping to the gateway is answered, and
// the host learnt the container's MAC from an unsolicited NA (its stale
// entry with another MAC was overridden without any traffic to it).
func TestFirstPingAndAnnouncement(t *testing.T) {
	e := setup(t)
	const containerID = "f1r5791n9"
	mac := macaddr.Derive("v6net", containerID, "eth0")

	// The host already has a neighbour entry for the address (a previous
	// container had it) with another MAC.
	updates := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	e.staleEntry(t, ctr6)
	if err := e.inHost(t, func() error {
		return netlink.NeighSubscribeWithOptions(updates, done, netlink.NeighSubscribeOptions{})
	}); err != nil {
		t.Fatal(err)
	}

	e.mustAdd(t, e.args(containerID, e.conf("1.1.0", "")))
	noTentative(t, e.settledAddrs(t))

	if err := e.cont.Do(func(ns.NetNS) error {
		out, err := exec.Command("ping", "-6", "-c", "1", "-W", "5", gw6).CombinedOutput()
		if err != nil {
			t.Errorf("first ping to the gateway %s: %v\n%s", gw6, err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The announcement: wait (bounded, on events) for the entry to carry
	// the container's MAC. The ping may also have refreshed it; the entry
	// is checked before the ping could matter by looking at every update.
	deadline := time.After(5 * time.Second)
	for {
		select {
		case u := <-updates:
			if u.IP.Equal(net.ParseIP(ctr6)) && u.HardwareAddr.String() == mac.String() {
				return
			}
		case <-deadline:
			t.Fatalf("host neighbour entry for %s never got MAC %s", ctr6, mac)
		}
	}
}

// TestUnsolicitedNAWithoutTraffic proves the NA alone updates a stale
// entry: no ping, the entry must change during ADD.
func TestUnsolicitedNAWithoutTraffic(t *testing.T) {
	e := setup(t)
	const containerID = "na0n1y"
	mac := macaddr.Derive("v6net", containerID, "eth0")
	brIndex := e.staleEntry(t, ctr6)
	updates := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := e.inHost(t, func() error {
		return netlink.NeighSubscribeWithOptions(updates, done, netlink.NeighSubscribeOptions{})
	}); err != nil {
		t.Fatal(err)
	}
	e.mustAdd(t, e.args(containerID, e.conf("1.1.0", "")))
	deadline := time.After(5 * time.Second)
	for {
		select {
		case u := <-updates:
			if u.LinkIndex == brIndex && u.IP.Equal(net.ParseIP(ctr6)) && u.HardwareAddr.String() == mac.String() {
				return
			}
		case <-deadline:
			t.Fatalf("no unsolicited NA: host entry for %s never got MAC %s", ctr6, mac)
		}
	}
}

// TestMAC: derived by default and equal to what EUI-64 addressing uses (the
// kernel's own EUI-64 link-local address agrees with macaddr.EUI64); the
// `mac` capability and CNI_ARGS MAC= are honoured; a bad one is error 7
// before IPAM.
func TestMAC(t *testing.T) {
	e := setup(t)
	check := func(args *skel.CmdArgs, want string) {
		t.Helper()
		res := e.mustAdd(t, args)
		if res.Interfaces[2].Mac != want {
			t.Errorf("result MAC = %s, want %s", res.Interfaces[2].Mac, want)
		}
		var got net.HardwareAddr
		var linkLocal []netip.Addr
		if err := e.cont.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			got = l.Attrs().HardwareAddr
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
			for _, a := range addrs {
				if a.IP.IsLinkLocalUnicast() {
					linkLocal = append(linkLocal, link.AddrFromIP(a.IP))
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Errorf("eth0 MAC = %s, want %s", got, want)
		}
		eui := macaddr.EUI64(netip.MustParsePrefix("fe80::/64"), got)
		if len(linkLocal) != 1 || linkLocal[0] != eui {
			t.Errorf("kernel link-local %v, macaddr.EUI64 gives %s", linkLocal, eui)
		}
		if err := e.del(t, args); err != nil {
			t.Fatal(err)
		}
	}
	check(e.args("m1", e.conf("1.1.0", "")), macaddr.Derive("v6net", "m1", "eth0").String())
	check(e.args("m2", e.conf("1.1.0", `,"runtimeConfig":{"mac":"0a:00:00:00:00:2a"}`)), "0a:00:00:00:00:2a")
	args := e.args("m3", e.conf("1.1.0", ""))
	args.Args = "IgnoreUnknown=1;K8S_POD_NAME=web-0;MAC=0a:00:00:00:00:2b"
	check(args, "0a:00:00:00:00:2b")

	bad := e.args("m4", e.conf("1.1.0", `,"runtimeConfig":{"mac":"01:00:00:00:00:01"}`))
	_, err := e.add(t, bad)
	if err == nil || cniCode(t, err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "runtimeConfig.mac") {
		t.Errorf("multicast MAC: err = %v, want code 7 naming runtimeConfig.mac", err)
	}
	if strings.Contains(e.ipamCalls(t), "ADD m4") {
		t.Error("IPAM was called for a refused MAC")
	}
}

func TestDAD(t *testing.T) {
	t.Run("waits", func(t *testing.T) {
		e := setup(t)
		e.mustAdd(t, e.args("dad1", e.conf("1.1.0", `,"enableDad":true`)))
		addrs := e.containerAddrs(t)
		noTentative(t, addrs)
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_NODAD != 0 {
				t.Errorf("address %s has nodad with enableDad", a.IPNet)
			}
		}
		if err := e.cont.Do(func(ns.NetNS) error {
			v, err := sysctl.Sysctl("net/ipv6/conf/eth0/accept_dad")
			if err != nil || v != "1" {
				t.Errorf("accept_dad = %q (%v), want 1", v, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("duplicate fails and rolls back", func(t *testing.T) {
		e := setup(t)
		// Another node on the bridge already has the address.
		other := linktest.NewNS(t)
		if err := e.inHost(t, func() error {
			br, err := link.EnsureBridge(e.bridge, 0)
			if err != nil {
				return err
			}
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "v6tdup", MasterIndex: br.Index, Flags: net.FlagUp},
				PeerName: "eth0", PeerNamespace: netlink.NsFd(int(other.Fd()))}); err != nil {
				return err
			}
			return other.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					return err
				}
				a, _ := netlink.ParseAddr(ctr6 + "/64")
				a.Flags = unix.IFA_F_NODAD
				if err := netlink.AddrAdd(l, a); err != nil {
					return err
				}
				return netlink.LinkSetUp(l)
			})
		}); err != nil {
			t.Fatal(err)
		}
		args := e.args("dad2", e.conf("1.1.0", `,"enableDad":true`))
		_, err := e.add(t, args)
		if err == nil || !strings.Contains(err.Error(), "duplicate address detection failed") || !strings.Contains(err.Error(), ctr6) {
			t.Fatalf("ADD with a duplicate: err = %v, want a DAD failure naming %s", err, ctr6)
		}
		if calls := e.ipamCalls(t); !strings.Contains(calls, "DEL dad2") {
			t.Errorf("IPAM DEL not called after DAD failure: %q", calls)
		}
		e.noAttachmentLeft(t, "dad2", "a DAD failure")
	})
}

func TestOptions(t *testing.T) {
	t.Run("hairpin and promisc", func(t *testing.T) {
		e := setup(t)
		e.mustAdd(t, e.args("hp", e.conf("1.1.0", `,"hairpinMode":true,"promiscMode":true`)))
		_ = e.inHost(t, func() error {
			l, err := netlink.LinkByName(link.HostVethName("hp", "eth0"))
			if err != nil {
				t.Fatal(err)
			}
			pi, err := netlink.LinkGetProtinfo(l)
			if err != nil {
				t.Fatal(err)
			}
			if !pi.Hairpin {
				t.Error("hairpin not set on the host veth")
			}
			br, err := netlink.LinkByName(e.bridge)
			if err != nil {
				t.Fatal(err)
			}
			if br.Attrs().Promisc == 0 {
				t.Error("bridge not promiscuous")
			}
			return nil
		})
	})
	t.Run("forceAddress", func(t *testing.T) {
		e := setup(t)
		if err := e.inHost(t, func() error {
			br, err := link.EnsureBridge(e.bridge, 0)
			if err != nil {
				return err
			}
			a, _ := netlink.ParseAddr("2001:db8:cafe:3::99/64")
			a.Flags = unix.IFA_F_NODAD
			return netlink.AddrAdd(br, a)
		}); err != nil {
			t.Fatal(err)
		}
		_, err := e.add(t, e.args("fa1", e.conf("1.1.0", "")))
		if err == nil || !strings.Contains(err.Error(), "2001:db8:cafe:3::99/64") || !strings.Contains(err.Error(), "forceAddress") {
			t.Fatalf("ADD with a conflicting bridge address: err = %v", err)
		}
		e.mustAdd(t, e.args("fa2", e.conf("1.1.0", `,"forceAddress":true`)))
		_ = e.inHost(t, func() error {
			br, _ := netlink.LinkByName(e.bridge)
			addrs, _ := netlink.AddrList(br, netlink.FAMILY_V6)
			var got []string
			for _, a := range addrs {
				got = append(got, a.IPNet.String())
			}
			s := strings.Join(got, " ")
			if strings.Contains(s, "::99/64") || !strings.Contains(s, gw6+"/64") {
				t.Errorf("bridge addresses after forceAddress: %s", s)
			}
			return nil
		})
	})
	t.Run("ipMasq", func(t *testing.T) {
		e := setup(t)
		args := e.args("mq", e.conf("1.1.0", `,"ipMasq":true,"ipMasq6":true`))
		raw, err := e.add(t, args)
		if err != nil {
			t.Fatal(err)
		}
		nftList := func() string {
			var out []byte
			_ = e.inHost(t, func() error {
				out, _ = exec.Command("nft", "list", "table", "inet", link.MasqTable).CombinedOutput()
				return nil
			})
			return string(out)
		}
		s := nftList()
		for _, want := range []string{"10.244.5.2", ctr6, `oifname != "` + e.bridge + `"`, "masquerade"} {
			if !strings.Contains(s, want) {
				t.Errorf("nft table lacks %q:\n%s", want, s)
			}
		}
		delArgs := e.args("mq", e.conf("1.1.0", `,"ipMasq":true,"ipMasq6":true,"prevResult":`+string(raw)))
		if err := e.del(t, delArgs); err != nil {
			t.Fatal(err)
		}
		if s := nftList(); strings.Contains(s, "10.244.5.2") || strings.Contains(s, ctr6) {
			t.Errorf("addresses still masqueraded after DEL:\n%s", s)
		}
		// A second DEL with nothing left succeeds.
		if err := e.del(t, delArgs); err != nil {
			t.Errorf("second DEL: %v", err)
		}
	})
}

// TestCheckCatches: CHECK reports each kind of drift, naming it.
func TestCheckCatches(t *testing.T) {
	tests := []struct {
		name   string
		break_ func() error
		want   string
	}{
		{"interface renamed", func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetDown(l); err != nil {
				return err
			}
			return netlink.LinkSetName(l, "eth9")
		}, "interface eth0 not found"},
		{"MAC changed", func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.LinkSetHardwareAddr(l, net.HardwareAddr{0x0a, 0, 0, 0, 0, 0x77})
		}, "has MAC 0a:00:00:00:00:77"},
		{"route removed", func() error {
			_, dst, _ := net.ParseCIDR("2001:db8:beef::/48")
			return netlink.RouteDel(&netlink.Route{Dst: dst, Gw: net.ParseIP(gw6)})
		}, "route 2001:db8:beef::/48 via " + gw6 + " missing"},
		{"accept_ra turned on", func() error {
			_, err := sysctl.Sysctl("net/ipv6/conf/eth0/accept_ra", "1")
			return err
		}, "accept_ra is 1, want 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			const id = "chk"
			raw, err := e.add(t, e.args(id, e.conf("1.1.0", "")))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.del(t, e.args(id, e.conf("1.1.0", ""))) })
			checkArgs := e.args(id, e.conf("1.1.0", `,"prevResult":`+string(raw)))
			check := func() error {
				return e.inHost(t, func() error {
					return testutils.CmdCheckWithArgs(checkArgs, func() error { return cmdCheck(checkArgs) })
				})
			}
			if err := check(); err != nil {
				t.Fatalf("CHECK before the change: %v", err)
			}
			if err := e.cont.Do(func(ns.NetNS) error { return tc.break_() }); err != nil {
				t.Fatal(err)
			}
			if err := check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CHECK after %s: err = %v, want %q", tc.name, err, tc.want)
			}
		})
	}
}

// staleEntry makes the test's bridge and gives the host a stale neighbour
// entry for addr with another MAC (a previous container had the address),
// and returns the bridge's index. A new bridge has no port, so the kernel
// turns its carrier off; linkwatch handles that later (non-urgent events
// run at most once a second, more under load), and the handling flushes
// the bridge's neighbour entries (neigh_carrier_down). An entry planted
// before that is gone when the container's announcement arrives, and an
// announcement for an address without an entry is ignored: the wait for
// the operstate linkwatch sets in the same pass keeps the entry alive.
func (e *testEnv) staleEntry(t *testing.T, addr string) int {
	t.Helper()
	var index int
	if err := e.inHost(t, func() error {
		br, err := link.EnsureBridge(e.bridge, 0)
		if err != nil {
			return err
		}
		index = br.Index
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			l, err := netlink.LinkByIndex(index)
			if err != nil {
				return err
			}
			if l.Attrs().OperState == netlink.OperDown {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("bridge %s: operstate still %s, want down (no port yet)", e.bridge, l.Attrs().OperState)
			}
		}
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: index, Family: netlink.FAMILY_V6, State: netlink.NUD_STALE,
			IP: net.ParseIP(addr), HardwareAddr: net.HardwareAddr{2, 0xde, 0xad, 0, 0, 1}})
	}); err != nil {
		t.Fatal(err)
	}
	return index
}

package link

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

// vethCreators are the two ways addVeth learns the host end's index: from
// the kernel's echo of the new link (6.2+), or, for kernels that send none
// (Debian 12's 6.1), from an RTM_GETLINK by name. The echo path goes
// through CreateVeth, the exported entry point.
var vethCreators = []struct {
	name   string
	create func(VethSpec) (*netlink.Veth, error)
}{
	{"echo", CreateVeth},
	{"no echo", func(spec VethSpec) (*netlink.Veth, error) { return addVeth(spec, false) }},
}

// vethTestSpec is the spec of an attachment of cont to the bridge of index
// brIndex, with its MACs and MTU given when withMACsAndMTU.
func vethTestSpec(t *testing.T, cont ns.NetNS, brIndex int, withMACsAndMTU bool) VethSpec {
	cid := linktest.Name("cid")
	spec := VethSpec{
		HostName:      HostVethName(cid, "eth0"),
		ContainerName: "eth0",
		BridgeIndex:   brIndex,
		NetNSFd:       int(cont.Fd()),
	}
	if withMACsAndMTU {
		spec.HostMAC = HostVethMAC(cid, "eth0")
		spec.ContainerMAC = ContainerMAC("testnet", cid, "eth0")
		spec.MTU = 1400
	}
	return spec
}

func TestCreateVethOneRequest(t *testing.T) {
	for _, creator := range vethCreators {
		for _, withMACsAndMTU := range []bool{true, false} {
			name := creator.name + "/kernel defaults"
			if withMACsAndMTU {
				name = creator.name + "/MACs and MTU"
			}
			t.Run(name, func(t *testing.T) {
				testCreateVeth(t, creator.create, withMACsAndMTU)
			})
		}
	}
}

func testCreateVeth(t *testing.T, create func(VethSpec) (*netlink.Veth, error), withMACsAndMTU bool) {
	host := newNS(t)
	cont := newNS(t)
	brName := linktest.Name("v6tbr")
	wantMTU := 1500 // the kernel's default for both a veth and a bridge
	if withMACsAndMTU {
		wantMTU = 1400
	}

	var spec VethSpec
	var hostTxQLen, parent int
	linktest.Do(t, host, func() error {
		br, err := EnsureBridge(brName, wantMTU)
		if err != nil {
			return err
		}
		spec = vethTestSpec(t, cont, br.Index, withMACsAndMTU)
		veth, err := create(spec)
		if err != nil {
			return err
		}
		parent = veth.ParentIndex
		l, err := linkByName(spec.HostName)
		if err != nil {
			return err
		}
		a := l.Attrs()
		hostTxQLen = a.TxQLen
		if _, ok := l.(*netlink.Veth); !ok {
			t.Errorf("host end %s is a %s, not a veth", spec.HostName, l.Type())
		}
		if veth.Index != a.Index || veth.Name != spec.HostName {
			t.Errorf("returned host end %s index %d, kernel has %s index %d", veth.Name, veth.Index, a.Name, a.Index)
		}
		if withMACsAndMTU && a.HardwareAddr.String() != spec.HostMAC.String() {
			t.Errorf("host end MAC = %s, want %s", a.HardwareAddr, spec.HostMAC)
		}
		if len(a.HardwareAddr) != 6 {
			t.Errorf("host end MAC = %s, want one of 6 bytes", a.HardwareAddr)
		}
		if a.MTU != wantMTU {
			t.Errorf("host end MTU = %d, want %d", a.MTU, wantMTU)
		}
		if a.Flags&net.FlagUp == 0 {
			t.Error("host end is not up")
		}
		if a.MasterIndex != br.Index {
			t.Errorf("host end master = %d, want bridge %s (%d)", a.MasterIndex, brName, br.Index)
		}
		if mode, err := sysctl.Sysctl("net/ipv6/conf/" + spec.HostName + "/addr_gen_mode"); err != nil || mode != "1" {
			t.Errorf("host end addr_gen_mode = %q (err %v), want 1 (IN6_ADDR_GEN_MODE_NONE)", mode, err)
		}
		if ok, _ := LinkExists(spec.ContainerName); ok {
			t.Errorf("container end %s exists in the host netns", spec.ContainerName)
		}
		return nil
	})

	linktest.Do(t, cont, func() error {
		l, err := linkByName(spec.ContainerName)
		if err != nil {
			return err
		}
		a := l.Attrs()
		if parent != a.Index {
			t.Errorf("returned ParentIndex %d, container end %s has index %d", parent, a.Name, a.Index)
		}
		if withMACsAndMTU && a.HardwareAddr.String() != spec.ContainerMAC.String() {
			t.Errorf("container end MAC = %s, want %s", a.HardwareAddr, spec.ContainerMAC)
		}
		if a.MTU != wantMTU {
			t.Errorf("container end MTU = %d, want %d", a.MTU, wantMTU)
		}
		if a.Flags&net.FlagUp != 0 {
			t.Error("container end is up before its sysctls are set")
		}
		// vishvananda/netlink gave the container end txqueuelen 0 (the
		// zero PeerTxQLen of a Veth literal); both ends now get the
		// kernel's default.
		if a.TxQLen != hostTxQLen {
			t.Errorf("container end txqueuelen = %d, want the host end's %d", a.TxQLen, hostTxQLen)
		}
		// Carrier on both ends: the moment a link-local would be formed.
		return netlink.LinkSetUp(l)
	})

	linktest.Do(t, host, func() error {
		l, err := waitOperUp(spec.HostName)
		if err != nil {
			return err
		}
		addrs, err := addrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if len(addrs) != 0 {
			t.Errorf("host end has IPv6 addresses with carrier: %v", addrs)
		}
		return nil
	})
	// Control: the same check sees the container end's link-local, which
	// its default addr_gen_mode forms.
	linktest.Do(t, cont, func() error {
		l, err := waitOperUp(spec.ContainerName)
		if err != nil {
			return err
		}
		addrs, err := addrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if len(addrs) == 0 || !addrs[0].IP.IsLinkLocalUnicast() {
			t.Errorf("container end has no link-local with carrier (%v): the host end check proves nothing", addrs)
		}
		return nil
	})
}

// waitOperUp waits until the link called name has carrier (operstate up,
// set by the kernel's linkwatch, not at once) and returns it.
func waitOperUp(name string) (netlink.Link, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		l, err := linkByName(name)
		if err != nil {
			return nil, err
		}
		if l.Attrs().OperState == netlink.OperUp || time.Now().After(deadline) {
			return l, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCreateVethReplacesStaleHostEnd(t *testing.T) {
	host := newNS(t)
	cont := newNS(t)
	linktest.Do(t, host, func() error {
		br, err := EnsureBridge(linktest.Name("v6tbr"), 0)
		if err != nil {
			return err
		}
		spec := vethTestSpec(t, cont, br.Index, true)
		first, err := CreateVeth(spec)
		if err != nil {
			return err
		}
		// A retried ADD: the host end (and with it the container end)
		// is there already. The kernel answers EEXIST and makes nothing.
		if _, err := addVeth(spec, true); !errors.Is(err, unix.EEXIST) {
			t.Fatalf("second addVeth: err = %v, want EEXIST", err)
		}
		second, err := CreateVeth(spec)
		if err != nil {
			return err
		}
		if second.Index == first.Index {
			t.Errorf("retried CreateVeth kept index %d: the stale pair was not replaced", first.Index)
		}
		if got := mustIndex(t, spec.HostName); got != second.Index {
			t.Errorf("host end index = %d, CreateVeth returned %d", got, second.Index)
		}
		if _, err := netlink.LinkByIndex(first.Index); err == nil {
			t.Errorf("stale host end (index %d) still exists", first.Index)
		}
		return nil
	})
}

func TestCreateVethErrorsLeaveNothing(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()

	for _, creator := range vethCreators {
		for _, tt := range []struct {
			name string
			// mangle breaks spec; it runs in the host netns, cont is
			// the container's.
			mangle func(t *testing.T, spec *VethSpec, cont ns.NetNS)
			errno  unix.Errno
		}{
			{
				name:   "no link of the bridge index",
				mangle: func(_ *testing.T, spec *VethSpec, _ ns.NetNS) { spec.BridgeIndex = 1 << 30 },
				errno:  unix.EINVAL,
			},
			{
				// After the echo: the kernel unregisters the new pair.
				name:   "bridge index of a link that takes no ports (lo)",
				mangle: func(_ *testing.T, spec *VethSpec, _ ns.NetNS) { spec.BridgeIndex = 1 },
				errno:  unix.EOPNOTSUPP,
			},
			{
				name:   "netns fd not a network namespace",
				mangle: func(_ *testing.T, spec *VethSpec, _ ns.NetNS) { spec.NetNSFd = int(devNull.Fd()) },
				errno:  unix.EINVAL,
			},
			{
				name: "container end name taken in the container",
				mangle: func(t *testing.T, spec *VethSpec, cont ns.NetNS) {
					linktest.Do(t, cont, func() error { return addVethPair(spec.ContainerName) })
				},
				errno: unix.EEXIST,
			},
		} {
			t.Run(creator.name+"/"+tt.name, func(t *testing.T) {
				host := newNS(t)
				cont := newNS(t)
				var spec VethSpec
				linktest.Do(t, host, func() error {
					br, err := EnsureBridge(linktest.Name("v6tbr"), 0)
					if err != nil {
						return err
					}
					spec = vethTestSpec(t, cont, br.Index, true)
					tt.mangle(t, &spec, cont)
					_, err = creator.create(spec)
					if !errors.Is(err, tt.errno) {
						t.Errorf("err = %v, want %v", err, tt.errno)
					}
					if creator.name == "echo" && (err == nil || !strings.Contains(err.Error(), spec.HostName) || !strings.Contains(err.Error(), spec.ContainerName)) {
						t.Errorf("err = %v, want one naming %s and %s", err, spec.HostName, spec.ContainerName)
					}
					if ok, err := LinkExists(spec.HostName); err != nil || ok {
						t.Errorf("host end %s left behind (err %v)", spec.HostName, err)
					}
					return nil
				})
				linktest.Do(t, cont, func() error {
					links, err := netlink.LinkList()
					if err != nil {
						return err
					}
					for _, l := range links {
						if l.Attrs().HardwareAddr.String() == spec.ContainerMAC.String() {
							t.Errorf("container end %s left behind", l.Attrs().Name)
						}
					}
					return nil
				})
			})
		}
	}
}

// addVethVishvananda is how CreateVeth created the pair before it built
// its own request (vishvananda/netlink's LinkAdd: RTM_NEWLINK, RTM_GETLINK
// by name for the index, RTM_SETLINK for the master; then RTM_SETLINK for
// addr_gen_mode, each on a socket of its own). BenchmarkCreateVeth
// compares the two.
func addVethVishvananda(spec VethSpec) (*netlink.Veth, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.HostName
	attrs.HardwareAddr = spec.HostMAC
	attrs.MTU = spec.MTU
	attrs.Flags = net.FlagUp
	attrs.MasterIndex = spec.BridgeIndex
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         spec.ContainerName,
		PeerHardwareAddr: spec.ContainerMAC,
		PeerNamespace:    netlink.NsFd(spec.NetNSFd),
		PeerMTU:          uint32(max(spec.MTU, 0)),
	}
	err := netlink.LinkAdd(veth)
	if err == nil && veth.Index == 0 {
		err = errors.New("index of new veth unknown")
	}
	if err != nil {
		if !errors.Is(err, unix.EEXIST) {
			_ = DeleteLinkByName(spec.HostName)
		}
		return nil, err
	}
	_ = netlink.LinkSetIP6AddrGenMode(veth, in6AddrGenModeNone)
	return veth, nil
}

// BenchmarkCreateVeth times the creation of an attachment's veth pair, its
// deletion excluded. cpu-ns/op is the CPU time of the creating thread, the
// kernel's work for the requests included (rtnetlink handles them in the
// sender's context): the cost the plugin pays, less exposed to the wait for
// the RTNL lock than ns/op. Run as root:
//
//	go test -run '^$' -bench CreateVeth ./pkg/link/
func BenchmarkCreateVeth(b *testing.B) {
	for _, bm := range []struct {
		name   string
		create func(VethSpec) (*netlink.Veth, error)
	}{
		{"vishvananda-LinkAdd", addVethVishvananda},
		{"one-request-echo", CreateVeth},
		{"one-request-getlink", func(spec VethSpec) (*netlink.Veth, error) { return addVeth(spec, false) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			host := newNS(b)
			cont := newNS(b)
			id := make([]byte, 4)
			_, _ = rand.Read(id)
			cid := hex.EncodeToString(id)
			err := host.Do(func(ns.NetNS) error {
				br, err := EnsureBridge("v6bbr"+cid, 1400)
				if err != nil {
					return err
				}
				spec := VethSpec{
					HostName:      HostVethName(cid, "eth0"),
					HostMAC:       HostVethMAC(cid, "eth0"),
					ContainerName: "eth0",
					ContainerMAC:  ContainerMAC("testnet", cid, "eth0"),
					MTU:           1400,
					BridgeIndex:   br.Index,
					NetNSFd:       int(cont.Fd()),
				}
				var cpu time.Duration
				for b.Loop() {
					start := threadCPUTime()
					if _, err := bm.create(spec); err != nil {
						return err
					}
					cpu += threadCPUTime() - start
					b.StopTimer()
					if err := DeleteLinkByName(spec.HostName); err != nil {
						return err
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

// threadCPUTime is the CPU time of the calling thread so far.
func threadCPUTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

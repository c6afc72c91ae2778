package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// Names under which the test binary acts as a program instead of running
// tests (TestMain dispatches on them): where the tests run in a vmtest
// guest there is nothing else to exec, no shell, no go tool.
const (
	// staticIPAMName is a static IPAM plugin: ADD returns the
	// ipam.addresses of the config, as the reference `static` IPAM does.
	staticIPAMName = "v6test-static-ipam"
	// pluginName is bridge-v6 itself.
	pluginName = "bridge-v6"
)

// runAsProgram runs the test binary as the program its name says, and
// reports whether it did.
func runAsProgram() bool {
	switch filepath.Base(os.Args[0]) {
	case staticIPAMName:
		staticIPAMMain()
	case pluginName:
		main()
	default:
		return false
	}
	return true
}

// staticIPAMConf is what the static test IPAM reads.
type staticIPAMConf struct {
	CNIVersion string `json:"cniVersion"`
	IPAM       struct {
		Addresses []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"addresses"`
	} `json:"ipam"`
}

func staticIPAMMain() {
	noop := func(*skel.CmdArgs) error { return nil }
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			var conf staticIPAMConf
			if err := json.Unmarshal(args.StdinData, &conf); err != nil {
				return fmt.Errorf("static test IPAM: %w", err)
			}
			result := &current.Result{CNIVersion: current.ImplementedSpecVersion}
			for _, a := range conf.IPAM.Addresses {
				ip, ipNet, err := net.ParseCIDR(a.Address)
				if err != nil {
					return fmt.Errorf("static test IPAM: address %q: %w", a.Address, err)
				}
				ipNet.IP = ip
				result.IPs = append(result.IPs, &current.IPConfig{Address: *ipNet, Gateway: net.ParseIP(a.Gateway)})
			}
			return types.PrintResult(result, conf.CNIVersion)
		},
		Del: noop, Check: noop, Status: noop, GC: noop,
	}, version.All, "v6cni test static IPAM")
}

// linkSelfAs makes the test binary callable as name from dir (on PATH,
// which testutils passes as CNI_PATH) and returns the link's path.
func linkSelfAs(t *testing.T, dir, name string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.Symlink(exe, p); err != nil {
		t.Fatal(err)
	}
	return p
}

var pingID atomic.Uint32

// ping6 sends ICMPv6 echo requests from netns to dst, one every 200 ms,
// until one is answered (nil) or timeout passes. It needs no ping binary
// (a vmtest guest has none): a raw ICMPv6 socket opened in the netns.
func ping6(netns ns.NetNS, dst string, timeout time.Duration) error {
	to, err := netip.ParseAddr(dst)
	if err != nil {
		return err
	}
	return netns.Do(func(ns.NetNS) error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return fmt.Errorf("open an ICMPv6 socket: %w", err)
		}
		defer c.Close()
		id := int(pingID.Add(1)&0x7fff) + os.Getpid()%0x7fff
		buf := make([]byte, 1500)
		deadline := time.Now().Add(timeout)
		var sendErr error
		for seq := 1; time.Now().Before(deadline); seq++ {
			req, err := (&icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("v6cni")}}).Marshal(nil)
			if err != nil {
				return err
			}
			// The kernel fills in the ICMPv6 checksum. A failed
			// neighbour resolution may fail a later send: try on.
			if _, err := c.WriteTo(req, &net.IPAddr{IP: to.AsSlice()}); err != nil {
				sendErr = err
			}
			_ = c.SetReadDeadline(time.Now().Add(min(200*time.Millisecond, time.Until(deadline))))
			for {
				n, peer, err := c.ReadFrom(buf)
				if err != nil {
					break // read deadline: send again
				}
				m, err := icmp.ParseMessage(ipv6.ICMPTypeEchoReply.Protocol(), buf[:n])
				if err != nil || m.Type != ipv6.ICMPTypeEchoReply {
					continue
				}
				echo, ok := m.Body.(*icmp.Echo)
				from, _ := netip.AddrFromSlice(peer.(*net.IPAddr).IP)
				if ok && echo.ID == id && from.Unmap() == to {
					return nil
				}
			}
		}
		if sendErr != nil {
			return fmt.Errorf("no echo reply from %s in %v (last send error: %w)", dst, timeout, sendErr)
		}
		return fmt.Errorf("no echo reply from %s in %v", dst, timeout)
	})
}

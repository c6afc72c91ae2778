package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/ra"
	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// eui64Result makes the fake IPAM answer with the EUI-64 address of the
// MAC the plugin derives for (v6net, containerID, eth0), as an eui64 IPAM
// does, plus an IPv4 address (dual-stack stays static).
func eui64Result(t *testing.T, containerID string) netip.Addr {
	t.Helper()
	prefix := netip.MustParsePrefix("2001:db8:cafe:3::/64")
	addr := macaddr.EUI64(prefix, macaddr.Derive("v6net", containerID, "eth0"))
	result := fmt.Sprintf(`{"cniVersion":"1.0.0",
  "ips":[{"address":"%s/64","gateway":"2001:db8:cafe:3::1"},{"address":"10.244.5.2/24","gateway":"10.244.5.1"}],
  "dns":{"nameservers":["2001:db8:cafe:a::e"],"search":["example.com"]}}`, addr)
	file := filepath.Join(t.TempDir(), "eui64.json")
	if err := os.WriteFile(file, []byte(result), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_IPAM_RESULT", file)
	return addr
}

// TestSLAACMode: with an RA server on the bridge (what ipamd will run), ADD
// in ipv6Mode slaac lets the container's kernel form the address, waits for
// it, reports it; CHECK passes; the container reaches the gateway.
func TestSLAACMode(t *testing.T) {
	e := setup(t)
	linktest.RequireCommand(t, "ping", "iputils-ping")
	const containerID = "51aac0de51aac0de"
	want := eui64Result(t, containerID)
	// The bridge exists before the first attachment here, with carrier,
	// so the RA server has its link-local address.
	linktest.Bridge(t, e.host, e.bridge)
	srv, err := ra.New(ra.Config{
		Interface: e.bridge, Mode: ra.ModeSLAAC, Prefixes: ra.Prefixes(netip.MustParsePrefix("2001:db8:cafe:3::/64")),
		DNS: []netip.Addr{netip.MustParseAddr("2001:db8:cafe:a::e")}, Search: []string{"example.com"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait := linktest.Go(t, e.host, func() error { return srv.Run(ctx) })
	t.Cleanup(func() { cancel(); _ = wait() })
	select {
	case <-srv.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("RA server not ready within 10s")
	}

	conf := e.conf("1.1.0", `,"ipv6Mode":"slaac"`)
	args := e.args(containerID, conf)
	var raw []byte
	if err := e.inHost(t, func() error {
		var err error
		_, raw, err = testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	}); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res := mustResult(t, "1.1.0", raw)
	if len(res.IPs) != 2 || res.IPs[0].Address.IP.String() != want.String() {
		t.Fatalf("result ips %v, want %s first", res.IPs, want)
	}
	for _, r := range res.Routes {
		if r.Dst.String() == "::/0" {
			t.Errorf("result has an IPv6 default route %v: it comes from the RA in slaac mode", r)
		}
	}
	linktest.Do(t, e.cont, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var have []string
		for _, a := range addrs {
			have = append(have, a.IPNet.String())
		}
		for _, w := range []string{want.String() + "/64", "10.244.5.2/24"} {
			if !strings.Contains(strings.Join(have, " "), w) {
				t.Errorf("eth0 addresses %v lack %s", have, w)
			}
		}
		for key, v := range map[string]string{"accept_ra": "1", "autoconf": "1", "addr_gen_mode": "0"} {
			if got, _ := sysctl.Sysctl("net/ipv6/conf/eth0/" + key); got != v {
				t.Errorf("eth0 %s = %s, want %s", key, got, v)
			}
		}
		return nil
	})

	checkArgs := e.args(containerID, e.conf("1.1.0", `,"ipv6Mode":"slaac","prevResult":`+string(raw)))
	if err := e.inHost(t, func() error {
		return testutils.CmdCheckWithArgs(checkArgs, func() error { return cmdCheck(checkArgs) })
	}); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if out, err := linktest.Run(t, e.cont, 15*time.Second, "ping", "-6", "-c", "1", "-W", "5", "2001:db8:cafe:3::1"); err != nil {
		t.Fatalf("ping the gateway: %v\n%s", err, out)
	}

	// The address gone (e.g. the RA server stopped, lifetimes ran out):
	// CHECK names it. The server stops first: its final RA still carries
	// the prefix, which would form the address again.
	cancel()
	_ = wait()
	linktest.Do(t, e.cont, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrDel(l, &netlink.Addr{IPNet: link.IPNet(netip.PrefixFrom(want, 64))})
	})
	err = e.inHost(t, func() error {
		return testutils.CmdCheckWithArgs(checkArgs, func() error { return cmdCheck(checkArgs) })
	})
	if err == nil || !strings.Contains(err.Error(), want.String()) {
		t.Fatalf("CHECK without the address: %v, want an error naming %s", err, want)
	}
}

// TestSLAACModeWithoutRouter: no RA server on the bridge, so the address
// never comes: ADD fails after its bounded wait, naming the address, and
// rolls back (veth gone, IPAM DEL called).
func TestSLAACModeWithoutRouter(t *testing.T) {
	e := setup(t)
	const containerID = "0a0a0a0a0a0a0a0a"
	want := eui64Result(t, containerID)
	conf := e.conf("1.1.0", `,"ipv6Mode":"dhcpv6-stateless"`)
	args := e.args(containerID, conf)
	err := e.inHost(t, func() error {
		_, _, err := testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	})
	if err == nil || !strings.Contains(err.Error(), want.String()) {
		t.Fatalf("ADD without router advertisements: %v, want an error naming %s", err, want)
	}
	if !strings.Contains(e.ipamCalls(t), "DEL "+containerID) {
		t.Errorf("failed ADD did not call IPAM DEL: %q", e.ipamCalls(t))
	}
	if err := e.cont.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return fmt.Errorf("eth0 left behind in the container")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestStatefulModeDoesNotWait: in dhcpv6-stateful the workload's own DHCPv6
// client configures the address after ADD: ADD configures RAs on, SLAAC
// off, adds no IPv6 address, and returns at once; CHECK reports the
// address missing until the client got it.
func TestStatefulModeDoesNotWait(t *testing.T) {
	e := setup(t)
	const containerID = "5ta7ef0151a7ef01"
	want := eui64Result(t, containerID)
	args := e.args(containerID, e.conf("1.1.0", `,"ipv6Mode":"dhcpv6-stateful"`))
	var raw []byte
	if err := e.inHost(t, func() error {
		var err error
		_, raw, err = testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	}); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	linktest.Do(t, e.cont, func() error {
		for key, v := range map[string]string{"accept_ra": "1", "autoconf": "0"} {
			if got, _ := sysctl.Sysctl("net/ipv6/conf/eth0/" + key); got != v {
				t.Errorf("eth0 %s = %s, want %s", key, got, v)
			}
		}
		return nil
	})
	checkArgs := e.args(containerID, e.conf("1.1.0", `,"ipv6Mode":"dhcpv6-stateful","prevResult":`+string(raw)))
	check := func() error {
		return e.inHost(t, func() error {
			return testutils.CmdCheckWithArgs(checkArgs, func() error { return cmdCheck(checkArgs) })
		})
	}
	if err := check(); err == nil || !strings.Contains(err.Error(), want.String()) {
		t.Fatalf("CHECK before the DHCPv6 client ran: %v, want an error naming %s", err, want)
	}
	// What dhclient -6 does: the address as a /128.
	linktest.Do(t, e.cont, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: link.IPNet(netip.PrefixFrom(want, 128))})
	})
	if err := check(); err != nil {
		t.Fatalf("CHECK with the address: %v", err)
	}
}

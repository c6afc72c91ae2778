package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// selfConfNet is a network whose containers configure IPv6 themselves
// (bridge-v6 ipv6Mode), with DNS for the RA's RDNSS/DNSSL and DHCPv6.
func selfConfNet(t *testing.T, d *ipamd, mode string) (*testNet, map[string]any) {
	t.Helper()
	n := newNet(t, d, false)
	n.IPAM["dns"] = map[string]any{"nameservers": []string{"2001:db8:53::53"}, "search": []string{"v6cni.example"}}
	conf := n.pluginConf()
	conf["ipv6Mode"] = mode
	return n, conf
}

func confListWith(t *testing.T, n *testNet, plugin map[string]any) []byte {
	t.Helper()
	return mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": n.Name, "plugins": []any{plugin}})
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSLAACModeServedByIpamd: with ipv6Mode slaac, ipamd serves router
// advertisements on the bridge; the container's own kernel forms exactly
// the address IPAM recorded (the EUI-64 of its MAC) and learns its default
// route from the RA; rdisc6 shows the flags, the prefix, RDNSS and DNSSL;
// after an ipamd restart the bridge is served again (rebuilt from etcd).
func TestSLAACModeServedByIpamd(t *testing.T) {
	d := startIpamd(t)
	n, plugin := selfConfNet(t, d, "slaac")
	list := mustConfList(t, confListWith(t, n, plugin))
	c := newContainer(t, newCNI(t), list)
	start := time.Now()
	r := c.mustAdd(t)
	t.Logf("ADD on a new bridge, waiting for the SLAAC address: %v", time.Since(start).Round(time.Millisecond))
	want := netip.PrefixFrom(mustAddr(t, r.IPs[0].Address.IP), 64)
	st, err := linkIn(t, c.NS, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Addrs) != 1 || st.Addrs[0] != want.String() {
		t.Fatalf("eth0 addresses %v, want exactly the recorded %s", st.Addrs, want)
	}
	if err := c.NS.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, rt := range routes {
			if rt.Dst == nil || rt.Dst.String() == "::/0" {
				if rt.Gw != nil && rt.Gw.IsLinkLocalUnicast() && rt.Protocol == 9 /* RTPROT_RA */ {
					return nil
				}
			}
		}
		return fmt.Errorf("no default route learned from an RA in %v", routes)
	}); err != nil {
		t.Error(err)
	}
	requirePing(t, c.NS, r.IPs[0].Gateway)
	out, err := runIn(t, c.NS, requireCmd(t, "rdisc6", "ndisc6"), "-1", "-w", "3000", "eth0")
	if err != nil {
		t.Fatalf("rdisc6: %v\n%s", err, out)
	}
	for _, w := range []string{"Stateful address conf.    :           No", want.Masked().String(), "2001:db8:53::53", "v6cni.example"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("rdisc6 output lacks %q:\n%s", w, out)
		}
	}

	d.restart(t)
	out, err = runIn(t, c.NS, "rdisc6", "-1", "-w", "3000", "eth0")
	if err != nil || !strings.Contains(string(out), want.Masked().String()) {
		t.Errorf("after an ipamd restart, no RA on the bridge: %v\n%s", err, out)
	}
}

// TestDHCPv6StatefulServedByIpamd: with ipv6Mode dhcpv6-stateful, a real
// DHCPv6 client (dhclient -6) in the container gets exactly the address
// IPAM recorded for its MAC, with the network's DNS.
func TestDHCPv6StatefulServedByIpamd(t *testing.T) {
	d := startIpamd(t)
	n, plugin := selfConfNet(t, d, "dhcpv6-stateful")
	c := newContainer(t, newCNI(t), mustConfList(t, confListWith(t, n, plugin)))
	r := c.mustAdd(t)
	want := mustAddr(t, r.IPs[0].Address.IP).String()
	ev := runDhclient(t, c.NS, "reason=BOUND6")
	if !strings.Contains(ev, "addr="+want+" ") || !strings.Contains(ev, "2001:db8:53::53") {
		t.Errorf("dhclient events %q: want the recorded address %s and the DNS server", ev, want)
	}
}

// TestDHCPv6StatelessServedByIpamd: with ipv6Mode dhcpv6-stateless the
// kernel forms the recorded SLAAC address, and dhclient -6 -S gets the DNS
// servers and search list from ipamd's DHCPv6 server (Information-Request).
func TestDHCPv6StatelessServedByIpamd(t *testing.T) {
	d := startIpamd(t)
	n, plugin := selfConfNet(t, d, "dhcpv6-stateless")
	c := newContainer(t, newCNI(t), mustConfList(t, confListWith(t, n, plugin)))
	r := c.mustAdd(t)
	want := netip.PrefixFrom(mustAddr(t, r.IPs[0].Address.IP), 64).String()
	if st, err := linkIn(t, c.NS, "eth0"); err != nil || len(st.Addrs) != 1 || st.Addrs[0] != want {
		t.Fatalf("eth0 addresses %v (%v), want the recorded %s", st.Addrs, err, want)
	}
	ev := runDhclient(t, c.NS, "dns=2001:db8:53::53", "-S")
	if !strings.Contains(ev, "2001:db8:53::53") || !strings.Contains(ev, "v6cni.example") {
		t.Errorf("dhclient -S events %q: want the DNS server and search list", ev)
	}
}

// runDhclient runs dhclient -6 (plus args) on eth0 in n until its script
// has reported until, and returns what the script saw.
func runDhclient(t *testing.T, n *testNS, until string, args ...string) string {
	t.Helper()
	dhclient := requireCmd(t, "dhclient", "isc-dhcp-client")
	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"reason=$reason addr=$new_ip6_address dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search\" >> "+events+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "dhclient.conf")
	if err := os.WriteFile(conf, []byte("request dhcp6.name-servers, dhcp6.domain-search;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"--net=" + n.Path(), dhclient, "-6", "-d", "-cf", conf, "-sf", script,
		"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid")}, args...)
	cmd := exec.Command("nsenter", append(argv, "eth0")...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })
	var got string
	waitUntil(t, 30*time.Second, "dhclient script reporting "+until, func() bool {
		b, _ := os.ReadFile(events)
		got = string(b)
		return strings.Contains(got, until)
	})
	return got
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustConfList(t *testing.T, b []byte) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	return l
}

func mustAddr(t *testing.T, ip net.IP) netip.Addr {
	t.Helper()
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		t.Fatalf("bad address %v", ip)
	}
	return a.Unmap()
}

// requireCmd finds a command, failing (never skipping) with the Debian
// package that has it.
func requireCmd(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (Debian package %s; run scripts/install-deps.sh): %v", name, pkg, err)
	}
	return p
}

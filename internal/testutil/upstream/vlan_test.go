package upstream

import (
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/vmtest"
)

// vlanSupported probes the running kernel for 802.1Q: a VLAN
// sub-interface of a veth in a throw-away netns.
func vlanSupported(t *testing.T) bool {
	t.Helper()
	name := "up-probe-" + randomHex(3)
	if err := run("ip", "netns", "add", name); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = run("ip", "netns", "del", name) }()
	if err := run("ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"); err != nil {
		t.Fatal(err)
	}
	err := run("ip", "-n", name, "link", "add", "link", "v0", "name", "v0.22", "type", "vlan", "id", "22")
	if err != nil {
		t.Logf("no 802.1Q in the running kernel (%v): the test runs in a vmtest guest", err)
	}
	return err == nil
}

// TestVLAN: the segment tagged with VLAN 22, a node on a trunk making its
// own eth0.22: SLAAC address, default route via fe80::1, both hosts
// reachable, failover. Where the running kernel lacks 802.1Q it runs in
// a guest (package vmtest) with ip, radvd and keepalived copied in.
func TestVLAN(t *testing.T) {
	t.Parallel()
	if !vmtest.InGuest() && !vlanSupported(t) {
		vmtest.Run(t, vmtest.Config{Run: "^TestVLAN$", Modules: []string{"bridge", "8021q", "veth"},
			Binaries: []string{"ip", "radvd", "keepalived"}})
		return
	}
	l := Start(t, Config{Mode: VRRP, VLAN: 22, AdvertInterval: 100 * time.Millisecond, SearchDomain: "prov.example"})
	c, ifn := newClient(t, l, "c", "eth0")
	if ifn != "eth0.22" {
		t.Fatalf("client interface %s, want eth0.22", ifn)
	}
	checkSegment(t, l, c, ifn, GatewayLL)
	m := l.Master()
	s := failover(t, l, c, m, 20*time.Millisecond, 30*time.Second, nil)
	if l.Master() != l.Other(m) {
		t.Fatalf("after killing %s the master is %v, want %s", m.Name, l.Master(), l.Other(m).Name)
	}
	t.Logf("UPSTREAM-FIGURES vrrp vlan=22 advert=100ms ping-interval=20ms lost=%d outage=%s outages=%d sent=%d",
		s.Lost, s.Outage.Round(time.Millisecond), s.Outages, s.Sent)
}

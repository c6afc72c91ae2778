package dhcp6server

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

// solicit sends a Solicit with duid from eth0 of cont and returns the
// address the answer offers (invalid when it offers none).
func solicit(t *testing.T, cont ns.NetNS, duid dhcpv6.DUID) netip.Addr {
	t.Helper()
	var got netip.Addr
	linktest.Do(t, cont, func() error {
		conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: dhcpv6.DefaultClientPort})
		if err != nil {
			return err
		}
		defer conn.Close()
		m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeSolicit, TransactionID: dhcpv6.TransactionID{7, 7, 7}}
		m.AddOption(dhcpv6.OptClientID(duid))
		m.AddOption(&dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}})
		to := &net.UDPAddr{IP: dhcpv6.AllDHCPRelayAgentsAndServers, Port: dhcpv6.DefaultServerPort, Zone: "eth0"}
		buf := make([]byte, 1500)
		// Retransmit: the bridge port may still be learning.
		for range 20 {
			if _, err := conn.WriteTo(m.ToBytes(), to); err != nil {
				// eth0 may not have its multicast route yet.
				time.Sleep(200 * time.Millisecond)
				continue
			}
			_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				continue
			}
			d, err := dhcpv6.FromBytes(buf[:n])
			if err != nil {
				return err
			}
			got = offered(d.(*dhcpv6.Message))
			return nil
		}
		t.Errorf("no answer to a Solicit from %s", duid)
		return nil
	})
	return got
}

// TestSpoofedDUIDInNetns: on a real bridge, container B sending container
// A's DUID-LL (and then also A's MAC as its own) is offered only what the
// port and frame it sends from are bound to; A still gets its own address.
func TestSpoofedDUIDInNetns(t *testing.T) {
	linktest.RequireRoot(t)
	router, contA, contB := linktest.NewNS(t), linktest.NewNS(t), linktest.NewNS(t)
	macA := net.HardwareAddr{2, 0, 0, 0x10, 0x20, 0x41}
	macB := net.HardwareAddr{2, 0, 0, 0x10, 0x20, 0x42}
	addrA := netip.MustParseAddr("2001:db8:cafe:3::a")
	addrB := netip.MustParseAddr("2001:db8:cafe:3::b")
	portA, portB := linktest.Name("dsa"), linktest.Name("dsb")
	bound := map[string]struct {
		mac  string
		addr netip.Addr
	}{portA: {macA.String(), addrA}, portB: {macB.String(), addrB}}
	cfg := Config{Interface: linktest.Name("dsbr"), Lookup: func(from Origin) ([]Lease, bool) {
		b, ok := bound[from.Port]
		return []Lease{{Addr: b.addr}}, ok && b.mac == from.MAC.String()
	}}
	linktest.Bridge(t, router, cfg.Interface)
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait := linktest.Go(t, router, func() error { return s.Run(ctx) })
	t.Cleanup(func() { cancel(); _ = wait() })
	linktest.Attach(t, router, cfg.Interface, portA, contA, "eth0", macA, nil)
	linktest.Attach(t, router, cfg.Interface, portB, contB, "eth0", macB, nil)

	duidA := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: macA}
	if got := solicit(t, contA, duidA); got != addrA {
		t.Fatalf("honest A offered %v, want %s", got, addrA)
	}
	if got := solicit(t, contB, duidA); got != addrB {
		t.Fatalf("B with A's DUID offered %v, want only its own %s", got, addrB)
	}
	// B takes A's MAC too: its port is still B's, so nothing.
	linktest.Do(t, contB, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, macA)
	})
	if got := solicit(t, contB, duidA); got.IsValid() {
		t.Fatalf("B with A's DUID and MAC offered %s, want NoAddrsAvail", got)
	}
	if got := solicit(t, contA, duidA); got != addrA {
		t.Fatalf("honest A after the spoofing offered %v, want %s", got, addrA)
	}
}

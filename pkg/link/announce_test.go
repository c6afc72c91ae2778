package link

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/ndp"
	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TestUnsolicitedNA checks the advertisement's bytes against an independent
// NDP implementation: ndp parses them as a Neighbor Advertisement with the
// right flags, target and Target Link-Layer Address option, and encodes the
// same message to the same bytes.
func TestUnsolicitedNA(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	for _, tt := range []struct {
		name     string
		target   string
		override bool
	}{
		{"global", "2001:db8:cafe:3::2", true},
		{"link-local", "fe80::42:acff:fe11:2", true},
		{"optimistic (no override)", "2001:db8::1:2", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target := netip.MustParseAddr(tt.target)
			b := unsolicitedNA(target, mac, tt.override)

			m, err := ndp.ParseMessage(b[:])
			if err != nil {
				t.Fatalf("ndp.ParseMessage(% x): %v", b, err)
			}
			na, ok := m.(*ndp.NeighborAdvertisement)
			if !ok {
				t.Fatalf("parsed a %T, want *ndp.NeighborAdvertisement", m)
			}
			if na.TargetAddress != target {
				t.Errorf("target = %s, want %s", na.TargetAddress, target)
			}
			if na.Router || na.Solicited || na.Override != tt.override {
				t.Errorf("flags R=%v S=%v O=%v, want R=false S=false O=%v", na.Router, na.Solicited, na.Override, tt.override)
			}
			if len(na.Options) != 1 {
				t.Fatalf("options = %v, want one Target Link-Layer Address", na.Options)
			}
			lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
			if !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, mac) {
				t.Errorf("option = %#v, want Target Link-Layer Address %s", na.Options[0], mac)
			}
			if b[1] != 0 || b[2] != 0 || b[3] != 0 {
				t.Errorf("code/checksum = % x, want zeros (the kernel fills the checksum in)", b[1:4])
			}

			want, err := ndp.MarshalMessage(&ndp.NeighborAdvertisement{
				Override:      tt.override,
				TargetAddress: target,
				Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[:], want) {
				t.Errorf("bytes\n% x\nwant (ndp.MarshalMessage)\n% x", b, want)
			}
		})
	}
}

// TestAppendNeighReq checks the hand-built neighbour requests against the
// netlink library's encoding of the same requests, sequence numbers aside.
func TestAppendNeighReq(t *testing.T) {
	for _, tt := range []struct {
		name         string
		typ, flags   uint16
		ntf          uint8
		ifindex      int
		addr         string
		wantLibFlags int
	}{
		{"use", unix.RTM_NEWNEIGH, unix.NLM_F_CREATE | unix.NLM_F_REPLACE, unix.NTF_USE, 7, "192.0.2.2", unix.NLM_F_CREATE | unix.NLM_F_REPLACE | unix.NLM_F_ACK},
		{"delete", unix.RTM_DELNEIGH, 0, 0, 1 << 20, "198.51.100.254", unix.NLM_F_ACK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := netip.MustParseAddr(tt.addr)
			m := nlraw.NewMsg([]byte{0xaa})
			appendNeighReq(&m, tt.typ, tt.flags, tt.ntf, 42, tt.ifindex, addr)
			got := m.Bytes()
			if got[0] != 0xaa {
				t.Fatal("appendNeighReq overwrote the buffer's start")
			}
			got = got[1:]
			if len(got) != neighReqLen {
				t.Fatalf("length %d, want %d", len(got), neighReqLen)
			}

			lib := nl.NewNetlinkRequest(int(tt.typ), tt.wantLibFlags)
			lib.AddData(&netlink.Ndmsg{Family: unix.AF_INET, Index: uint32(tt.ifindex), Flags: tt.ntf})
			lib.AddData(nl.NewRtAttr(unix.NDA_DST, addr.AsSlice()))
			want := lib.Serialize()
			binary.NativeEndian.PutUint32(want[8:12], 42) // the library numbers requests itself
			if !bytes.Equal(got, want) {
				t.Errorf("request\n% x\nwant (netlink library)\n% x", got, want)
			}
		})
	}
}

// TestAnnounceAddrsRejects: what cannot be announced fails before any
// socket is opened, naming the interface (and the address).
func TestAnnounceAddrsRejects(t *testing.T) {
	l := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "v6tnone", Index: 1 << 30,
		HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}}}
	for _, tt := range []struct {
		name  string
		mac   net.HardwareAddr
		addrs []netip.Prefix
		want  []string
	}{
		{"short MAC", net.HardwareAddr{1, 2, 3}, []netip.Prefix{mustPrefix("2001:db8::2/64")}, []string{"v6tnone", "not an Ethernet address"}},
		{"long MAC", make(net.HardwareAddr, 20), []netip.Prefix{mustPrefix("2001:db8::2/64")}, []string{"v6tnone", "not an Ethernet address"}},
		{"multicast", nil, []netip.Prefix{mustPrefix("ff02::1/128")}, []string{"v6tnone", "ff02::1", "not a unicast address"}},
		{"unspecified", nil, []netip.Prefix{mustPrefix("::/0")}, []string{"v6tnone", "::", "not a unicast address"}},
		{"zero prefix", nil, []netip.Prefix{{}}, []string{"v6tnone", "not a unicast address"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := AnnounceAddrs(l, tt.mac, tt.addrs)
			if err == nil {
				t.Fatal("AnnounceAddrs succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestAnnounceAddrsNothing: no address, no socket, no error.
func TestAnnounceAddrsNothing(t *testing.T) {
	l := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "v6tnone", Index: 1 << 30,
		HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}}}
	if err := AnnounceAddrs(l, nil, nil); err != nil {
		t.Fatal(err)
	}
}

package link

import (
	"bytes"
	"net"
	"testing"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// attrMap collects the attributes of b by type, failing on a duplicate.
func attrMap(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	m := map[uint16][]byte{}
	nlraw.WalkAttrs(b, func(typ uint16, v []byte) bool {
		if _, dup := m[typ]; dup {
			t.Errorf("attribute %d twice", typ)
		}
		m[typ] = v
		return true
	})
	return m
}

// checkAttrs compares the attributes got with want, ignoring the types in
// skip (nested attributes checked separately).
func checkAttrs(t *testing.T, what string, got, want map[uint16][]byte, skip ...uint16) {
	t.Helper()
	for _, typ := range skip {
		delete(got, typ)
	}
	for typ, w := range want {
		if g, ok := got[typ]; !ok {
			t.Errorf("%s: attribute %d missing", what, typ)
		} else if !bytes.Equal(g, w) {
			t.Errorf("%s: attribute %d = %x, want %x", what, typ, g, w)
		}
	}
	for typ, g := range got {
		if _, ok := want[typ]; !ok {
			t.Errorf("%s: unexpected attribute %d = %x", what, typ, g)
		}
	}
}

func TestVethRequest(t *testing.T) {
	hostMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	contMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	u32 := nl.Uint32Attr
	for _, tt := range []struct {
		name     string
		spec     VethSpec
		echo     bool
		wantHost map[uint16][]byte // besides IFLA_LINKINFO
		wantPeer map[uint16][]byte
	}{
		{
			name: "everything",
			spec: VethSpec{HostName: "v6c0123456789ab", HostMAC: hostMAC, ContainerName: "eth0", ContainerMAC: contMAC, MTU: 1400, BridgeIndex: 7, NetNSFd: 42},
			echo: true,
			wantHost: map[uint16][]byte{
				unix.IFLA_IFNAME:  []byte("v6c0123456789ab\x00"),
				unix.IFLA_ADDRESS: hostMAC,
				unix.IFLA_MTU:     u32(1400),
				unix.IFLA_MASTER:  u32(7),
			},
			wantPeer: map[uint16][]byte{
				unix.IFLA_IFNAME:    []byte("eth0\x00"),
				unix.IFLA_ADDRESS:   contMAC,
				unix.IFLA_MTU:       u32(1400),
				unix.IFLA_NET_NS_FD: u32(42),
			},
		},
		{
			name:     "kernel defaults, no bridge, no echo",
			spec:     VethSpec{HostName: "v6c0123456789ab", ContainerName: "net1", NetNSFd: 3},
			wantHost: map[uint16][]byte{unix.IFLA_IFNAME: []byte("v6c0123456789ab\x00")},
			wantPeer: map[uint16][]byte{unix.IFLA_IFNAME: []byte("net1\x00"), unix.IFLA_NET_NS_FD: u32(3)},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			native := nl.NativeEndian()
			b := vethRequest(tt.spec, 42, tt.echo)
			if want := vethRequestNL(tt.spec, 42, tt.echo); !bytes.Equal(b, want) {
				t.Errorf("request\n% x\nwant (built with the netlink library)\n% x", b, want)
			}
			if int(native.Uint32(b)) != len(b) {
				t.Fatalf("nlmsg_len %d, message of %d bytes", native.Uint32(b), len(b))
			}
			if typ := native.Uint16(b[4:]); typ != unix.RTM_NEWLINK {
				t.Errorf("type %d, want RTM_NEWLINK", typ)
			}
			wantFlags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL)
			if tt.echo {
				wantFlags |= unix.NLM_F_ECHO
			}
			if flags := native.Uint16(b[6:]); flags != wantFlags {
				t.Errorf("flags %#x, want %#x", flags, wantFlags)
			}
			checkIfinfo(t, "host end", b[unix.SizeofNlMsghdr:], unix.IFF_UP)

			host := attrMap(t, b[unix.SizeofNlMsghdr+unix.SizeofIfInfomsg:])
			linkinfo := host[unix.IFLA_LINKINFO]
			checkAttrs(t, "host end", host, tt.wantHost, unix.IFLA_LINKINFO)

			info := attrMap(t, linkinfo)
			if kind := string(info[nl.IFLA_INFO_KIND]); kind != "veth" {
				t.Errorf("IFLA_INFO_KIND %q, want veth", kind)
			}
			data := attrMap(t, info[nl.IFLA_INFO_DATA])
			peer := data[nl.VETH_INFO_PEER]
			if len(data) != 1 || len(peer) < unix.SizeofIfInfomsg {
				t.Fatalf("IFLA_INFO_DATA %x, want VETH_INFO_PEER alone", info[nl.IFLA_INFO_DATA])
			}
			checkIfinfo(t, "container end", peer, 0)
			checkAttrs(t, "container end", attrMap(t, peer[unix.SizeofIfInfomsg:]), tt.wantPeer)
		})
	}
}

// checkIfinfo checks the ifinfomsg at the start of b: no index (a new
// link), flags and change both flags (up, or left down).
func checkIfinfo(t *testing.T, what string, b []byte, flags uint32) {
	t.Helper()
	native := nl.NativeEndian()
	index, gotFlags, change := int32(native.Uint32(b[4:])), native.Uint32(b[8:]), native.Uint32(b[12:])
	if index != 0 || gotFlags != flags || change != flags {
		t.Errorf("%s ifinfomsg: index %d flags %#x change %#x, want 0 and %#x twice", what, index, gotFlags, change, flags)
	}
}

// vethRequestNL is vethRequest as it was built with vishvananda/netlink's
// nl package before nlraw: an independent encoding to compare with.
func vethRequestNL(spec VethSpec, seq uint32, echo bool) []byte {
	flags := unix.NLM_F_CREATE | unix.NLM_F_EXCL | unix.NLM_F_ACK
	if echo {
		flags |= unix.NLM_F_ECHO
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, flags)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags = unix.IFF_UP
	msg.Change = unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(spec.HostName)))
	if spec.HostMAC != nil {
		req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, spec.HostMAC))
	}
	if spec.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(spec.MTU))))
	}
	if spec.BridgeIndex > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(spec.BridgeIndex))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(spec.ContainerName))
	if spec.ContainerMAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, spec.ContainerMAC)
	}
	if spec.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(spec.MTU)))
	}
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(spec.NetNSFd)))
	req.AddData(info)
	req.Seq = seq
	return req.Serialize()
}

// TestSmallRequests checks the requests newlink.go and vlan.go build by
// hand against the same requests built with the netlink library.
func TestSmallRequests(t *testing.T) {
	lib := func(typ, flags int, seq uint32, data ...nl.NetlinkRequestData) []byte {
		req := nl.NewNetlinkRequest(typ, flags)
		for _, d := range data {
			req.AddData(d)
		}
		req.Seq = seq
		return req.Serialize()
	}
	ifinfo := func(index int32) *nl.IfInfomsg {
		m := nl.NewIfInfomsg(unix.AF_UNSPEC)
		m.Index = index
		return m
	}
	af := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	af.AddRtAttr(unix.AF_INET6, nil).AddRtAttr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{in6AddrGenModeNone})
	br := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	br.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	br.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.IFLA_BR_VLAN_FILTERING, []byte{1})

	for _, tt := range []struct {
		name      string
		got, want []byte
	}{
		{"getlink", getLinkRequest(nil, 7, "v6c0123456789ab"),
			lib(unix.RTM_GETLINK, unix.NLM_F_ACK, 7, ifinfo(0), nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("v6c0123456789ab")))},
		{"addr_gen_mode", addrGenModeRequest(nil, 8, 12, in6AddrGenModeNone),
			lib(unix.RTM_SETLINK, unix.NLM_F_ACK, 8, ifinfo(12), af)},
		{"vlan_filtering", vlanFilteringRequest(nil, 9, 3),
			lib(unix.RTM_NEWLINK, unix.NLM_F_ACK, 9, ifinfo(3), br)},
	} {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s request\n% x\nwant (netlink library)\n% x", tt.name, tt.got, tt.want)
		}
	}
}

package link

import (
	"bytes"
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// attrMap collects the attributes of b by type, failing on a duplicate.
func attrMap(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	m := map[uint16][]byte{}
	walkAttrs(b, func(typ uint16, v []byte) bool {
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
			b := vethRequest(tt.spec, tt.echo).Serialize()
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

func TestAckError(t *testing.T) {
	native := nl.NativeEndian()
	hdr := func(l uint32) []byte { // a copied-back request header
		b := make([]byte, unix.SizeofNlMsghdr)
		native.PutUint32(b, l)
		return b
	}
	errno := func(e int32) []byte {
		b := make([]byte, 4)
		native.PutUint32(b, uint32(e))
		return b
	}
	msgAttr := nl.NewRtAttr(unix.NLMSGERR_ATTR_MSG, nl.ZeroTerminated("Master device not found")).Serialize()
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	for _, tt := range []struct {
		name    string
		flags   uint16
		data    []byte
		wantErr error // nil: an ack
		wantMsg string
	}{
		{"ack", unix.NLM_F_CAPPED, join(errno(0), hdr(16)), nil, ""},
		{"errno only", unix.NLM_F_CAPPED, join(errno(-int32(unix.EEXIST)), hdr(16)), unix.EEXIST, ""},
		{"capped, with message", unix.NLM_F_CAPPED | unix.NLM_F_ACK_TLVS, join(errno(-int32(unix.EINVAL)), hdr(40), msgAttr), unix.EINVAL, "Master device not found"},
		{"whole request copied back, with message", unix.NLM_F_ACK_TLVS, join(errno(-int32(unix.EINVAL)), hdr(24), make([]byte, 8), msgAttr), unix.EINVAL, "Master device not found"},
		{"copied-back request longer than the message", unix.NLM_F_ACK_TLVS, join(errno(-int32(unix.EINVAL)), hdr(4096), msgAttr), unix.EINVAL, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.NLMSG_ERROR, Flags: tt.flags}, Data: tt.data}
			err := ackError(m)
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("ackError = %v, want nil", err)
				}
				return
			}
			var kerr *rtnlError
			if !errors.As(err, &kerr) || !errors.Is(err, tt.wantErr) || kerr.Msg != tt.wantMsg {
				t.Errorf("ackError = %#v, want %v with message %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
	if err := ackError(syscall.NetlinkMessage{Data: []byte{1}}); err == nil {
		t.Error("ackError of a truncated message: nil error")
	}
}

func TestParseLinkMsg(t *testing.T) {
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = 9
	payload := bytes.Join([][]byte{
		msg.Serialize(),
		nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(1500)).Serialize(),
		nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("v6c0123456789ab")).Serialize(),
	}, nil)
	m, ok := parseLinkMsg(payload)
	if !ok || m.index != 9 || m.name != "v6c0123456789ab" {
		t.Errorf("parseLinkMsg = %+v, %v; want index 9, name v6c0123456789ab, true", m, ok)
	}
	// A truncated last attribute is not read past.
	if m, ok := parseLinkMsg(payload[:len(payload)-4]); !ok || m.name != "" {
		t.Errorf("parseLinkMsg of a truncated message: name %q, ok %v", m.name, ok)
	}
	if _, ok := parseLinkMsg(payload[:8]); ok {
		t.Error("parseLinkMsg of a short message: ok")
	}
	if m.peer != 0 || m.operState != 0 {
		t.Errorf("parseLinkMsg without IFLA_LINK and IFLA_OPERSTATE = %+v, want peer 0, operState 0", m)
	}
	withMore := append(bytes.Clone(payload),
		append(nl.NewRtAttr(unix.IFLA_LINK, nl.Uint32Attr(7)).Serialize(),
			nl.NewRtAttr(unix.IFLA_OPERSTATE, []byte{6}).Serialize()...)...)
	if m, ok := parseLinkMsg(withMore); !ok || m.peer != 7 || m.operState != 6 || m.name != "v6c0123456789ab" {
		t.Errorf("parseLinkMsg = %+v, %v; want peer 7, operState 6 and the name", m, ok)
	}
}

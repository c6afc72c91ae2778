package nlraw

import (
	"bytes"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TestMsg checks the builder against the netlink library's encoding of the
// same messages: attributes of every padding, nesting, a fixed header,
// two messages in one datagram, appending after a caller's bytes.
func TestMsg(t *testing.T) {
	lib := func(typ, flags int, seq uint32, data ...nl.NetlinkRequestData) []byte {
		req := nl.NewNetlinkRequest(typ, flags)
		for _, d := range data {
			req.AddData(d)
		}
		req.Seq = seq
		return req.Serialize()
	}
	ifinfo := nl.NewIfInfomsg(unix.AF_UNSPEC)
	ifinfo.Index, ifinfo.Flags, ifinfo.Change = 5, unix.IFF_UP, unix.IFF_UP
	nest := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	nest.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	nest.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.IFLA_BR_VLAN_FILTERING, []byte{1})

	for _, tt := range []struct {
		name  string
		build func(m *Msg)
		want  []byte
	}{
		{"header only", func(m *Msg) { m.Begin(unix.RTM_GETLINK, unix.NLM_F_ACK, 3) },
			lib(unix.RTM_GETLINK, unix.NLM_F_ACK, 3)},
		{"ifinfomsg and flat attributes", func(m *Msg) {
			m.Begin(unix.RTM_NEWLINK, unix.NLM_F_ACK|unix.NLM_F_CREATE, 4)
			m.IfInfomsg(5, unix.IFF_UP, unix.IFF_UP)
			m.AttrString(unix.IFLA_IFNAME, "eth0")  // 5 bytes: padded
			m.AttrString(unix.IFLA_IFNAME, "eth01") // 6 bytes
			m.Attr(unix.IFLA_ADDRESS, []byte{2, 0, 0, 0, 0, 1})
			m.Attr(unix.IFLA_OPERSTATE, []byte{6}) // 1 byte
			m.Attr(unix.IFLA_IFALIAS, nil)         // empty
			m.AttrUint32(unix.IFLA_MTU, 1400)
		}, lib(unix.RTM_NEWLINK, unix.NLM_F_ACK|unix.NLM_F_CREATE, 4, ifinfo,
			nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("eth0")),
			nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("eth01")),
			nl.NewRtAttr(unix.IFLA_ADDRESS, []byte{2, 0, 0, 0, 0, 1}),
			nl.NewRtAttr(unix.IFLA_OPERSTATE, []byte{6}),
			nl.NewRtAttr(unix.IFLA_IFALIAS, nil),
			nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(1400)))},
		{"nested", func(m *Msg) {
			m.Begin(unix.RTM_NEWLINK, unix.NLM_F_ACK, 6)
			m.IfInfomsg(5, unix.IFF_UP, unix.IFF_UP)
			info := m.Nest(unix.IFLA_LINKINFO)
			m.Attr(unix.IFLA_INFO_KIND, []byte("bridge"))
			data := m.Nest(unix.IFLA_INFO_DATA)
			m.Attr(nl.IFLA_BR_VLAN_FILTERING, []byte{1})
			m.EndNest(data)
			m.EndNest(info)
		}, lib(unix.RTM_NEWLINK, unix.NLM_F_ACK, 6, ifinfo, nest)},
		{"two messages, after a caller's bytes", func(m *Msg) {
			m.Begin(unix.RTM_GETLINK, unix.NLM_F_ACK, 7)
			m.Fixed([]byte{1, 2, 3}) // padded
			m.Begin(unix.RTM_GETLINK, unix.NLM_F_ACK, 8)
			m.AttrString(unix.IFLA_IFNAME, "lo")
		}, append(
			native.AppendUint32(lib(unix.RTM_GETLINK, unix.NLM_F_ACK, 7)[:0], 20), // length: header and 3 bytes padded to 4
			append(lib(unix.RTM_GETLINK, unix.NLM_F_ACK, 7)[4:], append([]byte{1, 2, 3, 0},
				lib(unix.RTM_GETLINK, unix.NLM_F_ACK, 8, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("lo")))...)...)...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte{0xaa}
			m := NewMsg(bytes.Clone(prefix))
			tt.build(&m)
			got := m.Bytes()
			if !bytes.Equal(got[:1], prefix) {
				t.Fatal("the caller's bytes were overwritten")
			}
			if !bytes.Equal(got[1:], tt.want) {
				t.Errorf("message\n% x\nwant\n% x", got[1:], tt.want)
			}
		})
	}
}

func TestAlign(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 4, 3: 4, 4: 4, 5: 8, 16: 16, 17: 20} {
		if got := Align(n); got != want {
			t.Errorf("Align(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestMsgNoAlloc(t *testing.T) {
	var buf [64]byte
	allocs := testing.AllocsPerRun(100, func() {
		m := NewMsg(buf[:0])
		m.Begin(unix.RTM_GETLINK, unix.NLM_F_ACK, 1)
		m.IfInfomsg(0, 0, 0)
		m.AttrString(unix.IFLA_IFNAME, "v6c0123456789ab")
		m.AttrUint32(unix.IFLA_EXT_MASK, 8)
		_ = m.Bytes()
	})
	if allocs != 0 {
		t.Errorf("building into a large enough buffer: %v allocations, want 0", allocs)
	}
}

package link

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
)

func TestMovedMetrics(t *testing.T) {
	def := netip.MustParsePrefix("::/0")
	rio := netip.MustParsePrefix("2001:db8:98::/48")
	for _, tt := range []struct {
		name   string
		routes []raRoute
		want   []uint32
	}{
		{"none", nil, []uint32{}},
		{"one default route", []raRoute{{table: 254, dst: def, priority: 1024}}, []uint32{1025}},
		{"two routers", []raRoute{{table: 254, dst: def, priority: 1024}, {table: 254, dst: def, priority: 1024}}, []uint32{1025, 1026}},
		{"other destination, table or metric", []raRoute{
			{table: 254, dst: def, priority: 1024},
			{table: 254, dst: rio, priority: 1024},
			{table: 100, dst: def, priority: 1024},
			{table: 254, dst: def, priority: 100},
			{table: 254, dst: def, priority: 1024},
		}, []uint32{1025, 1025, 1025, 101, 1026}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := movedMetrics(tt.routes); !slices.Equal(got, tt.want) {
				t.Errorf("movedMetrics = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRARouteRequest reads back the RTM_NEWROUTE raRouteRequest builds as
// the kernel would echo it (parseRARoute), and checks what the kernel
// reads of it: RTA_EXPIRES and no cache info.
func TestRARouteRequest(t *testing.T) {
	r := raRoute{
		table:    254,
		dst:      netip.MustParsePrefix("2001:db8:98::/48"),
		gw:       netip.MustParseAddr("fe80::1"),
		oif:      3,
		priority: 1024,
		pref:     1, hasPref: true,
		metrics: []byte{8, 0, unix.RTAX_HOPLIMIT, 0, 64, 0, 0, 0},
	}
	b := raRouteRequest(nil, 7, unix.RTM_NEWROUTE, unix.NLM_F_CREATE, 5, r, 1025, 60)
	var payload []byte
	var hdr unix.NlMsghdr
	if !nlraw.Messages(b, func(h unix.NlMsghdr, data []byte) bool { hdr, payload = h, data; return true }) {
		t.Fatal("not one netlink message")
	}
	if hdr.Type != unix.RTM_NEWROUTE || hdr.Flags != unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE || hdr.Seq != 7 {
		t.Errorf("header %+v, want RTM_NEWROUTE, REQUEST|ACK|CREATE (no EXCL), seq 7", hdr)
	}
	got, ok := parseRARoute(payload)
	if !ok {
		t.Fatal("parseRARoute: not an RA route")
	}
	want := r
	want.oif, want.priority = 5, 1025
	if got.table != want.table || got.dst != want.dst || got.gw != want.gw || got.oif != want.oif || got.priority != want.priority ||
		got.pref != want.pref || !got.hasPref || !slices.Equal(got.metrics, want.metrics) || got.expires != 0 {
		t.Errorf("read back %+v, want %+v", got, want)
	}
	var expires uint32
	nlraw.WalkAttrs(payload[unix.SizeofRtMsg:], func(typ uint16, v []byte) bool {
		if typ == unix.RTA_EXPIRES && len(v) == 4 {
			expires = binary.NativeEndian.Uint32(v)
		}
		return true
	})
	if expires != 60 {
		t.Errorf("RTA_EXPIRES %d, want 60", expires)
	}

	// A delete names the route only.
	d := raRouteRequest(nil, 8, unix.RTM_DELROUTE, 0, 3, r, 1024, 0)
	nlraw.Messages(d, func(h unix.NlMsghdr, data []byte) bool { payload = data; return true })
	nlraw.WalkAttrs(payload[unix.SizeofRtMsg:], func(typ uint16, _ []byte) bool {
		if typ == unix.RTA_EXPIRES || typ == unix.RTA_METRICS || typ == unix.RTA_PREF {
			t.Errorf("RTM_DELROUTE carries attribute %d", typ)
		}
		return true
	})
}

func TestParseRARoute(t *testing.T) {
	base := raRoute{table: 254, dst: netip.MustParsePrefix("::/0"), gw: netip.MustParseAddr("fe80::1"), oif: 2, priority: 1024}
	msg := func(proto, family byte, extra func(m *nlraw.Msg)) []byte {
		m := nlraw.NewMsg(nil)
		m.Begin(unix.RTM_NEWROUTE, 0, 1)
		m.Fixed([]byte{family, 0, 0, 0, 254, proto, 0, unix.RTN_UNICAST, 0, 0, 0, 0})
		gw := base.gw.As16()
		m.Attr(unix.RTA_GATEWAY, gw[:])
		m.AttrUint32(unix.RTA_OIF, 2)
		m.AttrUint32(unix.RTA_PRIORITY, 1024)
		if extra != nil {
			extra(&m)
		}
		var p []byte
		nlraw.Messages(m.Bytes(), func(_ unix.NlMsghdr, data []byte) bool { p = data; return true })
		return p
	}
	// struct rta_cacheinfo with rta_expires 2950 clock ticks.
	ci := make([]byte, 32)
	binary.NativeEndian.PutUint32(ci[8:], 2950)
	for _, tt := range []struct {
		name    string
		b       []byte
		ok      bool
		expires time.Duration
	}{
		{"RA default route", msg(unix.RTPROT_RA, unix.AF_INET6, nil), true, 0},
		{"with an expiry", msg(unix.RTPROT_RA, unix.AF_INET6, func(m *nlraw.Msg) { m.Attr(unix.RTA_CACHEINFO, ci) }), true, 29500 * time.Millisecond},
		{"static", msg(unix.RTPROT_BOOT, unix.AF_INET6, nil), false, 0},
		{"IPv4", msg(unix.RTPROT_RA, unix.AF_INET, nil), false, 0},
		{"multipath", msg(unix.RTPROT_RA, unix.AF_INET6, func(m *nlraw.Msg) { m.Attr(unix.RTA_MULTIPATH, make([]byte, 8)) }), false, 0},
		{"short", []byte{unix.AF_INET6, 0, 0}, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := parseRARoute(tt.b)
			if ok != tt.ok {
				t.Fatalf("ok = %t, want %t", ok, tt.ok)
			}
			if ok && (r.dst != base.dst || r.gw != base.gw || r.oif != base.oif || r.priority != base.priority || r.expires != tt.expires) {
				t.Errorf("parsed %+v, want %+v expiring after %s", r, base, tt.expires)
			}
		})
	}
}

package ra

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
)

func marshalRS(t testing.TB, opts ...ndp.Option) []byte {
	t.Helper()
	b, err := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSolicitation(t *testing.T) {
	ll := netip.MustParseAddr("fe80::1")
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	withLLA := marshalRS(t, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	plain := marshalRS(t)
	badCode := append([]byte(nil), plain...)
	badCode[1] = 1
	na, err := ndp.MarshalMessage(&ndp.NeighborAdvertisement{TargetAddress: ll})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		b       []byte
		hop     int
		src     netip.Addr
		ok      bool
		wantLLA bool
	}{
		{"with source link-layer address", withLLA, 255, ll, true, true},
		{"without options", plain, 255, ll, true, false},
		{"from unspecified", plain, 255, netip.IPv6Unspecified(), true, false},
		{"unspecified with SLLAO", withLLA, 255, netip.IPv6Unspecified(), false, false},
		{"routed (hop limit 64)", plain, 64, ll, false, false},
		{"code 1", badCode, 255, ll, false, false},
		{"short", plain[:4], 255, ll, false, false},
		{"neighbour advertisement", na, 255, ll, false, false},
		{"bad option length", append(append([]byte(nil), plain...), 1, 0), 255, ll, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := parseSolicitation(tc.b, tc.hop, tc.src)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (rs.lla != nil) != tc.wantLLA {
				t.Fatalf("lla %v, want present=%v", rs.lla, tc.wantLLA)
			}
			if tc.ok && rs.src != tc.src {
				t.Fatalf("src %s, want %s", rs.src, tc.src)
			}
		})
	}
}

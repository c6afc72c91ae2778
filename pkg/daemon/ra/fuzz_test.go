package ra

import (
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
)

// FuzzParseSolicitation feeds arbitrary ICMPv6 bytes (what any host on the
// bridge can send) to the solicitation parser: it must never panic, and
// what it accepts must be a router solicitation.
func FuzzParseSolicitation(f *testing.F) {
	f.Add(marshalRS(f), 255, false)
	f.Add(marshalRS(f, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: testMAC}), 255, false)
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0}, 255, true)
	f.Add([]byte{134, 0, 0, 0}, 255, false)
	f.Fuzz(func(t *testing.T, b []byte, hop int, unspecified bool) {
		src := netip.MustParseAddr("fe80::1")
		if unspecified {
			src = netip.IPv6Unspecified()
		}
		rs, err := parseSolicitation(b, hop, src)
		if err != nil {
			return
		}
		if len(b) < 8 || b[0] != 133 || b[1] != 0 || hop != 255 {
			t.Fatalf("accepted %x with hop limit %d", b, hop)
		}
		if rs.src.IsUnspecified() && rs.lla != nil {
			t.Fatal("accepted a source link-layer address from the unspecified address")
		}
	})
}

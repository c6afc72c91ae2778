package dhcp6server

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzDecodeAndRespond feeds arbitrary datagrams (what any host on the
// bridge can send to port 547) through decoding and reply building: never
// a panic, and any reply encodes and decodes again.
func FuzzDecodeAndRespond(f *testing.F) {
	duid := &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}
	for _, m := range []*dhcpv6.Message{
		newMsg(f, dhcpv6.MessageTypeSolicit, duid, iana1()),
		newMsg(f, dhcpv6.MessageTypeRequest, duid, dhcpv6.OptServerID(serverDUID), iana1(knownAddr)),
		newMsg(f, dhcpv6.MessageTypeConfirm, duid, iana1(knownAddr)),
		newMsg(f, dhcpv6.MessageTypeInformationRequest, duid),
	} {
		f.Add(m.ToBytes(), true)
	}
	f.Add([]byte{12, 0, 0, 0}, false) // relay-forward stub
	one, err := testConfig().withDefaults()
	if err != nil {
		f.Fatal(err)
	}
	two, err := renumberingConfig().withDefaults()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte, eui bool) {
		cfg, handed := one, []netip.Addr{knownAddr}
		if len(b) > 0 && b[len(b)-1]&1 == 1 { // both lookups, from any input
			cfg, handed = two, []netip.Addr{knownAddr, renumberedAddr}
		}
		m, err := decodeRequest(b)
		if err != nil {
			return
		}
		src := noSrc
		if eui {
			src = netip.MustParseAddr("fe80::11:22ff:fe33:4455")
		}
		r, err := respond(cfg, serverDUID, m, honest(m, src))
		if err != nil {
			return
		}
		if _, err := dhcpv6.FromBytes(r.ToBytes()); err != nil {
			t.Fatalf("reply %s does not decode: %v", r.Summary(), err)
		}
		if r.TransactionID != m.TransactionID {
			t.Fatal("reply with another transaction ID")
		}
		if ia := r.Options.OneIANA(); ia != nil {
			for _, a := range ia.Options.Addresses() {
				got, _ := netip.AddrFromSlice(a.IPv6Addr)
				if a.ValidLifetime != 0 && !slices.Contains(handed, got) {
					t.Fatalf("handed out %s, which Lookup never returned", got)
				}
			}
		}
	})
}

package dhcp6server

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	serverDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0xfe}}
	knownMAC   = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	knownAddr  = netip.MustParseAddr("2001:db8:cafe:3:11:22ff:fe33:4455")
	otherMAC   = net.HardwareAddr{0x02, 0x99, 0x99, 0x99, 0x99, 0x99}
	noSrc      = netip.MustParseAddr("fe80::1") // not EUI-64
	knownPort  = "vethknown"
)

// honest is the origin of m sent by a client whose frames carry the MAC it
// claims, from the port where IPAM attached that MAC (knownPort for
// knownMAC, another port for any other).
func honest(m *dhcpv6.Message, src netip.Addr) Origin {
	mac := ClientMAC(m, src)
	port := "vethother"
	if mac.String() == knownMAC.String() {
		port = knownPort
	}
	return Origin{MAC: mac, Port: port, Addr: src}
}

func testConfig() Config {
	return Config{
		Interface: "v6br0",
		DNS:       []netip.Addr{netip.MustParseAddr("2001:db8:cafe:a::e"), netip.MustParseAddr("10.0.0.53")},
		Search:    []string{"example.com"},
		Lookup: func(from Origin) ([]Lease, bool) {
			if from.MAC.String() == knownMAC.String() && from.Port == knownPort {
				return []Lease{{Addr: knownAddr}}, true
			}
			return nil, false
		},
	}
}

// wire encodes and decodes m, so tests see what a client would send.
func wire(t testing.TB, m *dhcpv6.Message) *dhcpv6.Message {
	t.Helper()
	got, err := decodeRequest(m.ToBytes())
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return got
}

func newMsg(t testing.TB, typ dhcpv6.MessageType, duid dhcpv6.DUID, opts ...dhcpv6.Option) *dhcpv6.Message {
	t.Helper()
	m := &dhcpv6.Message{MessageType: typ, TransactionID: dhcpv6.TransactionID{1, 2, 3}}
	if duid != nil {
		m.AddOption(dhcpv6.OptClientID(duid))
	}
	for _, o := range opts {
		m.AddOption(o)
	}
	return wire(t, m)
}

func iana1(addrs ...netip.Addr) *dhcpv6.OptIANA {
	ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}}
	for _, a := range addrs {
		ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.AsSlice()})
	}
	return ia
}

func respondOK(t *testing.T, cfg Config, m *dhcpv6.Message, src netip.Addr) *dhcpv6.Message {
	t.Helper()
	r, err := Respond(cfg, serverDUID, m, honest(m, src))
	if err != nil {
		t.Fatalf("Respond: %v", err)
	}
	// Replies must survive their own encoding.
	d, err := dhcpv6.FromBytes(r.ToBytes())
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	return d.(*dhcpv6.Message)
}

func leased(t *testing.T, r *dhcpv6.Message) (netip.Addr, time.Duration, time.Duration) {
	t.Helper()
	ia := r.Options.OneIANA()
	if ia == nil {
		t.Fatalf("reply has no IA_NA: %s", r.Summary())
	}
	a := ia.Options.OneAddress()
	if a == nil {
		t.Fatalf("IA_NA has no address: %s", r.Summary())
	}
	got, _ := netip.AddrFromSlice(a.IPv6Addr)
	return got, a.PreferredLifetime, a.ValidLifetime
}

func TestInformationRequest(t *testing.T) {
	m := newMsg(t, dhcpv6.MessageTypeInformationRequest, &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: otherMAC})
	r := respondOK(t, testConfig(), m, noSrc)
	if r.Type() != dhcpv6.MessageTypeReply || r.TransactionID != m.TransactionID {
		t.Fatalf("got %s xid %v", r.Type(), r.TransactionID)
	}
	dns := r.Options.DNS()
	if len(dns) != 1 || !dns[0].Equal(net.ParseIP("2001:db8:cafe:a::e")) {
		t.Errorf("DNS %v, want only the IPv6 server", dns)
	}
	if sl := r.Options.DomainSearchList(); sl == nil || len(sl.Labels) != 1 || sl.Labels[0] != "example.com" {
		t.Errorf("search list %v", sl)
	}
	if r.Options.ServerID() == nil || r.Options.ClientID() == nil {
		t.Errorf("server or client ID missing")
	}
	if r.Options.OneIANA() != nil {
		t.Errorf("information-request got an address")
	}
}

func TestStatefulExchange(t *testing.T) {
	cfg := testConfig()
	duid := &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 12345, LinkLayerAddr: knownMAC}

	adv := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeSolicit, duid, iana1()), noSrc)
	if adv.Type() != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("solicit answered with %s", adv.Type())
	}
	if a, pref, valid := leased(t, adv); a != knownAddr || pref != DefaultPreferred || valid != DefaultValid {
		t.Fatalf("advertised %s %s/%s", a, pref, valid)
	}
	if ia := adv.Options.OneIANA(); ia.T1 != 30*time.Minute || ia.T2 != 48*time.Minute {
		t.Errorf("T1 %s T2 %s", ia.T1, ia.T2)
	}
	if len(adv.Options.DNS()) != 1 {
		t.Errorf("advertise lacks DNS")
	}

	withServer := func(typ dhcpv6.MessageType, opts ...dhcpv6.Option) *dhcpv6.Message {
		return newMsg(t, typ, duid, append([]dhcpv6.Option{dhcpv6.OptServerID(serverDUID)}, opts...)...)
	}
	for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew} {
		r := respondOK(t, cfg, withServer(typ, iana1(knownAddr)), noSrc)
		if a, _, _ := leased(t, r); r.Type() != dhcpv6.MessageTypeReply || a != knownAddr {
			t.Fatalf("%s: %s", typ, r.Summary())
		}
	}
	r := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeRebind, duid, iana1(knownAddr)), noSrc)
	if a, _, _ := leased(t, r); a != knownAddr {
		t.Fatalf("rebind: %s", r.Summary())
	}
	// A stale address in a Renew comes back with lifetimes 0.
	stale := netip.MustParseAddr("2001:db8:cafe:3::99")
	r = respondOK(t, cfg, withServer(dhcpv6.MessageTypeRenew, iana1(stale)), noSrc)
	addrs := r.Options.OneIANA().Options.Addresses()
	if len(addrs) != 2 || !addrs[1].IPv6Addr.Equal(stale.AsSlice()) || addrs[1].ValidLifetime != 0 {
		t.Fatalf("renew with a stale address: %s", r.Summary())
	}
	r = respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeConfirm, duid, iana1(knownAddr)), noSrc)
	if st := r.Options.Status(); st == nil || st.StatusCode != iana.StatusSuccess {
		t.Fatalf("confirm: %s", r.Summary())
	}
	r = respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeConfirm, duid, iana1(stale)), noSrc)
	if st := r.Options.Status(); st == nil || st.StatusCode != iana.StatusNotOnLink {
		t.Fatalf("confirm of a wrong address: %s", r.Summary())
	}
	r = respondOK(t, cfg, withServer(dhcpv6.MessageTypeRelease, iana1(knownAddr)), noSrc)
	if st := r.Options.Status(); st == nil || st.StatusCode != iana.StatusSuccess {
		t.Fatalf("release: %s", r.Summary())
	}
}

func TestRapidCommit(t *testing.T) {
	duid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}
	rc := &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}
	cfg := testConfig()
	if r := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeSolicit, duid, iana1(), rc), noSrc); r.Type() != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("rapid commit off: got %s", r.Type())
	}
	cfg.RapidCommit = true
	r := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeSolicit, duid, iana1(), rc), noSrc)
	if r.Type() != dhcpv6.MessageTypeReply || r.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
		t.Fatalf("rapid commit on: %s", r.Summary())
	}
	if a, _, _ := leased(t, r); a != knownAddr {
		t.Fatalf("rapid commit address %s", a)
	}
	if r := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeSolicit, duid, iana1()), noSrc); r.Type() != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("solicit without rapid commit got %s", r.Type())
	}
}

func TestUnknownClient(t *testing.T) {
	cfg := testConfig()
	duid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: otherMAC}
	adv := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeSolicit, duid, iana1()), noSrc)
	if st := adv.Options.Status(); st == nil || st.StatusCode != iana.StatusNoAddrsAvail || adv.Options.OneIANA() != nil {
		t.Fatalf("unknown client solicit: %s", adv.Summary())
	}
	r := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeRequest, duid, dhcpv6.OptServerID(serverDUID), iana1()), noSrc)
	if st := r.Options.OneIANA().Options.Status(); st == nil || st.StatusCode != iana.StatusNoAddrsAvail {
		t.Fatalf("unknown client request: %s", r.Summary())
	}
	r = respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeRenew, duid, dhcpv6.OptServerID(serverDUID), iana1(knownAddr)), noSrc)
	if st := r.Options.OneIANA().Options.Status(); st == nil || st.StatusCode != iana.StatusNoBinding {
		t.Fatalf("unknown client renew: %s", r.Summary())
	}
	// Without Lookup every client is unknown.
	cfg.Lookup = nil
	known := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}
	if adv := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeSolicit, known, iana1()), noSrc); adv.Options.Status() == nil {
		t.Fatalf("stateless-only server offered: %s", adv.Summary())
	}
}

func TestClientIdentity(t *testing.T) {
	eui64LL := netip.MustParseAddr("fe80::11:22ff:fe33:4455") // from 02:11:22:33:44:55
	for _, tc := range []struct {
		name string
		duid dhcpv6.DUID
		src  netip.Addr
		want string
	}{
		{"DUID-LL", &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}, noSrc, knownMAC.String()},
		{"DUID-LLT", &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}, noSrc, knownMAC.String()},
		{"DUID-UUID, EUI-64 source", &dhcpv6.DUIDUUID{UUID: [16]byte{1}}, eui64LL, knownMAC.String()},
		{"DUID-EN, random source", &dhcpv6.DUIDEN{EnterpriseNumber: 1, EnterpriseIdentifier: []byte{1}}, noSrc, ""},
		{"DUID-LL of another type, EUI-64 source", &dhcpv6.DUIDLL{HWType: iana.HWTypeInfiniband, LinkLayerAddr: []byte{1, 2}}, eui64LL, knownMAC.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMsg(t, dhcpv6.MessageTypeSolicit, tc.duid, iana1())
			if got := ClientMAC(m, tc.src); got.String() != tc.want {
				t.Fatalf("ClientMAC = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDrops(t *testing.T) {
	cfg := testConfig()
	duid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}
	wrongServer := dhcpv6.OptServerID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: otherMAC})
	for _, tc := range []struct {
		name string
		m    *dhcpv6.Message
	}{
		{"request for another server", newMsg(t, dhcpv6.MessageTypeRequest, duid, wrongServer, iana1())},
		{"request without server ID", newMsg(t, dhcpv6.MessageTypeRequest, duid, iana1())},
		{"solicit with server ID", newMsg(t, dhcpv6.MessageTypeSolicit, duid, dhcpv6.OptServerID(serverDUID), iana1())},
		{"solicit without client ID", newMsg(t, dhcpv6.MessageTypeSolicit, nil, iana1())},
		{"information-request for another server", newMsg(t, dhcpv6.MessageTypeInformationRequest, duid, wrongServer)},
		{"confirm from unknown client", newMsg(t, dhcpv6.MessageTypeConfirm, &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: otherMAC}, iana1(knownAddr))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := Respond(cfg, serverDUID, tc.m, honest(tc.m, noSrc)); !errors.Is(err, ErrDrop) {
				t.Fatalf("got %v, %v; want ErrDrop", r, err)
			}
		})
	}
	adv := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeAdvertise}
	if _, err := decodeRequest(adv.ToBytes()); err == nil {
		t.Fatal("decodeRequest accepted an Advertise")
	}
}

// TestBindsByOrigin: the DUID a client writes names nobody; the address is
// the one of the port and frame source the message came from.
func TestBindsByOrigin(t *testing.T) {
	cfg := testConfig()
	neighbourDUID := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}
	for _, tc := range []struct {
		name string
		from Origin
	}{
		{"neighbour's DUID from another port and MAC", Origin{MAC: otherMAC, Port: "vethother", Addr: noSrc}},
		{"neighbour's DUID and MAC from another port", Origin{MAC: knownMAC, Port: "vethother", Addr: noSrc}},
		{"neighbour's DUID, unknown port", Origin{MAC: knownMAC, Addr: noSrc}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest} {
				var opts []dhcpv6.Option
				if typ == dhcpv6.MessageTypeRequest {
					opts = append(opts, dhcpv6.OptServerID(serverDUID))
				}
				m := newMsg(t, typ, neighbourDUID, append(opts, iana1(knownAddr))...)
				r, err := Respond(cfg, serverDUID, m, tc.from)
				if err != nil {
					t.Fatalf("%s: %v", typ, err)
				}
				if a := offered(r); a.IsValid() {
					t.Fatalf("%s from %+v got the neighbour's %s: %s", typ, tc.from, a, r.Summary())
				}
			}
		})
	}
}

// offered is the address r hands out with a valid lifetime, if any.
func offered(r *dhcpv6.Message) netip.Addr {
	for _, ia := range r.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			if got, ok := netip.AddrFromSlice(a.IPv6Addr); ok && a.ValidLifetime > 0 {
				return got
			}
		}
	}
	return netip.Addr{}
}

var renumberedAddr = netip.MustParseAddr("2001:db8:beef:3:11:22ff:fe33:4455")

// renumberingConfig is testConfig during a renumbering: knownAddr is the
// old address (preferred 0, 90 s left), renumberedAddr the new one, both
// of a delegated prefix (lifetimes of their own).
func renumberingConfig() Config {
	cfg := testConfig()
	cfg.Lookup = func(from Origin) ([]Lease, bool) {
		if from.MAC.String() == knownMAC.String() && from.Port == knownPort {
			return []Lease{
				{Addr: knownAddr, Deprecated: true, Valid: 90*time.Second + 500*time.Millisecond},
				{Addr: renumberedAddr, Preferred: 50 * time.Minute, Valid: 100 * time.Minute},
			}, true
		}
		return nil, false
	}
	return cfg
}

// TestRenumberingLeases: during a renumbering every reply holding
// addresses carries the old one deprecated with the valid time it has left
// and the new one, T1 and T2 capped so the client comes back soon; a
// Confirm of either is on-link; any other address comes back with
// lifetimes 0.
func TestRenumberingLeases(t *testing.T) {
	cfg := renumberingConfig()
	duid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: knownMAC}
	stale := netip.MustParseAddr("2001:db8:cafe:3::99")
	type addr struct {
		a           netip.Addr
		pref, valid time.Duration
	}
	want := []addr{{knownAddr, 0, 90 * time.Second}, {renumberedAddr, 50 * time.Minute, 100 * time.Minute}}
	for _, tc := range []struct {
		name string
		m    *dhcpv6.Message
		want []addr
	}{
		{"solicit", newMsg(t, dhcpv6.MessageTypeSolicit, duid, iana1()), want},
		{"request", newMsg(t, dhcpv6.MessageTypeRequest, duid, dhcpv6.OptServerID(serverDUID), iana1()), want},
		{"renew with the old address", newMsg(t, dhcpv6.MessageTypeRenew, duid, dhcpv6.OptServerID(serverDUID), iana1(knownAddr)), want},
		{"rebind with a stale one", newMsg(t, dhcpv6.MessageTypeRebind, duid, iana1(knownAddr, stale)), append(want, addr{stale, 0, 0})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := respondOK(t, cfg, tc.m, noSrc)
			ia := r.Options.OneIANA()
			if ia == nil {
				t.Fatalf("no IA_NA: %s", r.Summary())
			}
			var got []addr
			for _, a := range ia.Options.Addresses() {
				ip, _ := netip.AddrFromSlice(a.IPv6Addr)
				got = append(got, addr{ip, a.PreferredLifetime, a.ValidLifetime})
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("addresses %+v, want %+v", got, tc.want)
			}
			if ia.T1 != MaxLimitedT1 || ia.T2 != 48*time.Second {
				t.Errorf("T1 %s T2 %s, want %s, 48s", ia.T1, ia.T2, MaxLimitedT1)
			}
		})
	}
	for _, a := range []netip.Addr{knownAddr, renumberedAddr} {
		r := respondOK(t, cfg, newMsg(t, dhcpv6.MessageTypeConfirm, duid, iana1(a)), noSrc)
		if st := r.Options.Status(); st == nil || st.StatusCode != iana.StatusSuccess {
			t.Fatalf("confirm of %s: %s", a, r.Summary())
		}
	}
}

func TestOffersAndTimers(t *testing.T) {
	cfg, err := testConfig().withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("2001:db8::a")
	b := netip.MustParseAddr("2001:db8::b")
	for _, tc := range []struct {
		name   string
		leases []Lease
		want   []offer
		t1, t2 time.Duration
	}{
		{"default", []Lease{{Addr: a}}, []offer{{a, time.Hour, 2 * time.Hour, false, false}}, 30 * time.Minute, 48 * time.Minute},
		{"own preferred, default valid: not limited", []Lease{{Addr: a, Preferred: 20 * time.Minute}},
			[]offer{{a, 20 * time.Minute, 2 * time.Hour, false, false}}, 10 * time.Minute, 16 * time.Minute},
		{"own valid: T1 capped", []Lease{{Addr: a, Valid: 3 * time.Hour}}, []offer{{a, time.Hour, 3 * time.Hour, false, true}}, 30 * time.Second, 48 * time.Second},
		{"short own lifetimes under the cap", []Lease{{Addr: a, Preferred: 20 * time.Second, Valid: 40 * time.Second}},
			[]offer{{a, 20 * time.Second, 40 * time.Second, false, true}}, 10 * time.Second, 16 * time.Second},
		{"valid shorter than the default preferred", []Lease{{Addr: a, Valid: 100 * time.Second}},
			[]offer{{a, 100 * time.Second, 100 * time.Second, false, true}}, 30 * time.Second, 48 * time.Second},
		{"only deprecated: from the valid lifetime", []Lease{{Addr: a, Deprecated: true, Valid: 40 * time.Second}},
			[]offer{{a, 0, 40 * time.Second, true, true}}, 20 * time.Second, 32 * time.Second},
		{"expired, IPv4, duplicate, negative dropped", []Lease{
			{Addr: a, Valid: 500 * time.Millisecond}, {Addr: netip.MustParseAddr("10.0.0.1")}, {Addr: netip.MustParseAddr("::ffff:10.0.0.1")},
			{Addr: b, Valid: -time.Second}, {Addr: b}, {Addr: b, Valid: time.Minute}},
			[]offer{{b, time.Hour, 2 * time.Hour, false, false}}, 30 * time.Minute, 48 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := offers(cfg, tc.leases)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("offers %+v, want %+v", got, tc.want)
			}
			if t1, t2 := timers(got); t1 != tc.t1 || t2 != tc.t2 {
				t.Fatalf("T1 %s T2 %s, want %s %s", t1, t2, tc.t1, tc.t2)
			}
		})
	}
}

package link

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
)

func raBytes(t testing.TB, opts ...ndp.Option) []byte {
	t.Helper()
	b, err := ndp.MarshalMessage(&ndp.RouterAdvertisement{RouterLifetime: 30 * time.Second, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRADNS: RDNSS servers and DNSSL domains of RAs, merged in order of
// arrival, each once; withdrawn options (lifetime 0), other messages and
// malformed bytes ignored; a link-local server gets the interface as zone.
func TestRADNS(t *testing.T) {
	a, b := netip.MustParseAddr("2001:db8::53"), netip.MustParseAddr("2001:db8::54")
	ll := netip.MustParseAddr("fe80::1")
	rdnss := func(life time.Duration, s ...netip.Addr) ndp.Option {
		return &ndp.RecursiveDNSServer{Lifetime: life, Servers: s}
	}
	dnssl := func(life time.Duration, d ...string) ndp.Option {
		return &ndp.DNSSearchList{Lifetime: life, DomainNames: d}
	}
	ns, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: a})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		msgs       [][]byte
		wantNS     []netip.Addr
		wantSearch []string
	}{
		{"none", [][]byte{raBytes(t)}, nil, nil},
		{"one RA", [][]byte{raBytes(t, rdnss(time.Minute, a, b), dnssl(time.Minute, "example.net", "example.org"))},
			[]netip.Addr{a, b}, []string{"example.net", "example.org"}},
		{"two RAs, merged once each", [][]byte{
			raBytes(t, rdnss(time.Minute, a), dnssl(time.Minute, "example.net")),
			raBytes(t, rdnss(time.Minute, b, a), dnssl(time.Minute, "example.net", "example.org")),
		}, []netip.Addr{a, b}, []string{"example.net", "example.org"}},
		{"withdrawn", [][]byte{raBytes(t, rdnss(0, a), dnssl(0, "example.net"))}, nil, nil},
		{"link-local server", [][]byte{raBytes(t, rdnss(time.Minute, ll))}, []netip.Addr{ll.WithZone("eth0")}, nil},
		{"not an RA, malformed", [][]byte{ns, {134, 0, 0}, nil}, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var d RADNS
			for _, m := range tt.msgs {
				d.add(m, "eth0")
			}
			if !slices.Equal(d.Nameservers, tt.wantNS) || !slices.Equal(d.Search, tt.wantSearch) {
				t.Errorf("got %v %v, want %v %v", d.Nameservers, d.Search, tt.wantNS, tt.wantSearch)
			}
		})
	}
}

// FuzzRADNS: any bytes a router may send are parsed without a panic, and
// what is kept is unique.
func FuzzRADNS(f *testing.F) {
	f.Add(raBytes(f, &ndp.RecursiveDNSServer{Lifetime: time.Minute, Servers: []netip.Addr{netip.MustParseAddr("2001:db8::53")}},
		&ndp.DNSSearchList{Lifetime: time.Minute, DomainNames: []string{"example.net"}}))
	f.Add([]byte{134, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d RADNS
		d.add(b, "eth0")
		d.add(b, "eth0")
		for i, s := range d.Nameservers {
			if slices.Contains(d.Nameservers[i+1:], s) {
				t.Fatalf("nameserver %s twice", s)
			}
		}
		for i, s := range d.Search {
			if s == "" || slices.Contains(d.Search[i+1:], s) {
				t.Fatalf("search %q empty or twice", s)
			}
		}
	})
}

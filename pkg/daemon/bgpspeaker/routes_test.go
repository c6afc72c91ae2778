package bgpspeaker

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func testConfig() Config {
	c := Config{
		ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"),
		Peers:       []PeerConfig{{Address: netip.MustParseAddr("127.0.0.2"), ASN: 65000}},
		Communities: []string{"65001:1"},
	}
	c.SetDefaults()
	return c
}

func TestDesiredSet(t *testing.T) {
	cfg := testConfig() // IPv4 peer: both families
	p6 := netip.MustParsePrefix("2001:db8:1::/64")
	p4 := netip.MustParsePrefix("10.1.0.0/24")
	got, err := desiredSet(&cfg, []Route{
		{Prefix: p6, Communities: []string{"65001:2", "65001:1"}},
		{Prefix: p4},
		{Prefix: p4}, // the same twice is fine
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]announcement{
		p6: {prefix: p6, communities: []uint32{65001<<16 | 1, 65001<<16 | 2}},
		p4: {prefix: p4, communities: []uint32{65001<<16 | 1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("desiredSet = %v, want %v", got, want)
	}

	v6only := testConfig()
	v6only.Families = []Family{IPv6Unicast}
	for _, tt := range []struct {
		name   string
		cfg    *Config
		routes []Route
		want   string
	}{
		{"host bits", &cfg, []Route{{Prefix: netip.MustParsePrefix("2001:db8::1/64")}}, "did you mean 2001:db8::/64"},
		{"invalid", &cfg, []Route{{}}, "invalid prefix"},
		{"mapped", &cfg, []Route{{Prefix: netip.MustParsePrefix("::ffff:10.0.0.0/120")}}, "IPv4-mapped"},
		{"family off", &v6only, []Route{{Prefix: p4}}, "family ipv4-unicast is not enabled"},
		{"community", &cfg, []Route{{Prefix: p6, Communities: []string{"x"}}}, `community "x"`},
		{"conflict", &cfg, []Route{{Prefix: p6}, {Prefix: p6, Communities: []string{"1:1"}}}, "twice with different communities"},
	} {
		if _, err := desiredSet(tt.cfg, tt.routes); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestDiffRoutes(t *testing.T) {
	a := announcement{prefix: netip.MustParsePrefix("2001:db8:a::/64")}
	b := announcement{prefix: netip.MustParsePrefix("2001:db8:b::/64")}
	c := announcement{prefix: netip.MustParsePrefix("10.0.0.0/24")}
	b2 := announcement{prefix: b.prefix, communities: []uint32{1}}
	set := func(as ...announcement) map[netip.Prefix]announcement {
		m := map[netip.Prefix]announcement{}
		for _, x := range as {
			m[x.prefix] = x
		}
		return m
	}
	tests := []struct {
		name             string
		current, desired map[netip.Prefix]announcement
		announce         []announcement
		withdraw         []netip.Prefix
	}{
		{"empty", set(), set(), nil, nil},
		{"first", set(), set(a, b, c), []announcement{c, a, b}, nil},
		{"same", set(a, b), set(a, b), nil, nil},
		{"remove", set(a, b, c), set(b), nil, []netip.Prefix{c.prefix, a.prefix}},
		{"changed communities", set(a, b), set(a, b2), []announcement{b2}, nil},
		{"swap", set(a), set(b), []announcement{b}, []netip.Prefix{a.prefix}},
		{"all gone", set(a, b), set(), nil, []netip.Prefix{a.prefix, b.prefix}},
	}
	for _, tt := range tests {
		ann, wd := diffRoutes(tt.current, tt.desired)
		if !reflect.DeepEqual(ann, tt.announce) || !reflect.DeepEqual(wd, tt.withdraw) {
			t.Errorf("%s: diffRoutes = %v, %v; want %v, %v", tt.name, ann, wd, tt.announce, tt.withdraw)
		}
	}
}

package ipmath

import (
	"net/netip"
	"testing"
)

func TestLast(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff"},
		{"2001:db8::/48", "2001:db8:0:ffff:ffff:ffff:ffff:ffff"},
		{"2001:db8::/128", "2001:db8::"},
		{"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"2001:db8::/65", "2001:db8::7fff:ffff:ffff:ffff"},
		{"2001:db8::/63", "2001:db8::1:ffff:ffff:ffff:ffff"},
		{"10.244.0.0/16", "10.244.255.255"},
		{"10.244.3.0/24", "10.244.3.255"},
		{"0.0.0.0/0", "255.255.255.255"},
		{"10.0.0.1/32", "10.0.0.1"},
	} {
		if got := Last(netip.MustParsePrefix(tc.in)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("Last(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestNextBlock(t *testing.T) {
	for _, tc := range []struct {
		b, within, want string
		ok              bool
	}{
		{"2001:db8::/64", "2001:db8::/48", "2001:db8:0:1::/64", true},
		{"2001:db8:0:ffff::/64", "2001:db8::/48", "", false},
		{"10.244.0.0/24", "10.244.0.0/16", "10.244.1.0/24", true},
		{"10.244.255.0/24", "10.244.0.0/16", "", false},
		{"ffff:ffff:ffff:ffff::/64", "::/0", "", false},
		{"2001:db8::/64", "2001:db8::/64", "", false},
	} {
		got, ok := NextBlock(netip.MustParsePrefix(tc.b), netip.MustParsePrefix(tc.within))
		if ok != tc.ok || (ok && got != netip.MustParsePrefix(tc.want)) {
			t.Errorf("NextBlock(%s, %s) = %s, %v; want %s, %v", tc.b, tc.within, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHosts(t *testing.T) {
	for _, tc := range []struct{ block, gw, first, last string }{
		{"2001:db8:1::/64", "2001:db8:1::1", "2001:db8:1::2", "2001:db8:1:0:ffff:ffff:ffff:ffff"},
		{"2001:db8:1::/126", "2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"},
		{"10.1.2.0/24", "10.1.2.1", "10.1.2.2", "10.1.2.254"},
		{"10.1.2.0/30", "10.1.2.1", "10.1.2.2", "10.1.2.2"},
	} {
		b := netip.MustParsePrefix(tc.block)
		if got := Gateway(b).String(); got != tc.gw {
			t.Errorf("Gateway(%s) = %s, want %s", b, got, tc.gw)
		}
		if got := FirstHost(b).String(); got != tc.first {
			t.Errorf("FirstHost(%s) = %s, want %s", b, got, tc.first)
		}
		if got := LastHost(b).String(); got != tc.last {
			t.Errorf("LastHost(%s) = %s, want %s", b, got, tc.last)
		}
		if IsHost(b, Gateway(b)) || IsHost(b, b.Addr()) || !IsHost(b, FirstHost(b)) || !IsHost(b, LastHost(b)) {
			t.Errorf("IsHost(%s) wrong at the edges", b)
		}
	}
}

func FuzzLast(f *testing.F) {
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 48)
	f.Fuzz(func(t *testing.T, raw []byte, bits int) {
		a, ok := netip.AddrFromSlice(raw)
		if !ok || bits < 0 || bits > a.BitLen() {
			return
		}
		p := netip.PrefixFrom(a, bits).Masked()
		last := Last(p)
		if !p.Contains(last) {
			t.Fatalf("Last(%s) = %s not in prefix", p, last)
		}
		if n := last.Next(); n.IsValid() && p.Contains(n) {
			t.Fatalf("Last(%s) = %s is not the last", p, last)
		}
	})
}

func TestSubnet(t *testing.T) {
	for _, tc := range []struct {
		p    string
		bits int
		n    uint64
		want string // "" when it does not fit
	}{
		{"2001:db8:aa00::/56", 64, 0, "2001:db8:aa00::/64"},
		{"2001:db8:aa00::/56", 64, 1, "2001:db8:aa00:1::/64"},
		{"2001:db8:aa00::/56", 64, 255, "2001:db8:aa00:ff::/64"},
		{"2001:db8:aa00::/56", 64, 256, ""},
		{"2001:db8:aa00::/64", 64, 0, "2001:db8:aa00::/64"},
		{"2001:db8:aa00::/64", 64, 1, ""},
		{"2001:db8::/48", 80, 3, "2001:db8:0:0:3::/80"},
		{"2001:db8::/60", 68, 0x1f, "2001:db8:0:1:f000::/68"},
		{"10.0.0.0/16", 24, 7, "10.0.7.0/24"},
		{"2001:db8::/64", 56, 0, ""},
	} {
		got, ok := Subnet(netip.MustParsePrefix(tc.p), tc.bits, tc.n)
		if (tc.want == "") != !ok || (ok && got.String() != tc.want) {
			t.Errorf("Subnet(%s, %d, %d) = %s, %v; want %q", tc.p, tc.bits, tc.n, got, ok, tc.want)
		}
	}
}

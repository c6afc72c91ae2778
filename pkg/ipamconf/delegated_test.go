package ipamconf

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDelegatedRanges: the rules of "delegated": true range entries, valid
// and invalid configs side by side.
func TestDelegatedRanges(t *testing.T) {
	const ula = `[{"subnet":"fd00:10::/48","blockSize":64}]`
	for _, tc := range []struct {
		name, ranges string
		extra        string // more ipam keys, with a leading comma
		wantPool     string // "" : invalid
		wantMsg      []string
	}{
		{name: "ula plus delegated", ranges: `[` + ula + `,[{"delegated":true,"subnetId":1}]]`,
			wantPool: "fd00:10::/48 blockSize 64 ; delegated subnetId 1"},
		{name: "delegated first, blockSize", ranges: `[[{"delegated":true,"subnetId":2,"blockSize":80}],` + ula + `]`,
			wantPool: "delegated subnetId 2 blockSize 80 ; fd00:10::/48 blockSize 64"},
		{name: "delegated alone is the shorthand", ranges: `[[{"delegated":true,"subnetId":3}]]`,
			wantPool: "delegated prefix, subnetId 3"},
		{name: "delegated alone with blockSize", ranges: `[[{"delegated":true,"subnetId":3,"blockSize":72}]]`,
			wantPool: "delegated subnetId 3 blockSize 72"},
		{name: "routes via the delegated family", ranges: `[[{"subnet":"10.1.0.0/16"}],[{"delegated":true,"subnetId":0}]]`, extra: `,"routes":[{"dst":"::/0"}]`,
			wantPool: "10.1.0.0/16 blockSize 24 ; delegated subnetId 0"},
		{name: "pd-ipam type with ranges", ranges: `[` + ula + `,[{"delegated":true,"subnetId":1}]]`, extra: `,"type":"pd-ipam"`,
			wantPool: "fd00:10::/48 blockSize 64 ; delegated subnetId 1"},

		{name: "no subnetId", ranges: `[[{"delegated":true}]]`, wantMsg: []string{"ipam.ranges[0][0].subnetId: missing"}},
		{name: "subnetId out of range", ranges: `[[{"delegated":true,"subnetId":65536}]]`, wantMsg: []string{"ipam.ranges[0][0].subnetId", "65536"}},
		{name: "subnetId without delegated", ranges: `[[{"subnet":"2001:db8::/48","subnetId":1}]]`, wantMsg: []string{"ipam.ranges[0][0].subnetId", "delegated"}},
		{name: "subnet with delegated", ranges: `[[{"delegated":true,"subnetId":1,"subnet":"2001:db8::/48"}]]`, wantMsg: []string{"ipam.ranges[0][0].subnet", "not allowed"}},
		{name: "exclude with delegated", ranges: `[[{"delegated":true,"subnetId":1,"exclude":["2001:db8::/64"]}]]`, wantMsg: []string{"ipam.ranges[0][0].exclude"}},
		{name: "bad blockSize", ranges: `[[{"delegated":true,"subnetId":1,"blockSize":127}]]`, wantMsg: []string{"ipam.ranges[0][0].blockSize", "127"}},
		{name: "not alone in its set", ranges: `[[{"subnet":"fd00:10::/48"},{"delegated":true,"subnetId":1}]]`, wantMsg: []string{"ipam.ranges[0][1]", "alone"}},
		{name: "two delegated sets", ranges: `[[{"delegated":true,"subnetId":1}],[{"delegated":true,"subnetId":2}]]`, wantMsg: []string{"ipam.ranges[1]", "at most one"}},
		{name: "eui64 needs 64", ranges: `[[{"delegated":true,"subnetId":1,"blockSize":80}]]`, extra: `,"addressing":"eui64"`, wantMsg: []string{"blockSize", "80", "eui64"}},
		{name: "with top-level subnetId", ranges: `[[{"delegated":true,"subnetId":1}]]`, extra: `,"subnetId":1`, wantMsg: []string{"ipam.ranges", "subnetId"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(`{"name":"n","ipam":{"ranges":` + tc.ranges + tc.extra + `}}`))
			if tc.wantPool == "" {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig {
					t.Fatalf("Parse error = %v, want code 7", err)
				}
				for _, w := range tc.wantMsg {
					if !strings.Contains(te.Msg, w) {
						t.Errorf("message %q does not contain %q", te.Msg, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := c.IPAM.PoolKey(); got != tc.wantPool {
				t.Errorf("PoolKey = %q, want %q", got, tc.wantPool)
			}
			if !c.IPAM.HasDelegated() {
				t.Error("HasDelegated = false")
			}
		})
	}
}

// TestDelegatedShorthand: pd-ipam's top-level subnetId and the explicit
// range set are one configuration.
func TestDelegatedShorthand(t *testing.T) {
	short, err := Parse([]byte(`{"name":"n","ipam":{"type":"pd-ipam","subnetId":4}}`))
	if err != nil {
		t.Fatal(err)
	}
	long, err := Parse([]byte(`{"name":"n","ipam":{"type":"pd-ipam","ranges":[[{"delegated":true,"subnetId":4}]]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if short.IPAM.PoolKey() != long.IPAM.PoolKey() || *short.IPAM.PD != *long.IPAM.PD || len(long.IPAM.Ranges) != 0 {
		t.Errorf("shorthand %q %+v, explicit %q %+v %v", short.IPAM.PoolKey(), short.IPAM.PD, long.IPAM.PoolKey(), long.IPAM.PD, long.IPAM.Ranges)
	}
}

// TestResolveDelegated: resolving fills subnet and block size, the
// configured blockSize winning over the layout's, and resolving again
// starts from the config.
func TestResolveDelegated(t *testing.T) {
	c, err := Parse([]byte(`{"name":"n","ipam":{"ranges":[[{"subnet":"fd00::/48"}],[{"delegated":true,"subnetId":1}],[{"subnet":"10.0.0.0/16"}]]}}`))
	if err != nil {
		t.Fatal(err)
	}
	set := c.IPAM.Ranges[1]
	if !set.Is6() || !set.IsDelegated() || c.IPAM.Ranges[0].IsDelegated() {
		t.Fatalf("set %+v: Is6 %v IsDelegated %v", set, set.Is6(), set.IsDelegated())
	}
	sub := netip.MustParsePrefix("2001:db8:0:10::/60")
	r := set[0].ResolveDelegated(sub, 64)
	if r.Subnet != sub || r.BlockSize != 64 || r.Source != SourcePD || !r.Delegated {
		t.Errorf("resolved %+v", r)
	}
	c2, _ := Parse([]byte(`{"name":"n","ipam":{"ranges":[[{"subnet":"fd00::/48"}],[{"delegated":true,"subnetId":1,"blockSize":72}]]}}`))
	r = c2.IPAM.Ranges[1][0].ResolveDelegated(sub, 64)
	if r.BlockSize != 72 {
		t.Errorf("configured blockSize lost: %+v", r)
	}
	if r = r.ResolveDelegated(netip.MustParsePrefix("2001:db8:0:20::/60"), 80); r.BlockSize != 72 || r.Subnet.String() != "2001:db8:0:20::/60" {
		t.Errorf("resolved again: %+v", r)
	}
}

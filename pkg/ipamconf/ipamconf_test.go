package ipamconf

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantPool string
		check    func(t *testing.T, c *NetConf)
	}{
		{
			name:     "IPv6 only, defaults",
			in:       `{"cniVersion":"1.1.0","name":"v6net","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:cafe::/48"}]]}}`,
			wantPool: "2001:db8:cafe::/48 blockSize 64",
			check: func(t *testing.T, c *NetConf) {
				if c.IPAM.Socket != DefaultSocket {
					t.Errorf("socket = %q, want default", c.IPAM.Socket)
				}
			},
		},
		{
			name:     "dual stack with explicit sizes",
			in:       `{"name":"ds","ipam":{"ranges":[[{"subnet":"2001:db8:1::/56","blockSize":72}],[{"subnet":"10.244.0.0/16","blockSize":26}]],"socket":"/tmp/x.sock"}}`,
			wantPool: "2001:db8:1::/56 blockSize 72 ; 10.244.0.0/16 blockSize 26",
		},
		{
			name:     "pd-ipam",
			in:       `{"name":"pdnet","ipam":{"type":"pd-ipam","subnetId":3,"routes":[{"dst":"::/0"}]}}`,
			wantPool: "delegated prefix, subnetId 3",
			check: func(t *testing.T, c *NetConf) {
				if c.IPAM.PD == nil || c.IPAM.PD.SubnetID != 3 || len(c.IPAM.Ranges) != 0 {
					t.Errorf("pd = %+v, ranges = %v", c.IPAM.PD, c.IPAM.Ranges)
				}
			},
		},
		{
			name:     "IPv4 default block size",
			in:       `{"name":"v4","ipam":{"ranges":[[{"subnet":"10.1.0.0/16"}]]}}`,
			wantPool: "10.1.0.0/16 blockSize 24",
		},
		{
			name:     "subnet smaller than the default block is one block",
			in:       `{"name":"small","ipam":{"ranges":[[{"subnet":"2001:db8::/80"}],[{"subnet":"10.1.1.0/28"}]]}}`,
			wantPool: "2001:db8::/80 blockSize 80 ; 10.1.1.0/28 blockSize 28",
		},
		{
			name:     "two ranges in one set, routes and dns",
			in:       `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8:1::/48"},{"subnet":"2001:db8:2::/48"}]],"routes":[{"dst":"::/0"},{"dst":"2001:db8:ff::/48","gw":"2001:db8:1::fe"}],"dns":{"nameservers":["2001:db8::53"],"search":["example.com"]}}}`,
			wantPool: "2001:db8:1::/48 blockSize 64, 2001:db8:2::/48 blockSize 64",
			check: func(t *testing.T, c *NetConf) {
				if len(c.IPAM.Routes) != 2 || c.IPAM.Routes[0].GW.IsValid() || c.IPAM.Routes[1].GW.String() != "2001:db8:1::fe" {
					t.Errorf("routes = %+v", c.IPAM.Routes)
				}
				if len(c.IPAM.DNS.Nameservers) != 1 || c.IPAM.DNS.Search[0] != "example.com" {
					t.Errorf("dns = %+v", c.IPAM.DNS)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := c.IPAM.PoolKey(); got != tc.wantPool {
				t.Errorf("PoolKey = %q, want %q", got, tc.wantPool)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		code     uint
		wantMsg  []string
	}{
		{"malformed JSON", `{"name":"n","ipam":`, types.ErrDecodingFailure, []string{"decode network config"}},
		{"wrong type", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","blockSize":"64"}]]}}`, types.ErrDecodingFailure, []string{"blockSize"}},
		{"missing name", `{"ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}}`, types.ErrInvalidNetworkConfig, []string{"name: missing"}},
		{"bad name", `{"name":"a/b","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}}`, types.ErrInvalidNetworkConfig, []string{"name", `"a/b"`}},
		{"pd-ipam without subnetId", `{"name":"n","ipam":{"type":"pd-ipam"}}`, types.ErrInvalidNetworkConfig, []string{"ipam.subnetId: missing"}},
		{"subnetId out of range", `{"name":"n","ipam":{"type":"pd-ipam","subnetId":70000}}`, types.ErrInvalidNetworkConfig, []string{"ipam.subnetId", "70000"}},
		{"subnetId with ranges", `{"name":"n","ipam":{"subnetId":1,"ranges":[[{"subnet":"2001:db8::/48"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges", "subnetId"}},
		{"bad community", `{"name":"n","ipam":{"bgpCommunities":["65001:70000"],"ranges":[[{"subnet":"2001:db8::/48"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.bgpCommunities[0]", "65001:70000"}},
		{"bad stickyGrace", `{"name":"n","ipam":{"sticky":true,"stickyGrace":"soon","ranges":[[{"subnet":"2001:db8::/48"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.stickyGrace", "soon"}},
		{"bad addressing", `{"name":"n","ipam":{"addressing":"random","ranges":[[{"subnet":"2001:db8::/48"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.addressing", "random"}},
		{"eui64 needs /64 blocks", `{"name":"n","ipam":{"addressing":"eui64","ranges":[[{"subnet":"2001:db8::/48","blockSize":80}]]}}`, types.ErrInvalidNetworkConfig, []string{"blockSize", "80"}},
		{"exclude outside subnet", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","exclude":["2001:db9::/64"]}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].exclude[0]", "2001:db9::/64"}},
		{"missing ipam", `{"name":"n"}`, types.ErrInvalidNetworkConfig, []string{"ipam: missing"}},
		{"missing ranges", `{"name":"n","ipam":{"type":"ipam-v6"}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges: missing"}},
		{"empty range set", `{"name":"n","ipam":{"ranges":[[]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0]: empty"}},
		{"missing subnet", `{"name":"n","ipam":{"ranges":[[{"blockSize":64}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].subnet: missing"}},
		{"subnet not a prefix", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].subnet", `"2001:db8::"`}},
		{"subnet not a network address", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::1/48"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].subnet", "not a network address", "2001:db8::/48"}},
		{"link-local subnet", `{"name":"n","ipam":{"ranges":[[{"subnet":"fe80::/64"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].subnet"}},
		{"IPv4 block size for IPv6", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","blockSize":24}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].blockSize", "24", "2001:db8::/48", "48..126"}},
		{"block too small", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","blockSize":128}]]}}`, types.ErrInvalidNetworkConfig, []string{"blockSize", "128"}},
		{"IPv4 block too big for range", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/16","blockSize":8}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].blockSize", "16..30"}},
		{"mixed families in a set", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"},{"subnet":"10.0.0.0/16"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][1].subnet", "mixes"}},
		{"overlapping ranges", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}],[{"subnet":"2001:db8:0:1::/64"}]]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.ranges", "2001:db8::/48 overlaps 2001:db8:0:1::/64"}},
		{"bad route dst", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]],"routes":[{"dst":"default"}]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.routes[0].dst", `"default"`}},
		{"route gw family", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]],"routes":[{"dst":"::/0","gw":"10.0.0.1"}]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.routes[0].gw"}},
		{"route without gw and family", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]],"routes":[{"dst":"0.0.0.0/0"}]}}`, types.ErrInvalidNetworkConfig, []string{"ipam.routes[0]", "no gw"}},
		{"bad nameserver", `{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]],"dns":{"nameservers":["dns.example"]}}}`, types.ErrInvalidNetworkConfig, []string{"ipam.dns.nameservers[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("Parse error = %v (%T), want *types.Error", err, err)
			}
			if te.Code != tc.code {
				t.Errorf("code = %d, want %d (%s)", te.Code, tc.code, te.Msg)
			}
			for _, w := range tc.wantMsg {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("message %q does not contain %q", te.Msg, w)
				}
			}
		})
	}
}

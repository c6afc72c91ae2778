package ipamconf

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParse feeds arbitrary bytes as a network configuration: Parse must
// never panic, must fail only with a CNI error, and what it accepts must be
// internally consistent.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"v6net","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:cafe::/48","blockSize":64}]]}}`,
		`{"name":"ds","ipam":{"ranges":[[{"subnet":"2001:db8::/56"}],[{"subnet":"10.0.0.0/16","blockSize":24}]],"routes":[{"dst":"::/0"}]}}`,
		`{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::1/48"}]]}}`,
		`{"name":"m","ipam":{"ranges":[[{"subnet":"fd00:10::/48","blockSize":64}],[{"delegated":true,"subnetId":1}]]}}`,
		`{"name":"m","ipam":{"type":"pd-ipam","ranges":[[{"delegated":true,"subnetId":7,"blockSize":80}]]}}`,
		`{"name":"m","ipam":{"ranges":[[{"delegated":true,"subnetId":1}],[{"delegated":true,"subnetId":2}]]}}`,
		`{}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || (te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("error %v is not a code 6/7 CNI error", err)
			}
			return
		}
		if len(c.IPAM.Ranges) == 0 && c.IPAM.PD == nil {
			t.Fatal("accepted a config without ranges or subnetId")
		}
		delegatedSets := 0
		for _, set := range c.IPAM.Ranges {
			if set.IsDelegated() {
				delegatedSets++
			}
			for _, r := range set {
				if r.Delegated {
					if len(set) != 1 || r.Subnet.IsValid() || len(r.Exclude) != 0 || r.SubnetID < 0 || r.SubnetID > 0xffff {
						t.Fatalf("accepted bad delegated range %+v in set %+v", r, set)
					}
					continue
				}
				if r.Subnet != r.Subnet.Masked() || r.BlockSize < r.Subnet.Bits() || r.BlockSize > r.Subnet.Addr().BitLen()-2 {
					t.Fatalf("accepted bad range %+v", r)
				}
			}
		}
		if delegatedSets > 1 || (c.IPAM.PD != nil && len(c.IPAM.Ranges) != 0) {
			t.Fatalf("accepted %d delegated sets (pd %+v, %d sets)", delegatedSets, c.IPAM.PD, len(c.IPAM.Ranges))
		}
		_ = c.IPAM.PoolKey()
	})
}

package ipamconf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipmath"
)

// usableBrute is UsableBlock by walking every block and every address: the
// definition the fast search must agree with.
func usableBrute(r Range, b netip.Prefix) (netip.Prefix, bool) {
	for ok := r.Subnet.Contains(b.Addr()); ok; b, ok = ipmath.NextBlock(b, r.Subnet) {
		for a := ipmath.FirstHost(b); a.Compare(ipmath.LastHost(b)) <= 0; a = a.Next() {
			if _, ex := r.Excluded(a); !ex {
				return b, true
			}
		}
	}
	return netip.Prefix{}, false
}

// TestUsableBlockMatchesBruteForce checks the run-jumping search against the
// walk on random IPv4 /24 ranges with random (nested, adjacent, overlapping)
// exclusions.
func TestUsableBlockMatchesBruteForce(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	subnet := netip.MustParsePrefix("10.9.8.0/24")
	for i := range 2000 {
		r := Range{Subnet: subnet, BlockSize: 26 + rng.IntN(5)}
		for range rng.IntN(8) {
			bits := 24 + rng.IntN(9)
			a := netip.AddrFrom4([4]byte{10, 9, 8, byte(rng.IntN(256))})
			r.Exclude = append(r.Exclude, netip.PrefixFrom(a, bits).Masked())
		}
		if rng.IntN(2) == 0 {
			r.excl = mergeExcludes(r.Exclude)
		}
		for b, ok := ipmath.FirstBlock(subnet, r.BlockSize), true; ok; b, ok = ipmath.NextBlock(b, subnet) {
			got, gok := r.UsableBlock(b)
			want, wok := usableBrute(r, b)
			if got != want || gok != wok {
				t.Fatalf("case %d (seed %d): range %v exclude %v: UsableBlock(%s) = %s %v, want %s %v",
					i, seed, r.Subnet, r.Exclude, b, got, gok, want, wok)
			}
		}
		for a := range 256 {
			addr := netip.AddrFrom4([4]byte{10, 9, 8, byte(a)})
			_, want := r.Excluded(addr)
			hi, got := r.ExcludedThrough(addr)
			if got != want {
				t.Fatalf("case %d (seed %d): ExcludedThrough(%s) = %v, want %v (exclude %v)", i, seed, addr, got, want, r.Exclude)
			}
			if got {
				if _, ex := r.Excluded(hi); !ex {
					t.Fatalf("case %d: run end %s of %s is not excluded", i, hi, addr)
				}
				if _, ex := r.Excluded(hi.Next()); ex && subnet.Contains(hi.Next()) {
					t.Fatalf("case %d: run of %s ends at %s, but %s is excluded too", i, addr, hi, hi.Next())
				}
			}
		}
	}
}

// TestUsableBlockHuge is the configuration that froze ipamd: /120 blocks in
// a /48 whose first /64 is excluded are 2^56 excluded blocks.
func TestUsableBlockHuge(t *testing.T) {
	r := Range{
		Subnet:    netip.MustParsePrefix("2001:db8:aa::/48"),
		BlockSize: 120,
		Exclude:   []netip.Prefix{netip.MustParsePrefix("2001:db8:aa::/64"), netip.MustParsePrefix("2001:db8:aa:1::/65")},
	}
	got, ok := r.FirstUsableBlock()
	if want := netip.MustParsePrefix("2001:db8:aa:1:8000::/120"); !ok || got != want {
		t.Fatalf("FirstUsableBlock = %s %v, want %s", got, ok, want)
	}
	r.Exclude = []netip.Prefix{netip.MustParsePrefix("2001:db8:aa::/49"), netip.MustParsePrefix("2001:db8:aa:8000::/49")}
	if got, ok := r.FirstUsableBlock(); ok {
		t.Fatalf("FirstUsableBlock = %s, want none: two halves exclude all", got)
	}
}

func TestParseRefusesRangeWithNothingLeft(t *testing.T) {
	tests := []struct {
		name, ranges string
		wantErr      string
	}{
		{"whole subnet", `[[{"subnet":"2001:db8:1::/64","exclude":["2001:db8:1::/64"]}]]`, "ipam.ranges[0][0].exclude"},
		{"two halves", `[[{"subnet":"2001:db8:1::/48","blockSize":120,"exclude":["2001:db8:1::/49","2001:db8:1:8000::/49"]}]]`, "ipam.ranges[0][0].exclude"},
		{"every host of the only block", `[[{"subnet":"10.1.0.0/30","blockSize":30,"exclude":["10.1.0.2/32"]}]]`, "ipam.ranges[0][0].exclude"},
		{"first /64 of a /48 with /120 blocks is fine", `[[{"subnet":"2001:db8:2::/48","blockSize":120,"exclude":["2001:db8:2::/64"]}]]`, ""},
		{"gateway only excluded is fine", `[[{"subnet":"10.1.0.0/29","blockSize":29,"exclude":["10.1.0.1/32"]}]]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","ranges":%s}}`, tt.ranges)))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			te, ok := err.(*types.Error)
			if !ok || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, tt.wantErr) {
				t.Fatalf("Parse error = %v, want code 7 naming %q", err, tt.wantErr)
			}
		})
	}
}

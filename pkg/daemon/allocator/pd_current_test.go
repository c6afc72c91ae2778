package allocator

import (
	"net/netip"
	"testing"
	"time"
)

// TestCurrentPrefix: among usable prefixes the one of the newest Reply is
// current, ties broken by the longest preferred lifetime left; deprecated
// and expired prefixes never are.
func TestCurrentPrefix(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	p1, p2, p3 := netip.MustParsePrefix("2001:db8:100::/56"), netip.MustParsePrefix("2001:db8:200::/56"), netip.MustParsePrefix("2001:db8:50::/56")
	d := func(p netip.Prefix, updated, preferred, valid time.Duration) Delegated {
		x := Delegated{Prefix: p, Updated: now.Add(updated), Valid: now.Add(valid)}
		if preferred != 0 {
			x.Preferred = now.Add(preferred)
		}
		return x
	}
	for _, tc := range []struct {
		name string
		held []Delegated
		want netip.Prefix
	}{
		{"newest reply wins over lower address", []Delegated{d(p1, -time.Minute, time.Hour, 2*time.Hour), d(p2, 0, time.Hour, 2*time.Hour)}, p2},
		{"newest reply wins over longer lifetime", []Delegated{d(p2, -time.Minute, 10*time.Hour, 20*time.Hour), d(p1, 0, time.Hour, 2*time.Hour)}, p1},
		{"same reply: longest preferred left", []Delegated{d(p1, 0, time.Hour, 2*time.Hour), d(p2, 0, 3*time.Hour, 4*time.Hour)}, p2},
		{"same reply: infinite preferred is longest", []Delegated{d(p1, 0, time.Hour, 2*time.Hour), d(p2, 0, 0, 4*time.Hour)}, p2},
		{"full tie: lowest address", []Delegated{d(p2, 0, time.Hour, 2*time.Hour), d(p1, 0, time.Hour, 2*time.Hour)}, p1},
		{"deprecated newer one is not current", []Delegated{d(p1, -time.Minute, time.Hour, 2*time.Hour), d(p2, 0, -time.Second, time.Hour)}, p1},
		{"expired one is not current", []Delegated{d(p3, 0, time.Hour, -time.Second), d(p1, -time.Hour, time.Hour, 2*time.Hour)}, p1},
		{"nothing usable: address order", []Delegated{d(p2, 0, -time.Second, time.Hour), d(p1, 0, -time.Second, time.Hour)}, p1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			held := append([]Delegated(nil), tc.held...)
			sortCurrentFirst(held, now)
			if held[0].Prefix != tc.want {
				t.Errorf("current = %s, want %s (order %v)", held[0].Prefix, tc.want, held)
			}
		})
	}
}

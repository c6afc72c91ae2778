package pdnet

import (
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestFillStatePrefixStates: `ipamd pd` names the current prefix (newest
// Reply), the one being renumbered away from, and one past its valid end.
func TestFillStatePrefixStates(t *testing.T) {
	now := time.Now()
	b := dhcp6pd.Binding{Prefixes: []dhcp6pd.Prefix{
		{Prefix: netip.MustParsePrefix("2001:db8:100::/56"), Preferred: time.Minute, Valid: 2 * time.Minute, Updated: now.Add(-30 * time.Second)},
		{Prefix: netip.MustParsePrefix("2001:db8:200::/56"), Preferred: time.Minute, Valid: 2 * time.Minute, Updated: now.Add(-time.Second)},
		{Prefix: netip.MustParsePrefix("2001:db8:300::/56"), Preferred: time.Second, Valid: 2 * time.Second, Updated: now.Add(-time.Minute)},
	}}
	var st ipamapi.PDState
	fillState(&st, b, "uplink0", now)
	want := map[string]string{"2001:db8:100::/56": "deprecated", "2001:db8:200::/56": "current", "2001:db8:300::/56": "expired"}
	if len(st.Prefixes) != len(want) {
		t.Fatalf("prefixes %+v, want %d", st.Prefixes, len(want))
	}
	for _, p := range st.Prefixes {
		if p.State != want[p.Prefix] {
			t.Errorf("%s: state %q, want %q", p.Prefix, p.State, want[p.Prefix])
		}
	}
}

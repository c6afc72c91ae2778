package ipamserver

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// TestCNIResult: an assignment renders as the CNI 1.1.0 result ipamd has
// always answered: addresses with their block's prefix length and gateway,
// routes with their next hop (none when the family has no address), DNS.
func TestCNIResult(t *testing.T) {
	conf, err := ipamconf.Parse([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6",
		"ranges":[[{"subnet":"2001:db8:cafe::/48"}]],"dns":{"nameservers":["2001:db8::53"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	asg := &allocator.Assignment{
		IPs: []allocator.Address{{
			Address: netip.MustParsePrefix("2001:db8:cafe::2/64"), Gateway: netip.MustParseAddr("2001:db8:cafe::1"),
			Block: netip.MustParsePrefix("2001:db8:cafe::/64"),
		}},
		Routes: []allocator.Route{
			{Dst: netip.MustParsePrefix("::/0"), GW: netip.MustParseAddr("2001:db8:cafe::1")},
			{Dst: netip.MustParsePrefix("10.0.0.0/8")},
		},
	}
	got, err := json.Marshal(cniResult(asg, conf))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"cniVersion":"1.1.0","dns":{"nameservers":["2001:db8::53"]},` +
		`"ips":[{"address":"2001:db8:cafe::2/64","gateway":"2001:db8:cafe::1"}],` +
		`"routes":[{"dst":"::/0","gw":"2001:db8:cafe::1"},{"dst":"10.0.0.0/8"}]}`
	if string(got) != want {
		t.Errorf("result\n got %s\nwant %s", got, want)
	}
}

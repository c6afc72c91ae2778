package ipamserver

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestCheckAnswersTheRecord: CHECK answers the attachment's addresses as
// its record holds them, with their gateways (what bridge-v6 checks a
// renumbered attachment against); an attachment without a record fails.
func TestCheckAnswersTheRecord(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	n := startNode(t, st, "chk1", true)
	ctx := context.Background()
	res, err := n.cli.Add(ctx, nodesAdd("c1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := n.cli.CheckState(ctx, nodesAdd("c1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.IPs) != 1 || got.IPs[0].Address.String() != res.IPs[0].Address.String() ||
		got.IPs[0].Gateway.String() != res.IPs[0].Gateway.String() || got.IPs[0].Deprecated {
		t.Errorf("CHECK answered %+v, want the ADD's address %s via %s", got.IPs, res.IPs[0].Address.String(), res.IPs[0].Gateway)
	}
	if _, err := n.cli.CheckState(ctx, nodesAdd("c2")); err == nil {
		t.Error("CHECK of an attachment without a record passed")
	}
}

// TestCheckResult: current addresses first in the record's order, no
// record gives an empty answer (the plugin then checks prevResult's).
func TestCheckResult(t *testing.T) {
	a := netip.MustParsePrefix("fd00:10::2/64")
	b := netip.MustParsePrefix("2001:db8:1:1::2/64")
	gw := netip.MustParseAddr("2001:db8:1:1::1")
	for _, tc := range []struct {
		name string
		h    *store.Handle
		want []ipamapi.CheckIP
	}{
		{"no record", nil, nil},
		{"two addresses", &store.Handle{IPs: []store.IP{{Address: a}, {Address: b, Gateway: gw}}},
			[]ipamapi.CheckIP{{Address: a}, {Address: b, Gateway: gw}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkResult(tc.h, time.Now()).IPs
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("[%d] %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

package main

import (
	"net/netip"
	"slices"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
)

// TestWithRecordedIPs: what CHECK expects once ipamd's record replaces
// prevResult's IPs: the record's addresses and gateways; routes via an old
// address's gateway go via its successor's (named by Replaces, else found
// by interface ID once the old address is dropped); a prevResult that
// already has the new address, a ULA address beside a delegated one and
// other interfaces' IPs are left as they are.
func TestWithRecordedIPs(t *testing.T) {
	const (
		oldA, oldGW = "2001:db8:100:1::2/64", "2001:db8:100:1::1"
		newA, newGW = "2001:db8:200:1::2/64", "2001:db8:200:1::1"
		ulaA, ulaGW = "fd00:10:0:1::2/64", "fd00:10:0:1::1"
	)
	cip := func(a, gw string) ipamapi.CheckIP {
		return ipamapi.CheckIP{Address: netip.MustParsePrefix(a), Gateway: netip.MustParseAddr(gw)}
	}
	deprecated := cip(oldA, oldGW)
	deprecated.Deprecated = true
	successor := cip(newA, newGW)
	successor.Replaces = netip.MustParsePrefix(oldA).Addr()
	prevWith := func(ips [][2]string, routes [][2]string) *current.Result {
		r := &current.Result{Interfaces: []*current.Interface{{Name: "br"}, {Name: "veth"}, {Name: "eth0", Sandbox: "/ns"}, {Name: "net1", Sandbox: "/ns"}}}
		for _, ip := range ips {
			c := ipConfig(t, ip[0], ip[1])
			c.Interface = current.Int(2)
			r.IPs = append(r.IPs, c)
		}
		other := ipConfig(t, "10.9.0.2/24", "10.9.0.1")
		other.Interface = current.Int(3)
		r.IPs = append(r.IPs, other)
		for _, rt := range routes {
			r.Routes = append(r.Routes, cniRoute(t, rt[0], rt[1]))
		}
		return r
	}
	oldPrev := prevWith([][2]string{{oldA, oldGW}}, [][2]string{{"::/0", oldGW}, {"2001:db8:beef::/48", oldGW}})
	att := &attachment{netns: "/ns", ifName: "eth0"}
	for _, tc := range []struct {
		name       string
		prev       *current.Result
		record     []ipamapi.CheckIP
		wantAddrs  []string
		wantRoutes []string
	}{
		{"no record: prevResult", oldPrev, nil,
			[]string{oldA, "10.9.0.2/24"}, []string{"::/0 via " + oldGW, "2001:db8:beef::/48 via " + oldGW}},
		{"overlap, old prevResult", oldPrev, []ipamapi.CheckIP{successor, deprecated},
			[]string{newA, oldA, "10.9.0.2/24"}, []string{"::/0 via " + newGW, "2001:db8:beef::/48 via " + newGW}},
		{"overlap, new prevResult", prevWith([][2]string{{newA, newGW}}, [][2]string{{"::/0", newGW}}), []ipamapi.CheckIP{successor, deprecated},
			[]string{newA, oldA, "10.9.0.2/24"}, []string{"::/0 via " + newGW}},
		{"old dropped, no Replaces left", oldPrev, []ipamapi.CheckIP{cip(newA, newGW)},
			[]string{newA, "10.9.0.2/24"}, []string{"::/0 via " + newGW, "2001:db8:beef::/48 via " + newGW}},
		{"ULA kept beside the delegated address",
			prevWith([][2]string{{ulaA, ulaGW}, {oldA, oldGW}}, [][2]string{{"::/0", ulaGW}, {"2001:db8:beef::/48", oldGW}}),
			[]ipamapi.CheckIP{cip(ulaA, ulaGW), cip(newA, newGW)},
			[]string{ulaA, newA, "10.9.0.2/24"}, []string{"::/0 via " + ulaGW, "2001:db8:beef::/48 via " + newGW}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec *ipamapi.CheckResult
			if tc.record != nil {
				rec = &ipamapi.CheckResult{IPs: tc.record}
			}
			got, err := withRecordedIPs(tc.prev, att, rec)
			if err != nil {
				t.Fatal(err)
			}
			var addrs, routes []string
			for _, ip := range got.IPs {
				addrs = append(addrs, ip.Address.String())
			}
			p, err := expectedState(&bridgeconf.NetConf{IsGateway: true}, got, att)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.routes {
				routes = append(routes, r.String())
			}
			if !slices.Equal(addrs, tc.wantAddrs) || !slices.Equal(routes, tc.wantRoutes) {
				t.Errorf("addresses %v routes %v, want %v %v", addrs, routes, tc.wantAddrs, tc.wantRoutes)
			}
		})
	}
	if gw := oldPrev.Routes[0].GW.String(); gw != oldGW || len(oldPrev.IPs) != 2 {
		t.Errorf("prevResult changed in place: route via %s, %d IPs", gw, len(oldPrev.IPs))
	}
}

package main

import (
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
)

func ipConfig(t *testing.T, addr, gw string) *current.IPConfig {
	t.Helper()
	ipn, err := types.ParseCIDR(addr)
	if err != nil {
		t.Fatal(err)
	}
	return &current.IPConfig{Address: *ipn, Gateway: net.ParseIP(gw)}
}

func cniRoute(t *testing.T, dst, gw string) *types.Route {
	t.Helper()
	_, ipn, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatal(err)
	}
	return &types.Route{Dst: *ipn, GW: net.ParseIP(gw)}
}

func TestPlanAttachment(t *testing.T) {
	tests := []struct {
		name         string
		conf         bridgeconf.NetConf
		ips          []*current.IPConfig
		routes       []*types.Route
		wantAddrs    []string
		wantGateways []string
		wantRoutes   []string
		wantHas4     bool
		wantErr      string
	}{
		{
			name:         "ipv6 only, default gateway",
			conf:         bridgeconf.NetConf{IsGateway: true, IsDefaultGateway: true},
			ips:          []*current.IPConfig{ipConfig(t, "2001:db8:cafe:3::2/64", "2001:db8:cafe:3::1")},
			wantAddrs:    []string{"2001:db8:cafe:3::2/64"},
			wantGateways: []string{"2001:db8:cafe:3::1/64"},
			wantRoutes:   []string{"::/0 via 2001:db8:cafe:3::1"},
		},
		{
			name: "dual stack, route without gateway goes via its family's gateway",
			conf: bridgeconf.NetConf{IsGateway: true, IsDefaultGateway: true},
			ips: []*current.IPConfig{
				ipConfig(t, "2001:db8:cafe:3::2/64", "2001:db8:cafe:3::1"),
				ipConfig(t, "10.244.5.2/24", "10.244.5.1"),
			},
			routes:       []*types.Route{cniRoute(t, "198.51.100.0/24", ""), cniRoute(t, "2001:db8:beef::/48", "2001:db8:cafe:3::9")},
			wantAddrs:    []string{"2001:db8:cafe:3::2/64", "10.244.5.2/24"},
			wantGateways: []string{"2001:db8:cafe:3::1/64", "10.244.5.1/24"},
			wantRoutes: []string{
				"198.51.100.0/24 via 10.244.5.1", "2001:db8:beef::/48 via 2001:db8:cafe:3::9",
				"::/0 via 2001:db8:cafe:3::1", "0.0.0.0/0 via 10.244.5.1",
			},
			wantHas4: true,
		},
		{
			name:         "missing gateway is the first host of the block",
			conf:         bridgeconf.NetConf{IsGateway: true},
			ips:          []*current.IPConfig{ipConfig(t, "2001:db8:cafe:3::20/64", "")},
			wantAddrs:    []string{"2001:db8:cafe:3::20/64"},
			wantGateways: []string{"2001:db8:cafe:3::1/64"},
		},
		{
			name:         "IPAM's own default route is kept, not doubled",
			conf:         bridgeconf.NetConf{IsGateway: true, IsDefaultGateway: true},
			ips:          []*current.IPConfig{ipConfig(t, "2001:db8:cafe:3::2/64", "2001:db8:cafe:3::1")},
			routes:       []*types.Route{cniRoute(t, "::/0", "2001:db8:cafe:3::fe")},
			wantAddrs:    []string{"2001:db8:cafe:3::2/64"},
			wantRoutes:   []string{"::/0 via 2001:db8:cafe:3::fe"},
			wantGateways: []string{"2001:db8:cafe:3::1/64"},
		},
		{
			name:       "not the gateway, no gateway: on-link route",
			conf:       bridgeconf.NetConf{},
			ips:        []*current.IPConfig{ipConfig(t, "2001:db8:cafe:3::2/64", "")},
			routes:     []*types.Route{cniRoute(t, "2001:db8:beef::/48", "")},
			wantAddrs:  []string{"2001:db8:cafe:3::2/64"},
			wantRoutes: []string{"2001:db8:beef::/48 on-link"},
		},
		{
			name:    "no IPs",
			conf:    bridgeconf.NetConf{IsGateway: true},
			wantErr: "no IP addresses",
		},
		{
			name:    "gateway equal to the address",
			conf:    bridgeconf.NetConf{IsGateway: true},
			ips:     []*current.IPConfig{ipConfig(t, "2001:db8:cafe:3::1/64", "2001:db8:cafe:3::1")},
			wantErr: "equal to the container address",
		},
		{
			name:    "gateway of another family",
			conf:    bridgeconf.NetConf{IsGateway: true},
			ips:     []*current.IPConfig{ipConfig(t, "2001:db8:cafe:3::2/64", "2001:db8:cafe:3::1")},
			routes:  []*types.Route{cniRoute(t, "2001:db8:beef::/48", "10.0.0.1")},
			wantErr: "another address family",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.conf.IPAM.Type = "fake"
			p, err := planAttachment(&tt.conf, &current.Result{IPs: tt.ips, Routes: tt.routes})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := joinStrings(p.addrs); got != strings.Join(tt.wantAddrs, ",") {
				t.Errorf("addrs = %s, want %v", got, tt.wantAddrs)
			}
			if got := joinStrings(p.gatewayAddrs); got != strings.Join(tt.wantGateways, ",") {
				t.Errorf("gateways = %s, want %v", got, tt.wantGateways)
			}
			if got := joinStrings(p.routes); got != strings.Join(tt.wantRoutes, ",") {
				t.Errorf("routes = %s, want %v", got, tt.wantRoutes)
			}
			if len(p.resultRoutes) != len(p.routes) {
				t.Errorf("%d result routes for %d routes", len(p.resultRoutes), len(p.routes))
			}
			if p.has4 != tt.wantHas4 {
				t.Errorf("has4 = %v, want %v", p.has4, tt.wantHas4)
			}
		})
	}
}

func joinStrings[T interface{ String() string }](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

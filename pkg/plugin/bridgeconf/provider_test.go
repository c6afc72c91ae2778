package bridgeconf

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseProvider(t *testing.T) {
	const head = `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6"`
	tests := []struct {
		name string
		json string
		want Provider
		// uplink is Provider.Uplink().
		uplink string
	}{
		{
			name:   "defaults",
			json:   head + `,"provider":{"master":"eth1"},"ipam":{"type":"ipam-v6"}}`,
			want:   Provider{Master: "eth1", OptimisticDAD: true},
			uplink: "eth1",
		},
		{
			name:   "all keys",
			json:   head + `,"provider":{"master":"eth1","vlanId":22,"gateway":"2001:db8:22::1","optimisticDad":false},"ipam":{"type":"x"}}`,
			want:   Provider{Master: "eth1", VLANID: 22, Gateway: netip.MustParseAddr("2001:db8:22::1")},
			uplink: "eth1.22",
		},
		{
			name:   "link-local gateway (a VRRP virtual address)",
			json:   head + `,"provider":{"master":"eth1","gateway":"fe80::1"},"ipam":{"type":"x"}}`,
			want:   Provider{Master: "eth1", Gateway: netip.MustParseAddr("fe80::1"), OptimisticDAD: true},
			uplink: "eth1",
		},
		{
			name:   "VLAN sub-interface name cut to 15 bytes",
			json:   head + `,"provider":{"master":"enp0s31f6abcd","vlanId":4094},"ipam":{"type":"x"}}`,
			want:   Provider{Master: "enp0s31f6abcd", VLANID: 4094, OptimisticDAD: true},
			uplink: "enp0s31f6abcd.4",
		},
		{
			name:   "slaac with an eui64 IPAM",
			json:   head + `,"ipv6Mode":"slaac","provider":{"master":"eth1"},"ipam":{"type":"ipam-v6","addressing":"eui64"}}`,
			want:   Provider{Master: "eth1", OptimisticDAD: true},
			uplink: "eth1",
		},
		{
			name:   "dhcpv6-stateful with any IPAM",
			json:   head + `,"ipv6Mode":"dhcpv6-stateful","provider":{"master":"eth1"},"ipam":{"type":"x"}}`,
			want:   Provider{Master: "eth1", OptimisticDAD: true},
			uplink: "eth1",
		},
		{
			name:   "on-link prefixes: ipam.ranges' IPv6 subnets",
			json:   head + `,"provider":{"master":"eth1"},"ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:22::/64","blockSize":120},{"subnet":"2001:db8:23::1/64"}],[{"subnet":"10.0.0.0/24"}],[{"delegated":true,"subnetId":1}]]}}`,
			want:   Provider{Master: "eth1", OptimisticDAD: true, OnLink: []netip.Prefix{netip.MustParsePrefix("2001:db8:22::/64")}},
			uplink: "eth1",
		},
		{
			name:   "another IPAM's ranges of another shape",
			json:   head + `,"provider":{"master":"eth1"},"ipam":{"type":"x","ranges":"none"}}`,
			want:   Provider{Master: "eth1", OptimisticDAD: true},
			uplink: "eth1",
		},
		{
			name:   "explicit false of the refused keys",
			json:   head + `,"isGateway":false,"isDefaultGateway":false,"ipMasq":false,"hairpinMode":false,"enableDad":true,"vlan":0,"provider":{"master":"eth1"},"ipam":{"type":"x"}}`,
			want:   Provider{Master: "eth1", OptimisticDAD: true},
			uplink: "eth1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := Parse([]byte(tt.json))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if conf.Provider == nil || !reflect.DeepEqual(*conf.Provider, tt.want) {
				t.Fatalf("Provider = %+v, want %+v", conf.Provider, tt.want)
			}
			if got := conf.Provider.Uplink(); got != tt.uplink {
				t.Errorf("Uplink() = %q, want %q", got, tt.uplink)
			}
			if conf.IsGateway || conf.IsDefaultGateway || !conf.EnableDAD {
				t.Errorf("isGateway %v isDefaultGateway %v enableDad %v, want false false true", conf.IsGateway, conf.IsDefaultGateway, conf.EnableDAD)
			}
		})
	}
}

func TestParseProviderErrors(t *testing.T) {
	const head = `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6"`
	const prov = `"provider":{"master":"eth1"}`
	tests := []struct {
		name     string
		json     string
		wantCode uint
		wantMsg  []string
	}{
		{"no master", head + `,"provider":{},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.master", "missing"}},
		{"empty master", head + `,"provider":{"master":""},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.master"}},
		{"master too long", head + `,"provider":{"master":"abcdefghijklmnop"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.master", "abcdefghijklmnop"}},
		{"master with slash", head + `,"provider":{"master":"a/b"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.master", "a/b"}},
		{"master a number", head + `,"provider":{"master":1},"ipam":{"type":"x"}}`, types.ErrDecodingFailure, []string{"provider.master", "string"}},
		{"provider a string", head + `,"provider":"eth1","ipam":{"type":"x"}}`, types.ErrDecodingFailure, []string{"provider", "object"}},
		{"master is the bridge", head + `,"bridge":"br22","provider":{"master":"br22"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.master", "br22", "bridge"}},
		{"master is the default bridge", head + `,"provider":{"master":"v6cni0"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.master", "v6cni0"}},
		{"vlanId 0", head + `,"provider":{"master":"eth1","vlanId":0},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.vlanId", "0"}},
		{"vlanId 4095", head + `,"provider":{"master":"eth1","vlanId":4095},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.vlanId", "4095"}},
		{"gateway IPv4", head + `,"provider":{"master":"eth1","gateway":"192.0.2.1"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.gateway", "192.0.2.1"}},
		{"gateway multicast", head + `,"provider":{"master":"eth1","gateway":"ff02::2"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.gateway", "ff02::2"}},
		{"gateway with zone", head + `,"provider":{"master":"eth1","gateway":"fe80::1%eth1"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.gateway"}},
		{"gateway garbage", head + `,"provider":{"master":"eth1","gateway":"router"},"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"provider.gateway", "router"}},
		{"optimisticDad a string", head + `,"provider":{"master":"eth1","optimisticDad":"yes"},"ipam":{"type":"x"}}`, types.ErrDecodingFailure, []string{"provider.optimisticDad", "boolean"}},
		{"with isGateway", head + `,"isGateway":true,` + prov + `,"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"isGateway", "provider"}},
		{"with isDefaultGateway", head + `,"isDefaultGateway":true,` + prov + `,"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"isDefaultGateway", "provider"}},
		{"with ipMasq", head + `,"ipMasq":true,` + prov + `,"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"ipMasq", "provider"}},
		{"with ipMasq6", head + `,"ipMasq6":true,` + prov + `,"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"ipMasq6", "provider"}},
		{"with vlan", head + `,"vlan":22,` + prov + `,"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"vlan", "provider.vlanId"}},
		{"with hairpinMode", head + `,"hairpinMode":true,` + prov + `,"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"hairpinMode", "provider"}},
		{"with enableDad false", head + `,"enableDad":false,` + prov + `,"ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"enableDad", "provider"}},
		{"slaac without eui64", head + `,"ipv6Mode":"slaac",` + prov + `,"ipam":{"type":"ipam-v6"}}`, types.ErrInvalidNetworkConfig, []string{"ipam.addressing", "slaac", "eui64"}},
		{"dhcpv6-stateless sequential", head + `,"ipv6Mode":"dhcpv6-stateless",` + prov + `,"ipam":{"type":"ipam-v6","addressing":"sequential"}}`, types.ErrInvalidNetworkConfig, []string{"ipam.addressing", `"sequential"`, "dhcpv6-stateless"}},
		{"slaac addressing not a string", head + `,"ipv6Mode":"slaac",` + prov + `,"ipam":{"type":"x","addressing":64}}`, types.ErrInvalidNetworkConfig, []string{"ipam.addressing", "64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := Parse([]byte(tt.json))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error code %d", conf, tt.wantCode)
			}
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("error %v (%T) is not a *types.Error", err, err)
			}
			if cniErr.Code != tt.wantCode {
				t.Errorf("code = %d, want %d (msg %q)", cniErr.Code, tt.wantCode, cniErr.Msg)
			}
			for _, want := range tt.wantMsg {
				if !strings.Contains(cniErr.Msg, want) {
					t.Errorf("message %q does not contain %q", cniErr.Msg, want)
				}
			}
		})
	}
}

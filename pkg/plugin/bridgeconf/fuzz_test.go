package bridgeconf

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParse checks that no input makes Parse panic, that every failure is a
// CNI error with code 6 or 7, and that every success is a config the plugin
// can use as is.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		``,
		`{}`,
		`null`,
		`{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipam":{"type":"ipam-v6"}}`,
		`{"cniVersion":"1.1.0","name":"n","bridge":"v6br0","mtu":9000,"isGateway":false,"isDefaultGateway":true,"ipam":{"type":"x"}}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"x"},"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"2001:db8::2/64","gateway":"2001:db8::1"}]}}`,
		`{"cniVersion":"0.4.0","name":"n","ipam":{"type":"x"},"prevResult":{"ips":[{"version":"6","address":"2001:db8::2/64"}]}}`,
		`{"cniVersion":"9.9.9","name":"n","ipam":{"type":"x"},"prevResult":{}}`,
		`{"name":"n","mtu":1e400,"ipam":{"type":"x"}}`,
		`{"name":"n","bridge":"\u0000","ipam":{"type":"x"}}`,
		`{"cniVersion":"1.1.0","name":"n","provider":{"master":"eth1","vlanId":22,"gateway":"2001:db8:22::1","optimisticDad":true},"ipam":{"type":"x"}}`,
		`{"cniVersion":"1.1.0","name":"n","ipv6Mode":"slaac","provider":{"master":"eth1"},"ipam":{"type":"x","addressing":"eui64"}}`,
		`{"cniVersion":"1.1.0","name":"n","ipv6Mode":"dhcpv6-stateless","provider":{"master":"eth1"},"ipam":{"type":"x","addressing":"stable"}}`,
		`{"cniVersion":"1.1.0","name":"n","isGateway":true,"provider":{"master":"eth1"},"ipam":{"type":"x"}}`,
		`{"cniVersion":"1.1.0","name":"n","ipMasq6":true,"hairpinMode":true,"vlan":3,"enableDad":false,"provider":{"master":"eth1"},"ipam":{"type":"x"}}`,
		`{"cniVersion":"1.1.0","name":"n","provider":{"master":"enp0s31f6abcd","vlanId":4094,"gateway":"fe80::1%x"},"ipam":{"type":"x"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := Parse(data)
		if err != nil {
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("error %v (%T) is not a *types.Error", err, err)
			}
			if cniErr.Code != types.ErrDecodingFailure && cniErr.Code != types.ErrInvalidNetworkConfig {
				t.Fatalf("code %d, want 6 or 7: %s", cniErr.Code, cniErr.Msg)
			}
			if conf != nil {
				t.Fatalf("conf %+v returned with error", conf)
			}
			return
		}
		if validIfName(conf.Bridge) != nil {
			t.Fatalf("accepted bad bridge %q", conf.Bridge)
		}
		if conf.MTU != 0 && (conf.MTU < MinMTU || conf.MTU > MaxMTU) {
			t.Fatalf("accepted mtu %d", conf.MTU)
		}
		if conf.IPAM.Type == "" || conf.Name == "" {
			t.Fatalf("accepted missing name or ipam.type: %+v", conf.PluginConf)
		}
		if conf.IsDefaultGateway && !conf.IsGateway {
			t.Fatal("isDefaultGateway without isGateway")
		}
		if p := conf.Provider; p != nil {
			if conf.IsGateway || conf.IsDefaultGateway || conf.IPMasq || conf.IPMasq6 || conf.VLAN != 0 || conf.HairpinMode || !conf.EnableDAD {
				t.Fatalf("provider accepted with a key it excludes: %+v", conf)
			}
			if validIfName(p.Master) != nil || validIfName(p.Uplink()) != nil || p.Master == conf.Bridge {
				t.Fatalf("provider accepted bad master %q (uplink %q)", p.Master, p.Uplink())
			}
			if p.VLANID != 0 && (p.VLANID < MinVLAN || p.VLANID > MaxVLAN) {
				t.Fatalf("provider accepted vlanId %d", p.VLANID)
			}
			if p.Gateway.IsValid() && (!p.Gateway.Is6() || p.Gateway.IsMulticast() || p.Gateway.Zone() != "") {
				t.Fatalf("provider accepted gateway %s", p.Gateway)
			}
		}
	})
}

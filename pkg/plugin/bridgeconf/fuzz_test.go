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
	})
}

package bridgeconf

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestParseDefaults(t *testing.T) {
	conf, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"v6net","type":"bridge-v6","ipam":{"type":"ipam-v6"}}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if conf.Bridge != DefaultBridge {
		t.Errorf("Bridge = %q, want %q", conf.Bridge, DefaultBridge)
	}
	if conf.MTU != 0 {
		t.Errorf("MTU = %d, want 0", conf.MTU)
	}
	if !conf.IsGateway {
		t.Error("IsGateway = false, want true by default")
	}
	if conf.IsDefaultGateway {
		t.Error("IsDefaultGateway = true, want false by default")
	}
	if conf.IPAM.Type != "ipam-v6" || conf.Name != "v6net" || conf.CNIVersion != "1.1.0" {
		t.Errorf("standard keys not kept: %+v", conf.PluginConf)
	}
	if conf.PrevResult != nil {
		t.Errorf("PrevResult = %v, want nil", conf.PrevResult)
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		json string
		want NetConf // only the plugin's own keys are compared
	}{
		{
			name: "all keys",
			json: `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","bridge":"v6br0","mtu":9000,"isGateway":true,"isDefaultGateway":true,"ipam":{"type":"ipam-v6"}}`,
			want: NetConf{Bridge: "v6br0", MTU: 9000, IsGateway: true, IsDefaultGateway: true},
		},
		{
			name: "isGateway false",
			json: `{"cniVersion":"1.0.0","name":"n","isGateway":false,"ipam":{"type":"x"}}`,
			want: NetConf{Bridge: DefaultBridge, IsGateway: false},
		},
		{
			name: "isDefaultGateway implies isGateway",
			json: `{"cniVersion":"1.0.0","name":"n","isGateway":false,"isDefaultGateway":true,"ipam":{"type":"x"}}`,
			want: NetConf{Bridge: DefaultBridge, IsGateway: true, IsDefaultGateway: true},
		},
		{
			name: "mtu bounds",
			json: `{"cniVersion":"1.0.0","name":"n","mtu":1280,"ipam":{"type":"x"}}`,
			want: NetConf{Bridge: DefaultBridge, MTU: 1280, IsGateway: true},
		},
		{
			name: "mtu max",
			json: `{"cniVersion":"1.0.0","name":"n","mtu":65535,"ipam":{"type":"x"}}`,
			want: NetConf{Bridge: DefaultBridge, MTU: 65535, IsGateway: true},
		},
		{
			name: "15-char bridge, runtimeConfig, args and unknown keys tolerated",
			json: `{"cniVersion":"1.1.0","name":"n","bridge":"abcdefghijklmno","runtimeConfig":{"ips":["2001:db8::5/64"]},"args":{"cni":{"ips":[]}},"future":1,"ipam":{"type":"x","ranges":[]}}`,
			want: NetConf{Bridge: "abcdefghijklmno", IsGateway: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := Parse([]byte(tt.json))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if conf.Bridge != tt.want.Bridge || conf.MTU != tt.want.MTU ||
				conf.IsGateway != tt.want.IsGateway || conf.IsDefaultGateway != tt.want.IsDefaultGateway {
				t.Errorf("got bridge=%q mtu=%d isGateway=%v isDefaultGateway=%v, want %+v",
					conf.Bridge, conf.MTU, conf.IsGateway, conf.IsDefaultGateway, tt.want)
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	conf, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.EnableDAD || conf.HairpinMode || conf.PromiscMode || conf.ForceAddress || conf.IPMasq || conf.IPMasq6 {
		t.Errorf("options default on: %+v", conf)
	}
	conf, err = Parse([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"x"},
		"enableDad":true,"promiscMode":true,"forceAddress":true,"ipMasq":true,"ipMasq6":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if !conf.EnableDAD || conf.HairpinMode || !conf.PromiscMode || !conf.ForceAddress || !conf.IPMasq || !conf.IPMasq6 {
		t.Errorf("options not read: %+v", conf)
	}
	conf, err = Parse([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"x"},"hairpinMode":true,"enableDad":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if !conf.HairpinMode || conf.EnableDAD {
		t.Errorf("hairpinMode not read: %+v", conf)
	}
}

func TestParsePrevResult(t *testing.T) {
	conf, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"x"},
		"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/run/netns/x"}],
		"ips":[{"address":"2001:db8::2/64","gateway":"2001:db8::1","interface":0}]}}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		t.Fatalf("convert prevResult: %v", err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "2001:db8::2/64" {
		t.Errorf("prevResult IPs = %v", res.IPs)
	}
}

func TestParseErrors(t *testing.T) {
	const ok = `"cniVersion":"1.1.0","name":"n","ipam":{"type":"x"}`
	tests := []struct {
		name     string
		json     string
		wantCode uint
		wantMsg  []string // all must appear in the message
	}{
		{"empty", ``, types.ErrDecodingFailure, []string{"not a JSON object"}},
		{"not an object", `[1,2]`, types.ErrDecodingFailure, []string{"not a JSON object"}},
		{"truncated", `{"name":"n"`, types.ErrDecodingFailure, []string{"decode network config"}},
		{"trailing garbage", `{"name":"n"} x`, types.ErrDecodingFailure, []string{"decode network config"}},
		{"missing name", `{"cniVersion":"1.1.0","ipam":{"type":"x"}}`, types.ErrInvalidNetworkConfig, []string{"name: missing"}},
		{"missing ipam", `{"cniVersion":"1.1.0","name":"n"}`, types.ErrInvalidNetworkConfig, []string{"ipam.type: missing"}},
		{"empty ipam type", `{"cniVersion":"1.1.0","name":"n","ipam":{}}`, types.ErrInvalidNetworkConfig, []string{"ipam.type: missing"}},
		{"ipam type is a path", `{"cniVersion":"1.1.0","name":"n","ipam":{"type":"../../bin/sh"}}`, types.ErrInvalidNetworkConfig, []string{"ipam.type", "../../bin/sh"}},
		{"ipam type wrong type", `{"cniVersion":"1.1.0","name":"n","ipam":{"type":7}}`, types.ErrDecodingFailure, []string{"ipam.type", "string", "number"}},
		{"bridge too long", `{` + ok + `,"bridge":"abcdefghijklmnop"}`, types.ErrInvalidNetworkConfig, []string{"bridge", "abcdefghijklmnop", "15"}},
		{"bridge empty", `{` + ok + `,"bridge":""}`, types.ErrInvalidNetworkConfig, []string{"bridge", "empty"}},
		{"bad ipv6Mode", `{` + ok + `,"ipv6Mode":"dhcpv6"}`, types.ErrInvalidNetworkConfig, []string{"ipv6Mode", `"dhcpv6"`, "slaac"}},
		{"ipv6Mode wrong type", `{` + ok + `,"ipv6Mode":1}`, types.ErrDecodingFailure, []string{"ipv6Mode", "string", "number"}},
		{"bridge with slash", `{` + ok + `,"bridge":"br/0"}`, types.ErrInvalidNetworkConfig, []string{"bridge", "br/0"}},
		{"bridge with space", `{` + ok + `,"bridge":"br 0"}`, types.ErrInvalidNetworkConfig, []string{"bridge", "br 0"}},
		{"bridge with colon", `{` + ok + `,"bridge":"br:0"}`, types.ErrInvalidNetworkConfig, []string{"bridge", "br:0"}},
		{"bridge dotdot", `{` + ok + `,"bridge":".."}`, types.ErrInvalidNetworkConfig, []string{"bridge", `".."`}},
		{"bridge not a string", `{` + ok + `,"bridge":5}`, types.ErrDecodingFailure, []string{"bridge", "string", "number"}},
		{"mtu too small", `{` + ok + `,"mtu":1279}`, types.ErrInvalidNetworkConfig, []string{"mtu", "1279"}},
		{"mtu negative", `{` + ok + `,"mtu":-1}`, types.ErrInvalidNetworkConfig, []string{"mtu", "-1"}},
		{"mtu too big", `{` + ok + `,"mtu":65536}`, types.ErrInvalidNetworkConfig, []string{"mtu", "65536"}},
		{"mtu a string", `{` + ok + `,"mtu":"9000"}`, types.ErrDecodingFailure, []string{"mtu", "number", "string"}},
		{"mtu fractional", `{` + ok + `,"mtu":1500.5}`, types.ErrDecodingFailure, []string{"mtu", "number"}},
		{"isGateway a string", `{` + ok + `,"isGateway":"yes"}`, types.ErrDecodingFailure, []string{"isGateway", "boolean", "string"}},
		{"isDefaultGateway a number", `{` + ok + `,"isDefaultGateway":1}`, types.ErrDecodingFailure, []string{"isDefaultGateway", "boolean", "number"}},
		{"enableDad a string", `{` + ok + `,"enableDad":"true"}`, types.ErrDecodingFailure, []string{"enableDad", "boolean", "string"}},
		{"hairpinMode a number", `{` + ok + `,"hairpinMode":1}`, types.ErrDecodingFailure, []string{"hairpinMode", "boolean", "number"}},
		{"promiscMode an object", `{` + ok + `,"promiscMode":{}}`, types.ErrDecodingFailure, []string{"promiscMode", "boolean", "object"}},
		{"forceAddress a string", `{` + ok + `,"forceAddress":"no"}`, types.ErrDecodingFailure, []string{"forceAddress", "boolean", "string"}},
		{"ipMasq a number", `{` + ok + `,"ipMasq":0}`, types.ErrDecodingFailure, []string{"ipMasq", "boolean", "number"}},
		{"ipMasq6 an array", `{` + ok + `,"ipMasq6":[true]}`, types.ErrDecodingFailure, []string{"ipMasq6", "boolean", "array"}},
		{"vlan too big", `{` + ok + `,"vlan":4095}`, types.ErrInvalidNetworkConfig, []string{"vlan", "4095", "1..4094"}},
		{"vlan negative", `{` + ok + `,"vlan":-1}`, types.ErrInvalidNetworkConfig, []string{"vlan", "-1"}},
		{"vlan a string", `{` + ok + `,"vlan":"100"}`, types.ErrDecodingFailure, []string{"vlan", "number", "string"}},
		{"vlan fractional", `{` + ok + `,"vlan":100.5}`, types.ErrDecodingFailure, []string{"vlan", "number"}},
		{"vlan with slaac", `{` + ok + `,"vlan":100,"ipv6Mode":"slaac"}`, types.ErrInvalidNetworkConfig, []string{"vlan", "100", "slaac"}},
		{"enableDad with hairpinMode", `{` + ok + `,"enableDad":true,"hairpinMode":true}`, types.ErrInvalidNetworkConfig, []string{"enableDad", "hairpinMode"}},
		{"duplicate bridge", `{` + ok + `,"bridge":"a","bridge":"b"}`, types.ErrDecodingFailure, []string{"bridge", "duplicate"}},
		{"bad prevResult", `{` + ok + `,"prevResult":{"ips":[{"address":"nope"}]}}`, types.ErrDecodingFailure, []string{"prevResult"}},
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

func TestParseIPv6Mode(t *testing.T) {
	for _, tc := range []struct {
		json               string
		mode               string
		selfConf, autoconf bool
	}{
		{``, IPv6ModeStatic, false, false},
		{`,"ipv6Mode":"static"`, IPv6ModeStatic, false, false},
		{`,"ipv6Mode":"slaac"`, IPv6ModeSLAAC, true, true},
		{`,"ipv6Mode":"dhcpv6-stateless"`, IPv6ModeDHCPv6Stateless, true, true},
		{`,"ipv6Mode":"dhcpv6-stateful"`, IPv6ModeDHCPv6Stateful, true, false},
	} {
		conf, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"x"}` + tc.json + `}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if conf.IPv6Mode != tc.mode || conf.SelfConfiguring() != tc.selfConf || conf.Autoconf() != tc.autoconf {
			t.Errorf("%s: mode %q self %v autoconf %v", tc.json, conf.IPv6Mode, conf.SelfConfiguring(), conf.Autoconf())
		}
	}
}

func TestParseVLAN(t *testing.T) {
	for _, tc := range []struct {
		json string
		want int
	}{{``, 0}, {`,"vlan":0`, 0}, {`,"vlan":1`, 1}, {`,"vlan":100`, 100}, {`,"vlan":4094`, 4094}} {
		conf, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"x"}` + tc.json + `}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if conf.VLAN != tc.want {
			t.Errorf("%s: VLAN = %d, want %d", tc.json, conf.VLAN, tc.want)
		}
	}
}

package ipamplugin

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// TestAttachment: the request tells ipamd what bridge-v6 does with the
// container (bridge, ipv6Mode, and the MAC bridge-v6 sets, by the same
// function), read from the config on the plugin side; nothing when ipamd
// does not need it.
func TestAttachment(t *testing.T) {
	const ipam = `"ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48"}]]}`
	const eui = `"ipam":{"type":"ipam-v6","addressing":"eui64","ranges":[[{"subnet":"2001:db8::/48"}]]}`
	derived := macaddr.Derive("n", "cid", "eth0").String()
	tests := []struct {
		name    string
		stdin   string
		cniArgs string
		want    *ipamapi.Attachment
		code    uint
		msg     []string
	}{
		{"other main plugin", `{"cniVersion":"1.1.0","name":"n","type":"ptp",` + ipam + `}`, "", nil, 0, nil},
		{"bridge-v6 static", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6",` + ipam + `}`, "", nil, 0, nil},
		{"bridge-v6 static named", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipv6Mode":"static",` + ipam + `}`, "", nil, 0, nil},
		{"bridge-v6 slaac, default bridge", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipv6Mode":"slaac",` + ipam + `}`, "",
			&ipamapi.Attachment{Bridge: "v6cni0", IPv6Mode: ipamapi.IPv6ModeSLAAC, MAC: derived}, 0, nil},
		{"bridge-v6 stateful, runtimeConfig MAC", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","bridge":"br7","ipv6Mode":"dhcpv6-stateful","runtimeConfig":{"mac":"02:00:00:00:00:07"},` + ipam + `}`, "",
			&ipamapi.Attachment{Bridge: "br7", IPv6Mode: ipamapi.IPv6ModeDHCPv6Stateful, MAC: "02:00:00:00:00:07"}, 0, nil},
		{"eui64 with another plugin, CNI_ARGS MAC", `{"cniVersion":"1.1.0","name":"n","type":"ptp",` + eui + `}`, "IgnoreUnknown=1;MAC=0a:bb:cc:dd:ee:ff",
			&ipamapi.Attachment{MAC: "0a:bb:cc:dd:ee:ff"}, 0, nil},
		// A provider network's routers serve RAs and DHCPv6: ipamd is
		// told the MAC only (no bridge, no mode), and serves nothing.
		{"bridge-v6 provider slaac", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","bridge":"br22","ipv6Mode":"slaac","provider":{"master":"eth1"},` + eui + `}`, "",
			&ipamapi.Attachment{MAC: derived}, 0, nil},
		{"bridge-v6 provider stateful", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipv6Mode":"dhcpv6-stateful","provider":{"master":"eth1"},` + ipam + `}`, "",
			&ipamapi.Attachment{MAC: derived}, 0, nil},
		{"bridge-v6 provider static", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","provider":{"master":"eth1"},` + ipam + `}`, "", nil, 0, nil},
		{"bridge-v6 unknown mode", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipv6Mode":"magic",` + ipam + `}`, "", nil, types.ErrInvalidNetworkConfig, []string{"ipv6Mode", "magic"}},
		{"bridge-v6 mode a number", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipv6Mode":6,` + ipam + `}`, "", nil, types.ErrDecodingFailure, []string{"ipv6Mode"}},
		{"bad MAC", `{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipv6Mode":"slaac","runtimeConfig":{"mac":"ff:ff:ff:ff:ff:ff"},` + ipam + `}`, "", nil, types.ErrInvalidNetworkConfig, []string{"runtimeConfig.mac"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := &skel.CmdArgs{ContainerID: "cid", IfName: "eth0", Args: tt.cniArgs, StdinData: []byte(tt.stdin)}
			conf, err := ipamconf.Parse(args.StdinData)
			if err != nil {
				t.Fatalf("ipamconf.Parse: %v", err)
			}
			got, err := Attachment(conf, args)
			if tt.code != 0 {
				var ce *types.Error
				if !errors.As(err, &ce) || ce.Code != tt.code {
					t.Fatalf("error %v, want CNI error %d", err, tt.code)
				}
				for _, w := range tt.msg {
					if !strings.Contains(ce.Msg, w) {
						t.Errorf("message %q does not name %q", ce.Msg, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Errorf("Attachment = %+v, want %+v", got, tt.want)
			}
		})
	}
}

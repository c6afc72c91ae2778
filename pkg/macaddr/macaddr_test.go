package macaddr

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestDerive(t *testing.T) {
	a := Derive("net", "cid", "eth0")
	if a.String() != Derive("net", "cid", "eth0").String() {
		t.Fatal("Derive is not deterministic")
	}
	if len(a) != 6 || a[0]&0x03 != 0x02 {
		t.Fatalf("Derive = %s, want a locally administered unicast 6-byte MAC", a)
	}
	for _, other := range []net.HardwareAddr{Derive("net2", "cid", "eth0"), Derive("net", "cid2", "eth0"), Derive("net", "cid", "eth1")} {
		if other.String() == a.String() {
			t.Fatal("Derive ignores part of its input")
		}
	}
	// Pinned: an IPAM built from another commit must compute the same MAC.
	if got, want := Derive("v6net", "c0ffee", "eth0").String(), "e6:17:a2:91:ed:6b"; got != want {
		t.Errorf("Derive(v6net, c0ffee, eth0) = %s, want %s (changing it breaks eui64 addresses of running containers)", got, want)
	}
}

func TestForAttachment(t *testing.T) {
	derived := Derive("v6net", "cid", "eth0").String()
	tests := []struct {
		name    string
		stdin   string
		cniArgs string
		want    string // MAC, or the error text when code != 0
		code    uint
	}{
		{name: "nothing asked: derived", stdin: `{"name":"v6net"}`, want: derived},
		{name: "empty stdin", stdin: ``, want: derived},
		{name: "runtime k8s args only", stdin: `{}`, cniArgs: "IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default", want: derived},
		{name: "capability", stdin: `{"runtimeConfig":{"mac":"02:00:00:00:00:01"}}`, want: "02:00:00:00:00:01"},
		{name: "capability wins over args and CNI_ARGS", stdin: `{"runtimeConfig":{"mac":"02:00:00:00:00:01"},"args":{"cni":{"mac":"02:00:00:00:00:02"}}}`, cniArgs: "MAC=02:00:00:00:00:03", want: "02:00:00:00:00:01"},
		{name: "args.cni.mac wins over CNI_ARGS", stdin: `{"args":{"cni":{"mac":"02:00:00:00:00:02"}}}`, cniArgs: "MAC=02:00:00:00:00:03", want: "02:00:00:00:00:02"},
		{name: "CNI_ARGS", stdin: `{}`, cniArgs: "IgnoreUnknown=1;MAC=02:00:00:00:00:03;K8S_POD_NAME=x", want: "02:00:00:00:00:03"},
		{name: "CNI_ARGS dashes and upper case", cniArgs: "MAC=0A-BB-CC-DD-EE-FF", want: "0a:bb:cc:dd:ee:ff"},
		{name: "universal MAC accepted", cniArgs: "MAC=00:16:3e:00:00:01", want: "00:16:3e:00:00:01"},
		{name: "bad capability", stdin: `{"runtimeConfig":{"mac":"zz:00:00:00:00:01"}}`, code: 7, want: `runtimeConfig.mac: "zz:00:00:00:00:01"`},
		{name: "bad args", stdin: `{"args":{"cni":{"mac":"02:00:00:00:01"}}}`, code: 7, want: `args.cni.mac: "02:00:00:00:01"`},
		{name: "bad CNI_ARGS", cniArgs: "MAC=nope", code: 7, want: `CNI_ARGS MAC: "nope"`},
		{name: "empty CNI_ARGS MAC", cniArgs: "MAC=", code: 7, want: `CNI_ARGS MAC: ""`},
		{name: "EUI-64 MAC refused", cniArgs: "MAC=02:00:00:00:00:00:00:01", code: 7, want: "not a 6-byte"},
		{name: "multicast", stdin: `{"runtimeConfig":{"mac":"03:00:00:00:00:01"}}`, code: 7, want: `runtimeConfig.mac: "03:00:00:00:00:01" is a multicast`},
		{name: "broadcast", cniArgs: "MAC=ff:ff:ff:ff:ff:ff", code: 7, want: "multicast"},
		{name: "zero", cniArgs: "MAC=00:00:00:00:00:00", code: 7, want: "all-zero"},
		{name: "mac of the wrong JSON type", stdin: `{"runtimeConfig":{"mac":5}}`, code: 6, want: "decode"},
		{name: "not JSON", stdin: `nope`, code: 6, want: "decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mac, err := ForAttachment([]byte(tc.stdin), tc.cniArgs, "v6net", "cid", "eth0")
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if mac.String() != tc.want {
					t.Fatalf("mac = %s, want %s", mac, tc.want)
				}
				return
			}
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("err = %v (%T), want a *types.Error", err, err)
			}
			if cniErr.Code != tc.code || !strings.Contains(cniErr.Msg, tc.want) {
				t.Fatalf("err = code %d %q, want code %d containing %q", cniErr.Code, cniErr.Msg, tc.code, tc.want)
			}
		})
	}
}

func TestEUI64(t *testing.T) {
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		prefix, mac, want string
	}{
		// OpenStack's SLAAC addresses (the DESIGN.md example).
		{"2001:db8:cafe:3::/64", "fa:16:3e:79:5a:cc", "2001:db8:cafe:3:f816:3eff:fe79:5acc"},
		// RFC 4291 appendix A: a universal MAC gets the U/L bit set.
		{"fe80::/64", "00:00:5e:00:53:01", "fe80::200:5eff:fe00:5301"},
		{"2001:db8::/64", "02:00:00:00:00:01", "2001:db8::ff:fe00:1"},
		// Host bits of the prefix are dropped; shorter prefixes keep their bits.
		{"2001:db8:1:2:3:4:5:6/64", "00:11:22:33:44:55", "2001:db8:1:2:211:22ff:fe33:4455"},
		{"2001:db8::/48", "00:11:22:33:44:55", "2001:db8::211:22ff:fe33:4455"},
		// Invalid: zero Addr.
		{"2001:db8::/80", "00:11:22:33:44:55", "invalid IP"},
		{"10.0.0.0/8", "00:11:22:33:44:55", "invalid IP"},
		{"::ffff:10.0.0.0/96", "00:11:22:33:44:55", "invalid IP"},
	}
	for _, tc := range tests {
		got := EUI64(netip.MustParsePrefix(tc.prefix), mac(tc.mac))
		if got.String() != tc.want {
			t.Errorf("EUI64(%s, %s) = %s, want %s", tc.prefix, tc.mac, got, tc.want)
		}
	}
	if got := EUI64(netip.MustParsePrefix("2001:db8::/64"), net.HardwareAddr{1, 2, 3}); got.IsValid() {
		t.Errorf("EUI64 of a 3-byte MAC = %s, want invalid", got)
	}
	if got := EUI64(netip.Prefix{}, mac("00:11:22:33:44:55")); got.IsValid() {
		t.Errorf("EUI64 of the zero prefix = %s, want invalid", got)
	}
}

package ipamconf

import (
	"fmt"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name, conf, cniArgs string
		want                string // fmt of IPs, or the error
		pod                 string
	}{
		{"none", `{}`, "", "[]", "/"},
		{"ips capability wins", `{"runtimeConfig":{"ips":["2001:db8::5/64","10.0.0.5/24"]},"args":{"cni":{"ips":["2001:db8::6"]}}}`, "IP=2001:db8::7", "[2001:db8::5 10.0.0.5]", "/"},
		{"args.cni.ips", `{"args":{"cni":{"ips":["2001:db8::6"]}}}`, "IP=2001:db8::7", "[2001:db8::6]", "/"},
		{"CNI_ARGS IP and pod", `{}`, "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=2001:db8::7,10.1.1.1", "[2001:db8::7 10.1.1.1]", "default/web-0"},
		{"bad capability address", `{"runtimeConfig":{"ips":["nope"]}}`, "", `runtimeConfig.ips[0]: "nope" is not an IP address`, ""},
		{"two of one family", `{"args":{"cni":{"ips":["2001:db8::1","2001:db8::2"]}}}`, "", "args.cni.ips[1]: 2001:db8::2: one requested address per family", ""},
		{"bad CNI_ARGS", `{}`, "IgnoreUnknown=1;junk", `CNI_ARGS: "junk" is not KEY=VALUE`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseArgs([]byte(tc.conf), tc.cniArgs)
			if err != nil {
				if err.Error() != tc.want {
					t.Errorf("error %q, want %q", err, tc.want)
				}
				return
			}
			if got := fmt.Sprint(a.IPs); got != tc.want {
				t.Errorf("IPs = %s, want %s", got, tc.want)
			}
			if got := a.PodNamespace + "/" + a.PodName; got != tc.pod {
				t.Errorf("pod = %s, want %s", got, tc.pod)
			}
		})
	}
}

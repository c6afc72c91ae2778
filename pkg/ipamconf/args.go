package ipamconf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Args is what a runtime says about one attachment besides the CNI_*
// basics: requested addresses and the pod it belongs to.
type Args struct {
	// IPs are the addresses asked for, first found of: the "ips" capability
	// (runtimeConfig.ips), args.cni.ips, CNI_ARGS IP=.
	IPs []netip.Addr
	// PodNamespace and PodName come from CNI_ARGS K8S_POD_NAMESPACE and
	// K8S_POD_NAME.
	PodNamespace, PodName string
}

type rawArgs struct {
	RuntimeConfig struct {
		IPs []string `json:"ips"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// ParseArgs reads the runtime's per-attachment arguments from the network
// configuration and CNI_ARGS. A malformed address is code 7 naming where it
// came from.
func ParseArgs(data []byte, cniArgs string) (Args, error) {
	var a Args
	var raw rawArgs
	if err := json.Unmarshal(data, &raw); err != nil {
		return a, decodeError(err)
	}
	kv, err := SplitCNIArgs(cniArgs)
	if err != nil {
		return a, err
	}
	a.PodNamespace, a.PodName = kv["K8S_POD_NAMESPACE"], kv["K8S_POD_NAME"]

	var src string
	var list []string
	switch {
	case len(raw.RuntimeConfig.IPs) > 0:
		src, list = "runtimeConfig.ips", raw.RuntimeConfig.IPs
	case len(raw.Args.CNI.IPs) > 0:
		src, list = "args.cni.ips", raw.Args.CNI.IPs
	case kv["IP"] != "":
		src, list = "CNI_ARGS IP", strings.Split(kv["IP"], ",")
	}
	seen := map[bool]bool{}
	for i, s := range list {
		s = strings.TrimSpace(s)
		addr, err := netip.ParseAddr(s)
		if err != nil {
			// The ips capability carries CIDR notation.
			p, perr := netip.ParsePrefix(s)
			if perr != nil {
				return a, invalid("%s[%d]: %q is not an IP address", src, i, s)
			}
			addr = p.Addr()
		}
		if addr.Zone() != "" || addr.Is4In6() {
			return a, invalid("%s[%d]: %q: use a plain IPv4 or IPv6 address", src, i, s)
		}
		if seen[addr.Is4()] {
			return a, invalid("%s[%d]: %s: one requested address per family", src, i, addr)
		}
		seen[addr.Is4()] = true
		a.IPs = append(a.IPs, addr)
	}
	return a, nil
}

// SplitCNIArgs splits CNI_ARGS ("K=V;K2=V2") into its pairs.
func SplitCNIArgs(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", pair), "")
		}
		out[k] = v
	}
	return out, nil
}

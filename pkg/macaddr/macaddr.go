// Package macaddr says which MAC address the container end of a bridge-v6
// attachment has, and derives modified EUI-64 interface identifiers from it.
//
// It is pure (no netlink, no I/O): bridge-v6 uses it to set the MAC, and an
// IPAM that hands out `eui64` addresses uses it, with the same CNI stdin and
// CNI_ARGS, to compute the same MAC without asking the kernel. Both must
// agree, so the rules live here and nowhere else.
package macaddr

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Derive is the MAC of the container end of the attachment (network,
// containerID, ifname) when nothing asks for another: the first 6 bytes of
// sha256(network + containerID + ifname), made locally administered
// unicast. A stable MAC keeps EUI-64 addresses and neighbour caches stable
// across re-ADDs of the same container.
func Derive(network, containerID, ifname string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(network + containerID + ifname))
	mac := make(net.HardwareAddr, 6)
	copy(mac, sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// macSources is the part of a CNI config that can ask for a MAC: the `mac`
// capability (runtimeConfig.mac) and the `args.cni.mac` convention.
type macSources struct {
	RuntimeConfig struct {
		MAC *string `json:"mac"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			MAC *string `json:"mac"`
		} `json:"cni"`
	} `json:"args"`
}

// ForAttachment returns the MAC the container interface of the attachment
// (network, containerID, ifname) gets, in this order: the `mac` capability
// (runtimeConfig.mac in stdin), args.cni.mac in stdin, `MAC=` in cniArgs
// (the CNI_ARGS environment variable), else Derive(network, containerID,
// ifname).
//
// A requested MAC that is not a 6-byte Ethernet address, is multicast
// (which includes broadcast) or is all zeros is a *types.Error with code 7
// (invalid network config) naming the field and the value. Stdin that is
// not a JSON object is code 6. Other keys of stdin and other CNI_ARGS pairs
// (IgnoreUnknown, K8S_POD_NAME…) are not looked at.
func ForAttachment(stdin []byte, cniArgs, network, containerID, ifname string) (net.HardwareAddr, error) {
	var src macSources
	if len(bytes.TrimSpace(stdin)) > 0 {
		if err := json.Unmarshal(stdin, &src); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("decode network config for the container MAC: %v", err), "")
		}
	}
	switch {
	case src.RuntimeConfig.MAC != nil:
		return parse("runtimeConfig.mac", *src.RuntimeConfig.MAC)
	case src.Args.CNI.MAC != nil:
		return parse("args.cni.mac", *src.Args.CNI.MAC)
	}
	if v, ok := cniArg(cniArgs, "MAC"); ok {
		return parse("CNI_ARGS MAC", v)
	}
	return Derive(network, containerID, ifname), nil
}

// cniArg returns the value of key in CNI_ARGS ("K1=V1;K2=V2"); the last
// occurrence wins, as in libcni's LoadArgs.
func cniArg(cniArgs, key string) (string, bool) {
	var (
		val   string
		found bool
	)
	for pair := range strings.SplitSeq(cniArgs, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if ok && k == key {
			val, found = v, true
		}
	}
	return val, found
}

// parse validates a requested MAC; field names where it came from.
func parse(field, s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("%s: %q is not a 6-byte Ethernet MAC address", field, s), "")
	}
	if mac[0]&0x01 != 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("%s: %q is a multicast MAC address, an interface needs a unicast one", field, s), "")
	}
	if bytes.Equal(mac, make([]byte, 6)) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("%s: %q is the all-zero MAC address", field, s), "")
	}
	return mac, nil
}

// EUI64 returns the address made of the first 64 bits of prefix and the
// modified EUI-64 interface identifier of mac (RFC 4291 appendix A: the
// universal/local bit of the first byte flipped, ff:fe inserted in the
// middle): 2001:db8::/64 and fa:16:3e:79:5a:cc give
// 2001:db8::f816:3eff:fe79:5acc.
//
// It returns the zero Addr when prefix is not an IPv6 prefix of at most 64
// bits or mac is not 6 bytes long.
func EUI64(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	if !prefix.IsValid() || !prefix.Addr().Is6() || prefix.Addr().Is4In6() || prefix.Bits() > 64 || len(mac) != 6 {
		return netip.Addr{}
	}
	a := prefix.Masked().Addr().As16()
	a[8] = mac[0] ^ 0x02
	a[9], a[10] = mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

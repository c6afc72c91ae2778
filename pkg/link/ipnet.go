package link

import (
	"net"
	"net/netip"
)

// IPNet converts a prefix to the form netlink and CNI results carry (an
// IPv4 prefix in 4 bytes): the reverse of PrefixFromIPNet.
func IPNet(p netip.Prefix) *net.IPNet { return ipNet(p) }

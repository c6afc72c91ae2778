package ipamserver

import (
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// cniResult renders an assignment as the CNI result of ADD: its addresses
// with their gateways, its routes and the network's DNS.
func cniResult(a *allocator.Assignment, conf *ipamconf.NetConf) *current.Result {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: conf.IPAM.DNS}
	if len(a.IPs) > 0 {
		r.IPs = make([]*current.IPConfig, 0, len(a.IPs))
	}
	for _, ip := range a.IPs {
		r.IPs = append(r.IPs, &current.IPConfig{Address: ipNet(ip.Address), Gateway: ip.Gateway.AsSlice()})
	}
	for _, rt := range a.Routes {
		route := &types.Route{Dst: ipNet(rt.Dst)}
		if rt.GW.IsValid() {
			route.GW = rt.GW.AsSlice()
		}
		r.Routes = append(r.Routes, route)
	}
	return r
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

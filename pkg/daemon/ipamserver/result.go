package ipamserver

import (
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
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

// checkResult renders a handle as CHECK's answer: its current addresses in
// the record's order, then its deprecated ones still valid at now (design
// pd-ha-renumbering §3.5: expected present until ValidUntil, absent
// after). Current first keeps the rule by which a CNI route without a
// gateway goes via the first address's gateway of its family.
func checkResult(h *store.Handle, now time.Time) *ipamapi.CheckResult {
	r := &ipamapi.CheckResult{}
	if h == nil {
		return r
	}
	var deprecated []ipamapi.CheckIP
	for _, ip := range h.IPs {
		c := checkIP(ip)
		if !c.Deprecated {
			r.IPs = append(r.IPs, c)
		} else if c.ValidUntil.IsZero() || now.Before(c.ValidUntil) {
			deprecated = append(deprecated, c)
		}
	}
	r.IPs = append(r.IPs, deprecated...)
	return r
}

// checkIP is one address of a handle for CHECK, with its renumbering
// state: a deprecated address is expected in the container until
// ValidUntil, its successor (Replaces) beside it.
func checkIP(ip store.IP) ipamapi.CheckIP {
	return ipamapi.CheckIP{Address: ip.Address, Gateway: ip.Gateway, Deprecated: ip.Deprecated, ValidUntil: ip.ValidUntil, Replaces: ip.Replaces}
}

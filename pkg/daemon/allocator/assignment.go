package allocator

import (
	"net/netip"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// Assignment is the answer to an ADD: the attachment's addresses and the
// routes the network configures, resolved to the attachment's gateways.
// The caller renders it (ipamd's server: a CNI result, with the network's
// DNS).
type Assignment struct {
	ID store.AttachmentID
	// IPs has one address per range set of the network, in range order.
	IPs []Address
	// Routes are the network's routes, each with its next hop.
	Routes []Route
}

// Address is one assigned address and where it lives.
type Address struct {
	// Address is the address with its block's prefix length.
	Address netip.Prefix
	// Gateway is the gateway of its block (the bridge's address there).
	Gateway netip.Addr
	// Block is the node's block the address is in.
	Block netip.Prefix
}

// Route is one configured route of the attachment.
type Route struct {
	Dst netip.Prefix
	// GW is the route's gateway: the configured one, else the block gateway
	// of the destination's family; invalid when the attachment has no
	// address of that family.
	GW netip.Addr
}

// assignment is the Assignment of a handle: its addresses and the
// network's routes, a route without gw going via the block gateway of its
// family (the first address of that family).
func assignment(h *store.Handle, conf *ipamconf.NetConf) *Assignment {
	a := &Assignment{ID: h.AttachmentID, IPs: make([]Address, 0, len(h.IPs))}
	var gw4, gw6 netip.Addr
	var seen4, seen6 bool
	for _, ip := range h.IPs {
		if ip.Deprecated {
			// Being renumbered away from: the container keeps it until
			// its valid end, but a repeated ADD answers the successor.
			continue
		}
		a.IPs = append(a.IPs, Address{Address: ip.Address, Gateway: ip.Gateway, Block: ip.Block})
		switch is4 := ip.Address.Addr().Is4(); {
		case is4 && !seen4:
			gw4, seen4 = ip.Gateway, true
		case !is4 && !seen6:
			gw6, seen6 = ip.Gateway, true
		}
	}
	if len(conf.IPAM.Routes) > 0 {
		a.Routes = make([]Route, 0, len(conf.IPAM.Routes))
	}
	for _, rt := range conf.IPAM.Routes {
		via := rt.GW
		if !via.IsValid() {
			if rt.Dst.Addr().Is4() {
				via = gw4
			} else {
				via = gw6
			}
		}
		a.Routes = append(a.Routes, Route{Dst: rt.Dst, GW: via})
	}
	return a
}

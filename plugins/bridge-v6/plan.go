package main

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipmath"
	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/macaddr"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
)

// attachment names what bridge-v6 makes for one (container, ifname): ADD
// creates these, DEL removes them and CHECK looks for them. Every name is
// deterministic, so DEL finds them even when the netns is gone.
type attachment struct {
	netns    string           // CNI_NETNS
	ifName   string           // the container end, CNI_IFNAME
	hostVeth string           // the host end (link.HostVethName)
	hostMAC  net.HardwareAddr // the host end's MAC (link.HostVethMAC)
	// containerMAC is set by ADD, and by DEL with macspoofchk
	// (deriveMAC); CHECK takes prevResult's.
	containerMAC net.HardwareAddr
	bridge       string
	vlan         int
	// vlanIf is the VLAN interface of the bridge that holds the gateways
	// (link.VLANIfName), "" when they are on the bridge itself.
	vlanIf string
	// uplink is the provider network's uplink on the bridge, "" for a
	// routed bridge.
	uplink string
}

// newAttachment computes the names of the attachment of args.
func newAttachment(conf *bridgeconf.NetConf, args *skel.CmdArgs) *attachment {
	a := &attachment{
		netns:    args.Netns,
		ifName:   args.IfName,
		hostVeth: link.HostVethName(args.ContainerID, args.IfName),
		hostMAC:  link.HostVethMAC(args.ContainerID, args.IfName),
		bridge:   conf.Bridge,
		vlan:     conf.VLAN,
	}
	if vlanGateway(conf) {
		a.vlanIf = link.VLANIfName(conf.Bridge, conf.VLAN)
	}
	if conf.Provider != nil {
		a.uplink = conf.Provider.Uplink()
	}
	return a
}

// deriveMAC sets the container end's MAC: the `mac` capability,
// args.cni.mac or CNI_ARGS MAC=, else derived, the same rule an eui64 IPAM
// applies to the same input.
func (a *attachment) deriveMAC(conf *bridgeconf.NetConf, args *skel.CmdArgs) error {
	mac, err := macaddr.ForAttachment(args.StdinData, args.Args, conf.Name, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	a.containerMAC = mac
	return nil
}

// vlanGateway reports whether the gateways of the network live on a VLAN
// interface of the bridge (link.VLANIfName) rather than on the bridge:
// with a VLAN other than the bridge's default PVID, of which the bridge
// itself is the untagged member (the gateways of VLAN 1 are on the bridge).
func vlanGateway(conf *bridgeconf.NetConf) bool {
	return conf.VLAN != 0 && conf.VLAN != link.DefaultPVID
}

// masqIface is the interface the containers' routed traffic enters the
// host by: their traffic leaving by another one is masqueraded.
func (a *attachment) masqIface() string {
	if a.vlanIf != "" {
		return a.vlanIf
	}
	return a.bridge
}

// plan is what the kernel must be told for one attachment, derived from the
// IPAM result (ADD) or prevResult (CHECK) and the config.
type plan struct {
	addrs      []netip.Prefix // container addresses the plugin adds, with the block prefix length
	awaitAddrs []netip.Addr   // IPv6 addresses the container configures itself (self-configuring ipv6Mode)
	// viaRouter are IPv6 routes without a gateway on a provider network
	// whose router is learned from RAs: added via it once it is known.
	viaRouter []netip.Prefix
	// learnRouter: the IPv6 default router comes from RAs (a provider
	// network without provider.gateway): ADD waits for it.
	learnRouter  bool
	allAddrs     []netip.Prefix   // addrs and the awaited ones
	gatewayAddrs []netip.Prefix   // bridge addresses: gateway with the block prefix length
	routes       []link.Route     // container routes, gateways resolved
	resultRoutes []*types.Route   // the same routes for the CNI result
	mac          net.HardwareAddr // CHECK only: the container MAC
	has4         bool
	// raDNS is what the upstream router's RAs said of DNS (a provider
	// network whose container accepts RAs), merged into the result.
	raDNS link.RADNS
}

// planAttachment turns the IPAM result into addresses and routes. A missing
// gateway (when the bridge is the gateway) is the first host address of the
// block, as the reference bridge plugin does; it is written back into the
// result. A route without a gateway goes via the gateway of its family, or
// on-link when there is none; isDefaultGateway adds a default route per
// family unless IPAM already gave one.
func planAttachment(conf *bridgeconf.NetConf, result *current.Result) (*plan, error) {
	if len(result.IPs) == 0 {
		return nil, fmt.Errorf("IPAM plugin %s returned no IP addresses", conf.IPAM.Type)
	}
	p := &plan{}
	for _, ip := range result.IPs {
		addr, ok := link.PrefixFromIPNet(&ip.Address)
		if !ok {
			return nil, fmt.Errorf("IPAM plugin %s returned bad address %q", conf.IPAM.Type, ip.Address.String())
		}
		if conf.Provider != nil && addr.Addr().Is6() {
			// The whole segment is on-link, whatever the size of
			// the IPAM block the address came from.
			addr = onLink(conf, addr)
			ip.Address = *link.IPNet(addr)
			// The upstream router is the gateway, whatever IPAM
			// thinks its block's is: the configured one, or none
			// (learned from the RAs).
			ip.Gateway = nil
			if gw := conf.Provider.Gateway; gw.IsValid() {
				ip.Gateway = gw.AsSlice()
			}
		}
		gw := link.AddrFromIP(ip.Gateway)
		if !gw.IsValid() && conf.IsGateway {
			gw = ipmath.Gateway(addr)
			if !addr.Contains(gw) || gw == addr.Addr() {
				return nil, fmt.Errorf("address %s: block too small for a gateway", addr)
			}
			ip.Gateway = gw.AsSlice()
		}
		if gw.IsValid() && gw == addr.Addr() {
			return nil, fmt.Errorf("IPAM plugin %s returned gateway %s equal to the container address", conf.IPAM.Type, gw)
		}
		p.addAddr(conf, addr)
		if gw.IsValid() {
			p.gatewayAddrs = append(p.gatewayAddrs, netip.PrefixFrom(gw, addr.Bits()))
		}
		p.has4 = p.has4 || addr.Addr().Is4()
	}

	gateways := familyGateways(result.IPs)
	p.learnRouter = conf.Provider != nil && !conf.Provider.Gateway.IsValid()
	for _, r := range result.Routes {
		route, err := gateways.resolve(r)
		if err != nil {
			return nil, err
		}
		if p.learnRouter && route.Dst.Addr().Is6() && !route.GW.IsValid() {
			p.viaRouter = append(p.viaRouter, route.Dst)
			p.resultRoutes = append(p.resultRoutes, &types.Route{Dst: *link.IPNet(route.Dst)})
			continue
		}
		p.addRoute(route)
	}
	if conf.Provider != nil {
		// The default route is the upstream router: configured, or
		// learned from its RAs.
		if gw := conf.Provider.Gateway; gw.IsValid() {
			if dst := netip.PrefixFrom(netip.IPv6Unspecified(), 0); !p.hasRouteTo(dst) {
				p.addRoute(link.Route{Dst: dst, GW: gw})
			}
		}
		return p, nil
	}
	if conf.SelfConfiguring() {
		// The IPv6 default route comes from the router advertisements
		// (router lifetime, via the bridge's link-local address): one
		// added here would duplicate it and outlive a router that stops.
		delete(gateways, 6)
	}
	if conf.IsDefaultGateway {
		// IPv6 first, in a fixed order: results must not depend on map order.
		for _, dst := range []netip.Prefix{
			netip.PrefixFrom(netip.IPv6Unspecified(), 0),
			netip.PrefixFrom(netip.IPv4Unspecified(), 0),
		} {
			if gw := gateways.via(dst); gw.IsValid() && !p.hasRouteTo(dst) {
				p.addRoute(link.Route{Dst: dst, GW: gw})
			}
		}
	}
	return p, nil
}

// expectedState is what CHECK looks for, from prevResult: the container
// interface (by name and sandbox), its MAC, the IPs assigned to it, the
// routes (gateways resolved as ADD did) and the gateway addresses.
func expectedState(conf *bridgeconf.NetConf, prev *current.Result, att *attachment) (*plan, error) {
	idx, err := prevInterface(prev, att)
	if err != nil {
		return nil, err
	}
	p := &plan{}
	if s := prev.Interfaces[idx].Mac; s != "" {
		mac, err := net.ParseMAC(s)
		if err != nil {
			return nil, fmt.Errorf("prevResult interface %s: bad mac %q: %w", att.ifName, s, err)
		}
		p.mac = mac
	}
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != idx {
			continue
		}
		addr, ok := link.PrefixFromIPNet(&ip.Address)
		if !ok {
			return nil, fmt.Errorf("prevResult: bad address %q", ip.Address.String())
		}
		// ipamd's record (withRecordedIPs) has the block's length.
		addr = onLink(conf, addr)
		p.addAddr(conf, addr)
		if gw := link.AddrFromIP(ip.Gateway); gw.IsValid() {
			p.gatewayAddrs = append(p.gatewayAddrs, netip.PrefixFrom(gw, addr.Bits()))
		}
	}
	gateways := familyGateways(prev.IPs)
	learned := conf.Provider != nil && !conf.Provider.Gateway.IsValid()
	for _, r := range prev.Routes {
		route, err := gateways.resolve(r)
		if err != nil {
			return nil, fmt.Errorf("prevResult: %w", err)
		}
		if learned && route.Dst.Addr().Is6() && !route.GW.IsValid() {
			continue // via a router learned from RAs, which may change
		}
		p.routes = append(p.routes, route)
	}
	return p, nil
}

// prevInterface is the index of the attachment's container interface in
// prevResult (by name and sandbox).
func prevInterface(prev *current.Result, att *attachment) (int, error) {
	for i, iface := range prev.Interfaces {
		if iface.Name == att.ifName && (iface.Sandbox == "" || iface.Sandbox == att.netns) {
			return i, nil
		}
	}
	return -1, fmt.Errorf("prevResult has no interface %s in netns %s", att.ifName, att.netns)
}

// withRecordedIPs returns prevResult with the container interface's IPs
// replaced by those of ipamd's record (design pd-ha-renumbering §3.5): a
// renumbered attachment holds its new address, and its old one until that
// one's valid end, whichever addresses its prevResult names. The record
// lists the current addresses first, so a route without a gateway still
// resolves to the first current gateway of its family; a route whose
// gateway was an old address's moves to the gateway of the address that
// replaced it, as the renumbering moved it in the container. IPs of other
// interfaces (later plugins') are kept. With no record (another IPAM
// type, an older ipamd) prevResult is returned unchanged.
func withRecordedIPs(prev *current.Result, att *attachment, record *ipamapi.CheckResult) (*current.Result, error) {
	if record == nil || len(record.IPs) == 0 {
		return prev, nil
	}
	idx, err := prevInterface(prev, att)
	if err != nil {
		return nil, err
	}
	ours := make([]*current.IPConfig, 0, len(record.IPs))
	for _, ip := range record.IPs {
		if !ip.Address.IsValid() {
			return nil, fmt.Errorf("ipamd's record of %s: an address is missing", att.ifName)
		}
		c := &current.IPConfig{Interface: current.Int(idx), Address: *link.IPNet(ip.Address)}
		if ip.Gateway.IsValid() {
			c.Gateway = ip.Gateway.AsSlice()
		}
		ours = append(ours, c)
	}
	// Gateways that moved: a prevResult address's gateway → its
	// successor's, as the renumbering moved the container's routes.
	mine := map[netip.Addr]bool{}
	for _, ip := range prev.IPs {
		if ip.Interface != nil && *ip.Interface == idx {
			mine[link.AddrFromIP(ip.Address.IP)] = true
		}
	}
	moved := map[netip.Addr]netip.Addr{}
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != idx {
			continue
		}
		p, ok := link.PrefixFromIPNet(&ip.Address)
		gw := link.AddrFromIP(ip.Gateway)
		if !ok || !gw.IsValid() {
			continue
		}
		if succ, ok := successor(p, record.IPs, mine); ok && succ.Gateway.IsValid() && succ.Gateway != gw {
			moved[gw] = succ.Gateway
		}
	}

	out := *prev
	out.IPs = make([]*current.IPConfig, 0, len(prev.IPs)+len(ours))
	placed := false
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != idx {
			out.IPs = append(out.IPs, ip)
			continue
		}
		if !placed {
			out.IPs = append(out.IPs, ours...)
			placed = true
		}
	}
	if !placed {
		out.IPs = append(out.IPs, ours...)
	}
	out.Routes = make([]*types.Route, 0, len(prev.Routes))
	for _, r := range prev.Routes {
		if to, ok := moved[link.AddrFromIP(r.GW)]; ok && r.GW != nil {
			c := *r
			c.GW = to.AsSlice()
			r = &c
		}
		out.Routes = append(out.Routes, r)
	}
	return &out, nil
}

// successor is the record's address that took over from old: the one
// whose Replaces names it, else (old itself not current in the record)
// the only current address, not in
// prevResult (mine), with old's prefix length and interface ID (a
// renumbering keeps the interface ID: design §3.1), for a record that no
// longer says what replaced what once the old address was dropped.
func successor(old netip.Prefix, record []ipamapi.CheckIP, mine map[netip.Addr]bool) (ipamapi.CheckIP, bool) {
	for _, r := range record {
		if r.Replaces.IsValid() && r.Replaces == old.Addr() {
			return r, true
		}
	}
	for _, r := range record {
		if r.Address.Addr() == old.Addr() && !r.Deprecated {
			return ipamapi.CheckIP{}, false // still current: not renumbered
		}
	}
	var found []ipamapi.CheckIP
	for _, r := range record {
		if r.Deprecated || mine[r.Address.Addr()] || r.Address.Bits() != old.Bits() ||
			r.Address.Addr().BitLen() != old.Addr().BitLen() || hostPart(r.Address) != hostPart(old) {
			continue
		}
		found = append(found, r)
	}
	if len(found) != 1 {
		return ipamapi.CheckIP{}, false
	}
	return found[0], true
}

// hostPart is p's address with its prefix bits cleared (16 bytes, IPv4 in
// its mapped form).
func hostPart(p netip.Prefix) [16]byte {
	b := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	for i := range b {
		switch {
		case bits >= 8:
			b[i], bits = 0, bits-8
		case bits > 0:
			b[i] &= 0xff >> bits
			bits = 0
		}
	}
	return b
}

// gatewaysByFamily maps an address family (4 or 6) to its gateway: the one
// rule "a route without a gateway goes via the gateway of its family".
type gatewaysByFamily map[int]netip.Addr

// familyGateways is the gateway of the first IP of each family that has one.
func familyGateways(ips []*current.IPConfig) gatewaysByFamily {
	gws := make(gatewaysByFamily, 2)
	for _, ip := range ips {
		gw := link.AddrFromIP(ip.Gateway)
		if !gw.IsValid() {
			continue
		}
		if _, seen := gws[family(gw)]; !seen {
			gws[family(gw)] = gw
		}
	}
	return gws
}

// via is the gateway of dst's family, the zero Addr (on-link) when none.
func (g gatewaysByFamily) via(dst netip.Prefix) netip.Addr {
	return g[family(dst.Addr())]
}

// resolve converts a CNI route, giving a route without a gateway the
// gateway of its family (on-link if there is none).
func (g gatewaysByFamily) resolve(r *types.Route) (link.Route, error) {
	dst, ok := link.PrefixFromIPNet(&r.Dst)
	if !ok {
		return link.Route{}, fmt.Errorf("bad route destination %q", r.Dst.String())
	}
	route := link.Route{Dst: dst.Masked(), GW: link.AddrFromIP(r.GW)}
	if !route.GW.IsValid() {
		route.GW = g.via(dst)
	}
	if route.GW.IsValid() && family(route.GW) != family(dst.Addr()) {
		return link.Route{}, fmt.Errorf("route %s: gateway %s is of another address family", dst, route.GW)
	}
	return route, nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// onLink is addr with the prefix length of the provider segment's prefix
// (bridgeconf.Provider.OnLink) that holds it, when that is shorter: an
// ipam-v6 block smaller than the segment (its /64 shared by several
// nodes) must not hide the rest of the segment, the router included.
// Other addresses are returned as they are.
func onLink(conf *bridgeconf.NetConf, addr netip.Prefix) netip.Prefix {
	if conf.Provider == nil || !addr.Addr().Is6() {
		return addr
	}
	for _, s := range conf.Provider.OnLink {
		if s.Bits() < addr.Bits() && s.Contains(addr.Addr()) {
			return netip.PrefixFrom(addr.Addr(), s.Bits())
		}
	}
	return addr
}

// addAddr records an address of the attachment: added by the plugin, or
// awaited when the container configures its IPv6 address itself.
func (p *plan) addAddr(conf *bridgeconf.NetConf, addr netip.Prefix) {
	p.allAddrs = append(p.allAddrs, addr)
	if conf.SelfConfiguring() && addr.Addr().Is6() {
		p.awaitAddrs = append(p.awaitAddrs, addr.Addr())
		return
	}
	p.addrs = append(p.addrs, addr)
}

func (p *plan) addRoute(r link.Route) {
	p.routes = append(p.routes, r)
	cni := &types.Route{Dst: *link.IPNet(r.Dst)}
	if r.GW.IsValid() {
		cni.GW = r.GW.AsSlice()
	}
	p.resultRoutes = append(p.resultRoutes, cni)
}

func (p *plan) hasRouteTo(dst netip.Prefix) bool {
	for _, r := range p.routes {
		if r.Dst == dst {
			return true
		}
	}
	return false
}

// containerOptions are the link options of the attachment: DAD, and in the
// self-configuring IPv6 modes RAs accepted, SLAAC in slaac and
// dhcpv6-stateless, and the wait for the address the container's kernel
// forms. In dhcpv6-stateful the address comes from a DHCPv6 client the
// workload starts after ADD: ADD cannot wait for it (CHECK verifies it).
func containerOptions(conf *bridgeconf.NetConf, p *plan) link.ContainerOptions {
	opts := link.ContainerOptions{DAD: conf.EnableDAD}
	if pr := conf.Provider; pr != nil {
		// A shared segment: DAD always, optimistic unless told not to,
		// neighbour timers that notice a dead router fast; RAs
		// accepted when the router or the address comes from them.
		opts.OptimisticDAD = pr.OptimisticDAD
		opts.FastNUD = true
		opts.AcceptRA = conf.SelfConfiguring() || !pr.Gateway.IsValid()
		// A configured gateway is the default route, not the RAs'.
		opts.IgnoreRADefaultRoute = pr.Gateway.IsValid()
		opts.SolicitRouter = opts.AcceptRA
		opts.Autoconf = conf.Autoconf()
		if conf.Autoconf() {
			opts.Await = p.awaitAddrs
		}
		return opts
	}
	if !conf.SelfConfiguring() {
		return opts
	}
	opts.AcceptRA = true
	opts.Autoconf = conf.Autoconf()
	if conf.Autoconf() {
		opts.Await = p.awaitAddrs
	}
	return opts
}

// result completes the IPAM result into the ADD's: the interfaces
// [bridge, host veth, container] (and the gateways' VLAN interface last,
// as the reference bridge plugin does), the IPs on the container
// interface, the routes with their gateways resolved.
func (a *attachment) result(r *current.Result, h *hostSide, p *plan) *current.Result {
	r.Interfaces = []*current.Interface{
		bridgeIfaceIdx:    {Name: a.bridge, Mac: h.bridge.HardwareAddr.String()},
		hostVethIfaceIdx:  {Name: a.hostVeth, Mac: a.hostMAC.String()},
		containerIfaceIdx: {Name: a.ifName, Mac: a.containerMAC.String(), Sandbox: a.netns},
	}
	if h.vlanIf != nil {
		r.Interfaces = append(r.Interfaces, &current.Interface{Name: h.vlanIf.Name, Mac: h.vlanIf.HardwareAddr.String()})
	}
	for _, ip := range r.IPs {
		ip.Interface = current.Int(containerIfaceIdx)
	}
	r.Routes = p.resultRoutes
	r.DNS = mergeDNS(r.DNS, p.raDNS)
	return r
}

// mergeDNS is IPAM's dns with the routers' RA nameservers and search
// domains appended, each once.
func mergeDNS(dns types.DNS, ra link.RADNS) types.DNS {
	for _, s := range ra.Nameservers {
		if !slices.Contains(dns.Nameservers, s.String()) {
			dns.Nameservers = append(dns.Nameservers, s.String())
		}
	}
	for _, d := range ra.Search {
		if !slices.Contains(dns.Search, d) {
			dns.Search = append(dns.Search, d)
		}
	}
	return dns
}

// Indexes of the interfaces in the ADD result.
const (
	bridgeIfaceIdx    = 0
	hostVethIfaceIdx  = 1
	containerIfaceIdx = 2
)

// Command bridge-v6 is a CNI main plugin: it attaches a container to a Linux
// bridge through a veth pair and configures its addresses and routes the
// IPv6 way (no DAD wait, no RAs racing the plugin, gateway on the bridge
// usable at once). Addresses come from a delegated IPAM plugin.
//
// It is exec'd once per container and verb, so it links only the CNI
// libraries and netlink: never etcd, gRPC or GoBGP.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/macaddr"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
	"github.com/v6cni/v6cni/pkg/plugin/delegate"
	"github.com/v6cni/v6cni/pkg/plugin/ipamplugin"
	"github.com/vishvananda/netlink"
)

func init() {
	// A network namespace belongs to an OS thread: the whole plugin runs on
	// the main thread so ns.Do can switch it and switch back.
	runtime.LockOSThread()
}

// pluginType is the plugin's name, in its log lines.
const pluginType = "bridge-v6"

// buildVersion is set at build time (-ldflags "-X main.buildVersion=…";
// "version" is the CNI package's name in this package's tests).
var buildVersion = "dev"

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
		GC:     cmdGC,
	}, cniversion.All, pluginType+" "+buildVersion+": Linux bridge + veth, IPv6 first (v6cni)")
}

// portUpTimeout bounds the wait for the bridge to forward the host end of
// the veth (the kernel's linkwatch enables it within a millisecond or so).
const portUpTimeout = time.Second

// Indexes of the interfaces in the ADD result.
const (
	bridgeIfaceIdx    = 0
	hostVethIfaceIdx  = 1
	containerIfaceIdx = 2
)

func cmdAdd(args *skel.CmdArgs) (retErr error) {
	conf, err := bridgeconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	// Entered in place on the main (locked) thread: no goroutine, thread
	// and netpoller hand-off per entry as with ns.NetNS.Do.
	netns, err := link.OpenNetNS(args.Netns)
	if err != nil {
		// The runtime handed a path that is not a netns: its environment
		// is wrong (code 4), not the plugin (999).
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: "+err.Error(), "")
	}
	defer netns.Close()

	// Before IPAM, so a refused ADD allocates nothing.
	if err := ifnameMustBeFree(netns, args.IfName); err != nil {
		return err
	}
	// The `mac` capability, args.cni.mac or CNI_ARGS MAC=, else derived:
	// the same rule an eui64 IPAM applies to the same input.
	containerMAC, err := macaddr.ForAttachment(args.StdinData, args.Args, conf.Name, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}

	// IPAM runs side by side with the kernel work that does not need its
	// answer (bridge, forwarding, the veth pair): an ADD is then as long
	// as the longer of the two, not their sum.
	ipamDone, err := startIPAMAdd(context.Background(), conf.IPAM.Type, args)
	if err != nil {
		return err
	}
	var ipam *ipamReply
	awaitIPAM := func() *ipamReply {
		if ipam == nil {
			r := <-ipamDone
			ipam = &r
		}
		return ipam
	}

	hostVeth := link.HostVethName(args.ContainerID, args.IfName)
	success, vethCreated, masqSet, spoofSet := false, false, false, false
	var masqAddrs []netip.Prefix
	// A failed ADD leaves nothing behind. When undoing a step fails too,
	// something is left (a veth, nftables elements, a lease): the error
	// the runtime gets says so, with the ADD's own CNI code, and it is
	// logged (stderr, the config's logFile).
	defer func() {
		if success {
			return
		}
		var undo []error
		// The bridge and its gateway addresses are shared: they stay.
		if vethCreated {
			undo = append(undo, link.DeleteLinkByName(hostVeth))
		}
		if masqSet {
			undo = append(undo, link.TeardownMasquerade(masqIface(conf), masqAddrs))
		}
		if spoofSet {
			undo = append(undo, link.TeardownMACSpoofCheck(hostVeth, containerMAC))
		}
		// Released only if allocated: a refused IPAM ADD holds nothing.
		if awaitIPAM().err == nil {
			if err := ipamVerb(context.Background(), conf.IPAM.Type, "DEL", args, ipamplugin.Del, delegate.Del); err != nil {
				undo = append(undo, fmt.Errorf("release the addresses (IPAM %s DEL): %w", conf.IPAM.Type, err))
			}
		}
		if rb := joinErrors(undo...); rb != nil {
			retErr = withAlso(retErr, "rollback failed", rb)
			ipamplugin.LogFailure(pluginType, "ADD", args, retErr)
		}
	}()
	// A kernel step that fails while IPAM is still running waits for its
	// answer; IPAM's error wins (an unreachable ipamd is code 11, which
	// runtimes retry), else the kernel's.
	fail := func(err error) error {
		if r := awaitIPAM(); r.err != nil {
			return r.err
		}
		return err
	}

	br, err := link.EnsureBridge(conf.Bridge, conf.MTU)
	if err != nil {
		return fail(err)
	}
	// IPv4 forwarding waits for the addresses: only dual-stack needs it.
	if err := link.PrepareBridge(conf.Bridge, conf.IsGateway); err != nil {
		return fail(err)
	}
	// The gateways of a VLAN live on the bridge's VLAN interface.
	gwLink := netlink.Link(br)
	var vlanIf *netlink.Vlan
	if conf.VLAN != 0 {
		if err := link.PrepareVLANBridge(br, conf.VLAN); err != nil {
			return fail(err)
		}
		if conf.IsGateway && vlanGateway(conf) {
			if vlanIf, err = link.EnsureVLANGateway(br, conf.VLAN, link.VLANIfName(conf.Bridge, conf.VLAN), conf.MTU); err != nil {
				return fail(err)
			}
			gwLink = vlanIf
		}
	}
	if conf.PromiscMode {
		if err := link.SetPromisc(br); err != nil {
			return fail(err)
		}
	}
	if conf.MACSpoofChk {
		// Before the veth exists (the set elements name it): the
		// container's first frame is already checked.
		spoofSet = true
		if err := link.SetupMACSpoofCheck(hostVeth, containerMAC); err != nil {
			return fail(err)
		}
	}

	hostMAC := link.HostVethMAC(args.ContainerID, args.IfName)
	// Subscribed before the container end goes up, so its oper-up event
	// cannot be missed.
	portUp, err := link.WatchOperUp()
	if err != nil {
		return fail(err)
	}
	defer portUp.Close()
	veth, err := link.CreateVeth(link.VethSpec{
		HostName:      hostVeth,
		HostMAC:       hostMAC,
		ContainerName: args.IfName,
		ContainerMAC:  containerMAC,
		MTU:           conf.MTU,
		BridgeIndex:   br.Index,
		NetNSFd:       netns.Fd(),
	})
	if err != nil {
		return fail(err)
	}
	vethCreated = true
	if conf.VLAN != 0 {
		// Before the container end comes up: no frame of the container
		// is ever forwarded in another VLAN.
		if err := link.SetAccessVLAN(br, veth, conf.VLAN); err != nil {
			return fail(err)
		}
	}
	if conf.HairpinMode {
		if err := link.SetHairpin(hostVeth); err != nil {
			return fail(err)
		}
	}

	reply := awaitIPAM()
	if reply.err != nil {
		return reply.err
	}
	result, err := current.NewResultFromResult(reply.result)
	if err != nil {
		return fmt.Errorf("convert result of IPAM plugin %s: %w", conf.IPAM.Type, err)
	}
	plan, err := planAttachment(conf, result)
	if err != nil {
		return err
	}
	if conf.IsGateway {
		if err := link.AddGatewayAddrs(gwLink, plan.gatewayAddrs, conf.ForceAddress); err != nil {
			return err
		}
		if plan.has4 {
			if err := link.EnableIPv4Forwarding(); err != nil {
				return err
			}
		}
	}

	if err := netns.Do(func() error {
		opts := containerOptions(conf, plan)
		opts.Index = veth.ParentIndex
		containerLink, err := link.ConfigureContainerWith(args.IfName, plan.addrs, plan.routes, opts)
		if err != nil {
			return fmt.Errorf("configure %s: %w", args.IfName, err)
		}
		// Once the bridge forwards the port (the container's first
		// packets are not dropped, its first neighbour solicitation for
		// the gateway gets through), announce the addresses so peers with
		// a stale entry for them learn the new MAC at once. The watch's
		// socket is the host's, whatever thread reads it. A port that
		// takes too long only delays the announcement's usefulness: ADD
		// does not fail for it.
		if err := portUp.Wait(veth.Index, portUpTimeout); err != nil {
			fmt.Fprintf(os.Stderr, "bridge-v6: %s: %v\n", hostVeth, err)
		}
		return link.AnnounceAddrs(containerLink, containerMAC, plan.addrs)
	}); err != nil {
		return fmt.Errorf("in netns %s: %w", args.Netns, err)
	}

	if conf.IPMasq || conf.IPMasq6 {
		masqAddrs = plan.allAddrs
		masqSet = true
		if err := link.SetupMasquerade(masqIface(conf), plan.addrs, conf.IPMasq, conf.IPMasq6); err != nil {
			return err
		}
	}

	result.Interfaces = []*current.Interface{
		bridgeIfaceIdx:    {Name: conf.Bridge, Mac: br.HardwareAddr.String()},
		hostVethIfaceIdx:  {Name: hostVeth, Mac: hostMAC.String()},
		containerIfaceIdx: {Name: args.IfName, Mac: containerMAC.String(), Sandbox: args.Netns},
	}
	if vlanIf != nil {
		// As the reference bridge plugin: the gateway's interface last.
		result.Interfaces = append(result.Interfaces, &current.Interface{Name: vlanIf.Name, Mac: vlanIf.HardwareAddr.String()})
	}
	for _, ip := range result.IPs {
		ip.Interface = current.Int(containerIfaceIdx)
	}
	result.Routes = plan.resultRoutes

	// A result the runtime cannot read is a failed ADD: roll back.
	if err := types.PrintResult(result, conf.CNIVersion); err != nil {
		return fmt.Errorf("print result: %w", err)
	}
	success = true
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := bridgeconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	// IPAM and the kernel work run side by side: deleting a veth is mostly
	// the kernel waiting (~30 ms here), and the IPAM release fits in that
	// wait. IPAM's error wins: its reservations are what leaks (across
	// reboots too), and the runtime retries DEL, which finds nothing left
	// to delete in the kernel and releases IPAM again.
	ipamDone := make(chan error, 1)
	go func() {
		ipamDone <- ipamVerb(context.Background(), conf.IPAM.Type, "DEL", args, ipamplugin.Del, delegate.Del)
	}()
	linkErr := deleteAttachment(conf, args)
	if err := <-ipamDone; err != nil {
		// With IPAM's code, and what was left in the kernel too.
		if linkErr != nil {
			return withAlso(err, "and in the kernel", linkErr)
		}
		return err
	}
	return linkErr
}

// deleteAttachment removes the veth (by its deterministic host name, and
// inside the netns if that still exists) and the per-attachment nftables
// state. Every step is tried even when one fails: each error is reported,
// and a DEL the runtime retries has less left to do.
func deleteAttachment(conf *bridgeconf.NetConf, args *skel.CmdArgs) error {
	hostVeth := link.HostVethName(args.ContainerID, args.IfName)
	var errs []error
	errs = append(errs, link.DeleteLinkByName(hostVeth))
	if conf.MACSpoofChk {
		// The MAC is recomputed from the same input as ADD's; when that
		// fails, the port alone is removed (it is then no longer checked).
		mac, err := macaddr.ForAttachment(args.StdinData, args.Args, conf.Name, args.ContainerID, args.IfName)
		if err != nil {
			mac = nil
		}
		errs = append(errs, link.TeardownMACSpoofCheck(hostVeth, mac))
	}
	if (conf.IPMasq || conf.IPMasq6) && conf.PrevResult != nil {
		// The addresses to stop masquerading are known only from
		// prevResult (spec 0.4.0 and later send it on DEL). One that
		// cannot be read would leave them masqueraded: an error.
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			errs = append(errs, fmt.Errorf("convert prevResult to stop masquerading: %w", err))
		} else {
			var addrs []netip.Prefix
			for _, ip := range prev.IPs {
				if p, ok := link.PrefixFromIPNet(&ip.Address); ok {
					addrs = append(addrs, p)
				}
			}
			errs = append(errs, link.TeardownMasquerade(masqIface(conf), addrs))
		}
	}
	if args.Netns != "" {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			return link.DeleteLinkByName(args.IfName)
		})
		if err != nil && !netnsGone(err) {
			errs = append(errs, fmt.Errorf("delete %s in netns %s: %w", args.IfName, args.Netns, err))
		}
	}
	return joinErrors(errs...)
}

// joinErrors joins the non-nil errs, their messages separated by "; " (a
// CNI error message is one line); nil when there is none.
func joinErrors(errs ...error) error {
	var kept []error
	for _, err := range errs {
		if err != nil {
			kept = append(kept, err)
		}
	}
	switch len(kept) {
	case 0:
		return nil
	case 1:
		return kept[0]
	}
	return &joinedError{kept}
}

type joinedError struct{ errs []error }

func (e *joinedError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e *joinedError) Unwrap() []error { return e.errs }

// withAlso is err, whose CNI code the runtime must get (0 for a plain
// error: skel then answers 999), with what (a later failure, labelled)
// added to its message. skel prints the message of the first *types.Error
// in err's chain, so a coded err becomes a new *types.Error carrying both
// messages; a plain one is wrapped so that only err is unwrapped: a CNI
// error inside also (IPAM DEL's code 11) must not become the answer's code.
func withAlso(err error, label string, also error) error {
	var ce *types.Error
	if errors.As(err, &ce) {
		return &types.Error{Code: ce.Code, Msg: fmt.Sprintf("%s; %s: %v", ce.Msg, label, also), Details: ce.Details}
	}
	return &alsoError{err: err, label: label, also: also}
}

type alsoError struct {
	err   error
	label string
	also  error
}

func (e *alsoError) Error() string { return fmt.Sprintf("%v; %s: %v", e.err, e.label, e.also) }
func (e *alsoError) Unwrap() error { return e.err }

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := bridgeconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "required prevResult missing", "")
	}
	if err := ipamVerb(context.Background(), conf.IPAM.Type, "CHECK", args, ipamplugin.Check, delegate.Check); err != nil {
		return err
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w", err)
	}
	want, err := expectedState(conf, prev, args)
	if err != nil {
		return err
	}

	br, err := link.BridgeByName(conf.Bridge)
	if err != nil {
		return err
	}
	if conf.VLAN != 0 && (br.VlanFiltering == nil || !*br.VlanFiltering) {
		return fmt.Errorf("bridge %s: vlan_filtering is off, but the network has vlan %d", conf.Bridge, conf.VLAN)
	}
	if conf.IsGateway {
		gwLink := netlink.Link(br)
		if vlanGateway(conf) {
			vlanIf, err := link.CheckVLANGateway(br, conf.VLAN, link.VLANIfName(conf.Bridge, conf.VLAN))
			if err != nil {
				return err
			}
			gwLink = vlanIf
		}
		if err := link.CheckBridgeGateways(gwLink, want.gatewayAddrs); err != nil {
			return err
		}
	}
	hostVeth := link.HostVethName(args.ContainerID, args.IfName)
	if err := link.CheckHostVeth(hostVeth, br); err != nil {
		return err
	}
	if conf.VLAN != 0 {
		if err := link.CheckAccessVLAN(hostVeth, conf.VLAN); err != nil {
			return err
		}
	}

	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("open netns %q: %w", args.Netns, err)
	}
	defer netns.Close()
	if err := netns.Do(func(ns.NetNS) error {
		opts := containerOptions(conf, want)
		opts.DAD = false
		opts.Await = want.awaitAddrs // every self-configuring mode, stateful too
		return link.CheckContainerWith(args.IfName, want.mac, want.addrs, want.routes, opts)
	}); err != nil {
		return fmt.Errorf("%w in %s", err, args.Netns)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := bridgeconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	// The bridge is created on demand: ADD works whenever IPAM can serve.
	return ipamVerb(context.Background(), conf.IPAM.Type, "STATUS", args, ipamplugin.Status, delegate.Status)
}

func cmdGC(args *skel.CmdArgs) error {
	conf, err := bridgeconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	// Address reservations are IPAM's; veths die with their netns.
	return ipamVerb(context.Background(), conf.IPAM.Type, "GC", args, ipamplugin.GC, delegate.GC)
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
func masqIface(conf *bridgeconf.NetConf) string {
	if vlanGateway(conf) {
		return link.VLANIfName(conf.Bridge, conf.VLAN)
	}
	return conf.Bridge
}

// ifnameMustBeFree fails with CNI error 4 when ifname already exists in netns.
func ifnameMustBeFree(netns *link.NetNS, ifname string) error {
	var exists bool
	err := netns.Do(func() error {
		var err error
		exists, err = link.LinkExists(ifname)
		return err
	})
	if err != nil {
		return fmt.Errorf("look up %s in netns %s: %w", ifname, netns.Path(), err)
	}
	if exists {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME %q already exists in netns %s", ifname, netns.Path()), "")
	}
	return nil
}

// netnsGone reports whether err says the netns path no longer holds a
// network namespace: DEL then has nothing left to remove in it.
func netnsGone(err error) bool {
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	return errors.As(err, &notExist) || errors.As(err, &notNS)
}

// plan is what the kernel must be told for one attachment, derived from the
// IPAM result and the config.
type plan struct {
	addrs        []netip.Prefix   // container addresses the plugin adds, with the block prefix length
	awaitAddrs   []netip.Addr     // IPv6 addresses the container configures itself (self-configuring ipv6Mode)
	allAddrs     []netip.Prefix   // addrs and the awaited ones
	gatewayAddrs []netip.Prefix   // bridge addresses: gateway with the block prefix length
	routes       []link.Route     // container routes, gateways resolved
	resultRoutes []*types.Route   // the same routes for the CNI result
	mac          net.HardwareAddr // CHECK only: the container MAC
	has4         bool
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
		gw := link.AddrFromIP(ip.Gateway)
		if !gw.IsValid() && conf.IsGateway {
			gw = addr.Masked().Addr().Next()
			if !addr.Contains(gw) || gw == addr.Addr() {
				return nil, fmt.Errorf("address %s: block too small for a gateway", addr)
			}
			ip.Gateway = net.IP(gw.AsSlice())
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
	for _, r := range result.Routes {
		route, err := resolveRoute(r, gateways)
		if err != nil {
			return nil, err
		}
		p.addRoute(route)
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
			gw, ok := gateways[family(dst.Addr())]
			if ok && !p.hasRouteTo(dst) {
				p.addRoute(link.Route{Dst: dst, GW: gw})
			}
		}
	}
	return p, nil
}

// familyGateways maps each address family (4 or 6) to the gateway of the
// first IP of that family that has one.
func familyGateways(ips []*current.IPConfig) map[int]netip.Addr {
	gws := make(map[int]netip.Addr, 2)
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

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// resolveRoute converts a CNI route, giving a route without a gateway the
// gateway of its family (on-link if there is none).
func resolveRoute(r *types.Route, gateways map[int]netip.Addr) (link.Route, error) {
	dst, ok := link.PrefixFromIPNet(&r.Dst)
	if !ok {
		return link.Route{}, fmt.Errorf("bad route destination %q", r.Dst.String())
	}
	route := link.Route{Dst: dst.Masked(), GW: link.AddrFromIP(r.GW)}
	if !route.GW.IsValid() {
		route.GW = gateways[family(dst.Addr())] // zero when none: on-link
	}
	if route.GW.IsValid() && family(route.GW) != family(dst.Addr()) {
		return link.Route{}, fmt.Errorf("route %s: gateway %s is of another address family", dst, route.GW)
	}
	return route, nil
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

// containerOptions are the link options of the attachment: DAD, and in the
// self-configuring IPv6 modes RAs accepted, SLAAC in slaac and
// dhcpv6-stateless, and the wait for the address the container's kernel
// forms. In dhcpv6-stateful the address comes from a DHCPv6 client the
// workload starts after ADD: ADD cannot wait for it (CHECK verifies it).
func containerOptions(conf *bridgeconf.NetConf, p *plan) link.ContainerOptions {
	opts := link.ContainerOptions{DAD: conf.EnableDAD}
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

func (p *plan) addRoute(r link.Route) {
	p.routes = append(p.routes, r)
	cni := &types.Route{Dst: *ipNet(r.Dst)}
	if r.GW.IsValid() {
		cni.GW = net.IP(r.GW.AsSlice())
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

// expectedState is what CHECK looks for, from prevResult: the container
// interface (by name and sandbox), its MAC, the IPs assigned to it, the
// routes (gateways resolved as ADD did) and the gateway addresses.
func expectedState(conf *bridgeconf.NetConf, prev *current.Result, args *skel.CmdArgs) (*plan, error) {
	idx := -1
	for i, iface := range prev.Interfaces {
		if iface.Name == args.IfName && (iface.Sandbox == "" || iface.Sandbox == args.Netns) {
			idx = i
			break
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("prevResult has no interface %s in netns %s", args.IfName, args.Netns)
	}
	p := &plan{}
	if s := prev.Interfaces[idx].Mac; s != "" {
		mac, err := net.ParseMAC(s)
		if err != nil {
			return nil, fmt.Errorf("prevResult interface %s: bad mac %q: %w", args.IfName, s, err)
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
		p.addAddr(conf, addr)
		if gw := link.AddrFromIP(ip.Gateway); gw.IsValid() {
			p.gatewayAddrs = append(p.gatewayAddrs, netip.PrefixFrom(gw, addr.Bits()))
		}
	}
	gateways := familyGateways(prev.IPs)
	for _, r := range prev.Routes {
		route, err := resolveRoute(r, gateways)
		if err != nil {
			return nil, fmt.Errorf("prevResult: %w", err)
		}
		p.routes = append(p.routes, route)
	}
	return p, nil
}

// ipNet converts a prefix to the form CNI results carry.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
)

// hostSide is what ADD set up on the host for one attachment.
type hostSide struct {
	bridge *netlink.Bridge
	gwLink netlink.Link  // holds the gateway addresses: the bridge or vlanIf
	vlanIf *netlink.Vlan // the gateways' VLAN interface, nil when they are on the bridge
	veth   *netlink.Veth // the host end; ParentIndex is the container end's index
	// portUp watches for the host end to be forwarded by the bridge; the
	// caller closes it.
	portUp *link.OperUpWatch
}

// setUpHost does the kernel work of ADD that needs no address: the bridge
// (and its VLAN settings), macspoofchk, and the veth pair, whose container
// end is created directly in netns. What is the attachment's own is pushed
// onto rollback; the bridge and its VLAN interface are shared and stay.
func setUpHost(conf *bridgeconf.NetConf, att *attachment, netns *link.NetNS, rollback *undo) (h *hostSide, err error) {
	h = &hostSide{}
	if h.bridge, err = link.EnsureBridge(conf.Bridge, conf.MTU); err != nil {
		if errors.Is(err, link.ErrNotBridge) {
			// Refused before anything is created: the config names a
			// link of another kind, the host is fine (not 999).
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "bridge: "+err.Error(), "")
		}
		return nil, err
	}
	if pr := conf.Provider; pr != nil {
		// Before any veth joins: the bridge learns the node's RA routes
		// again when the uplink gives it its carrier.
		if _, err := link.EnsureProviderUplink(h.bridge, pr.Master, pr.VLANID, att.uplink); err != nil {
			return nil, err
		}
	} else if err := link.PrepareBridge(conf.Bridge, conf.IsGateway); err != nil {
		// IPv4 forwarding waits for the addresses: only dual-stack needs it.
		return nil, err
	}
	h.gwLink = h.bridge
	if conf.VLAN != 0 {
		if err := link.PrepareVLANBridge(h.bridge, conf.VLAN); err != nil {
			return nil, err
		}
		if conf.IsGateway && att.vlanIf != "" {
			if h.vlanIf, err = link.EnsureVLANGateway(h.bridge, conf.VLAN, att.vlanIf, conf.MTU); err != nil {
				return nil, err
			}
			h.gwLink = h.vlanIf
		}
	}
	if conf.PromiscMode {
		if err := link.SetPromisc(h.bridge); err != nil {
			return nil, err
		}
	}
	if conf.MACSpoofChk {
		// Before the veth exists (the set elements name it): the
		// container's first frame is already checked.
		rollback.push(func() error { return link.TeardownMACSpoofCheck(att.hostVeth, att.containerMAC) })
		if err := link.SetupMACSpoofCheck(att.hostVeth, att.containerMAC); err != nil {
			return nil, err
		}
	}

	// Subscribed before the container end goes up, so its oper-up event
	// cannot be missed.
	if h.portUp, err = link.WatchOperUp(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.portUp.Close()
		}
	}()
	h.veth, err = link.CreateVeth(link.VethSpec{
		HostName:      att.hostVeth,
		HostMAC:       att.hostMAC,
		ContainerName: att.ifName,
		ContainerMAC:  att.containerMAC,
		MTU:           conf.MTU,
		BridgeIndex:   h.bridge.Index,
		NetNSFd:       netns.Fd(),
	})
	if err != nil {
		return nil, err
	}
	rollback.push(func() error { return link.DeleteLinkByName(att.hostVeth) })
	if conf.VLAN != 0 {
		// Before the container end comes up: no frame of the container
		// is ever forwarded in another VLAN.
		if err := link.SetAccessVLAN(h.bridge, h.veth, conf.VLAN); err != nil {
			return nil, err
		}
	}
	if conf.HairpinMode {
		if err := link.SetHairpin(att.hostVeth); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// addGateways puts the gateway addresses on the bridge (or its VLAN
// interface) when it is the gateway, and forwards IPv4 when there is any.
func addGateways(conf *bridgeconf.NetConf, h *hostSide, p *plan) error {
	if !conf.IsGateway {
		return nil
	}
	if err := link.AddGatewayAddrs(h.gwLink, p.gatewayAddrs, conf.ForceAddress); err != nil {
		return err
	}
	if p.has4 {
		return link.EnableIPv4Forwarding()
	}
	return nil
}

// setUpMasquerade masquerades the attachment's addresses (ipMasq,
// ipMasq6) when they leave by another interface than the bridge.
func setUpMasquerade(conf *bridgeconf.NetConf, att *attachment, p *plan, rollback *undo) error {
	if !conf.IPMasq && !conf.IPMasq6 {
		return nil
	}
	rollback.push(func() error { return link.TeardownMasquerade(att.masqIface(), p.allAddrs) })
	return link.SetupMasquerade(att.masqIface(), p.addrs, conf.IPMasq, conf.IPMasq6)
}

// deleteHostSide removes what DEL must remove on the host: the veth (by its
// deterministic name) and the attachment's nftables elements. Every step
// is tried even when one fails.
func deleteHostSide(conf *bridgeconf.NetConf, att *attachment) []error {
	errs := []error{link.DeleteLinkByName(att.hostVeth)}
	if conf.MACSpoofChk {
		// att.containerMAC is nil when it could not be recomputed: the
		// port alone is removed (it is then no longer checked).
		errs = append(errs, link.TeardownMACSpoofCheck(att.hostVeth, att.containerMAC))
	}
	if (conf.IPMasq || conf.IPMasq6) && conf.PrevResult != nil {
		// The addresses to stop masquerading are known only from
		// prevResult (spec 0.4.0 and later send it on DEL). One that
		// cannot be read would leave them masqueraded: an error.
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return append(errs, fmt.Errorf("convert prevResult to stop masquerading: %w", err))
		}
		var addrs []netip.Prefix
		for _, ip := range prev.IPs {
			if p, ok := link.PrefixFromIPNet(&ip.Address); ok {
				addrs = append(addrs, p)
			}
		}
		errs = append(errs, link.TeardownMasquerade(att.masqIface(), addrs))
	}
	return errs
}

// checkHost is CHECK on the host: the bridge (VLAN filtering on with a
// VLAN), the gateways when it is the gateway, the host end on the bridge
// (in its access VLAN).
func checkHost(conf *bridgeconf.NetConf, att *attachment, want *plan) error {
	br, err := link.BridgeByName(conf.Bridge)
	if err != nil {
		return err
	}
	if conf.VLAN != 0 && (br.VlanFiltering == nil || !*br.VlanFiltering) {
		return fmt.Errorf("bridge %s: vlan_filtering is off, but the network has vlan %d", conf.Bridge, conf.VLAN)
	}
	if conf.IsGateway {
		gwLink := netlink.Link(br)
		if att.vlanIf != "" {
			vlanIf, err := link.CheckVLANGateway(br, conf.VLAN, att.vlanIf)
			if err != nil {
				return err
			}
			gwLink = vlanIf
		}
		if err := link.CheckBridgeGateways(gwLink, want.gatewayAddrs); err != nil {
			return err
		}
	}
	if att.uplink != "" {
		if err := link.CheckProviderUplink(br, att.uplink); err != nil {
			return err
		}
	}
	if err := link.CheckHostVeth(att.hostVeth, br); err != nil {
		return err
	}
	if conf.VLAN != 0 {
		return link.CheckAccessVLAN(att.hostVeth, conf.VLAN)
	}
	return nil
}

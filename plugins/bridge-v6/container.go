package main

// ADD, DEL and CHECK enter the container's netns one way: link.NetNS,
// which switches the plugin's own locked thread with setns(2) and back.
// The reference plugins' ns.NetNS.Do runs the function on a new goroutine
// and OS thread and opens the namespace through an *os.File (netpoller
// set-up): ~0.5 ms per entry, measured when bridge-v6 moved off it (its
// own work per ADD went from 8.6 to 4.7 ms with that and fewer round
// trips). ADD does not enter the netns to create the container end:
// link.CreateVeth makes it there directly (IFLA_NET_NS_FD), and ADD
// enters only to look the ifname up and to configure the interface.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
)

// portUpTimeout bounds the wait for the bridge to forward the host end of
// the veth. The kernel's linkwatch enables the port; it handles a carrier
// coming up as a non-urgent event and runs those at most once a second
// (net/core/link_watch.c), so on a node where links change all the time
// the wait is often close to 1 s, and more under load. At 1 s the
// announcement was sometimes sent before the port forwarded and dropped
// (TestUnsolicitedNAWithoutTraffic failed once in a loaded `make test`).
// The wait ends as soon as the port forwards: only a slow port costs it.
const portUpTimeout = 3 * time.Second

// routerTimeout bounds the wait, on a provider network without
// provider.gateway, for a default route from the upstream routers' RAs
// (the plugin solicits one once the port forwards).
const routerTimeout = 5 * time.Second

// openNetNS opens ADD's CNI_NETNS. A path that is not a netns is the
// runtime's environment at fault (code 4), not the plugin (999).
func openNetNS(path string) (*link.NetNS, error) {
	netns, err := link.OpenNetNS(path)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: "+err.Error(), "")
	}
	return netns, nil
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

// configureContainer configures the container end (sysctls, addresses,
// link-up, routes) and announces its addresses.
func configureContainer(netns *link.NetNS, conf *bridgeconf.NetConf, att *attachment, h *hostSide, p *plan) error {
	err := netns.Do(func() error {
		opts := containerOptions(conf, p)
		opts.Index = h.veth.ParentIndex
		if conf.Provider != nil && opts.SolicitRouter {
			// The upstream router's RAs carry its DNS (RFC 8106),
			// which the container's kernel ignores: read them for
			// the result, from before the solicitation.
			ra, err := link.ListenRA(att.ifName)
			if err != nil {
				return err
			}
			defer func() {
				// After the waits below (SLAAC address, RA default
				// router): the RA that ended them is queued.
				if dns, err := ra.DNS(); err != nil {
					fmt.Fprintf(os.Stderr, "bridge-v6: %s: %v\n", att.ifName, err)
				} else {
					p.raDNS = dns
				}
				ra.Close()
			}()
		}
		if conf.Provider != nil {
			// The DAD probes must reach the segment: the addresses
			// are added once the bridge forwards the port.
			opts.PortReady = func() error {
				if err := h.portUp.Wait(h.veth.Index, portUpTimeout); err != nil {
					return fmt.Errorf("host end %s: %w", att.hostVeth, err)
				}
				return nil
			}
		}
		containerLink, err := link.ConfigureContainerWith(att.ifName, p.addrs, p.routes, opts)
		if errors.Is(err, link.ErrDADFailed) && conf.Provider != nil {
			return fmt.Errorf("configure %s: %w (another host on the provider network of bridge %s, uplink %s, holds it)", att.ifName, err, att.bridge, att.uplink)
		}
		if err != nil {
			return fmt.Errorf("configure %s: %w", att.ifName, err)
		}
		if p.learnRouter {
			router, err := link.AwaitDefaultRouter(containerLink, routerTimeout)
			if err != nil {
				return fmt.Errorf("provider network of bridge %s: %w", att.bridge, err)
			}
			var routes []link.Route
			for _, dst := range p.viaRouter {
				routes = append(routes, link.Route{Dst: dst, GW: router})
			}
			if err := link.AddRoutes(containerLink, routes); err != nil {
				return err
			}
		}
		// Once the bridge forwards the port (the container's first
		// packets are not dropped, its first neighbour solicitation for
		// the gateway gets through), announce the addresses so peers with
		// a stale entry for them learn the new MAC at once. The watch's
		// socket is the host's, whatever thread reads it. A port that
		// takes too long only delays the announcement's usefulness: ADD
		// does not fail for it.
		if err := h.portUp.Wait(h.veth.Index, portUpTimeout); err != nil {
			fmt.Fprintf(os.Stderr, "bridge-v6: %s: %v\n", att.hostVeth, err)
		}
		return link.AnnounceAddrs(containerLink, att.containerMAC, p.addrs)
	})
	if err != nil {
		return fmt.Errorf("in netns %s: %w", att.netns, err)
	}
	return nil
}

// deleteContainerEnd deletes the container end in its netns, if both still
// exist: an empty CNI_NETNS or a netns that is gone has nothing left.
func deleteContainerEnd(att *attachment) error {
	if att.netns == "" {
		return nil
	}
	netns, err := link.OpenNetNS(att.netns)
	if err != nil {
		if netnsGone(err) {
			return nil
		}
		return fmt.Errorf("delete %s in netns %s: %w", att.ifName, att.netns, err)
	}
	defer netns.Close()
	if err := netns.Do(func() error { return link.DeleteLinkByName(att.ifName) }); err != nil {
		return fmt.Errorf("delete %s in netns %s: %w", att.ifName, att.netns, err)
	}
	return nil
}

// netnsGone reports whether OpenNetNS's err says the path no longer holds
// a network namespace: DEL then has nothing left to remove in it.
func netnsGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, link.ErrNotNetNS)
}

// checkContainer is CHECK in the netns: the interface with prevResult's
// MAC, addresses and routes, and the sysctls of the ipv6Mode.
func checkContainer(conf *bridgeconf.NetConf, att *attachment, want *plan) error {
	netns, err := link.OpenNetNS(att.netns)
	if err != nil {
		return err
	}
	defer netns.Close()
	err = netns.Do(func() error {
		opts := containerOptions(conf, want)
		opts.DAD = false
		opts.Await = want.awaitAddrs // every self-configuring mode, stateful too
		return link.CheckContainerWith(att.ifName, want.mac, want.addrs, want.routes, opts)
	})
	if err != nil {
		return fmt.Errorf("%w in %s", err, att.netns)
	}
	return nil
}

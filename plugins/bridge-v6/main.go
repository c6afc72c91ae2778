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
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
	"github.com/v6cni/v6cni/pkg/plugin/delegate"
	"github.com/v6cni/v6cni/pkg/plugin/ipamplugin"
)

func init() {
	// A network namespace belongs to an OS thread: the whole plugin runs on
	// the main thread, which link.NetNS.Do switches and switches back
	// (container.go).
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

func cmdAdd(args *skel.CmdArgs) (retErr error) {
	conf, err := bridgeconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	netns, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer netns.Close()
	// Before IPAM, so a refused ADD allocates nothing.
	if err := ifnameMustBeFree(netns, args.IfName); err != nil {
		return err
	}
	att := newAttachment(conf, args)
	if err := att.deriveMAC(conf, args); err != nil {
		return err
	}

	ipam, err := startIPAM(conf, args)
	if err != nil {
		return err
	}
	// A failed ADD leaves nothing behind: each step that creates something
	// pushes its undo. When undoing fails too, something is left (a veth,
	// nftables elements, a lease): the error the runtime gets says so,
	// with the ADD's own CNI code, and it is logged (stderr, the config's
	// logFile).
	var rollback undo
	rollback.push(ipam.release)
	defer func() {
		if retErr == nil {
			return
		}
		if rb := rollback.run(); rb != nil {
			retErr = withAlso(retErr, "rollback failed", rb)
			ipamplugin.LogFailure(pluginType, "ADD", args, retErr)
		}
	}()

	host, err := setUpHost(conf, att, netns, &rollback)
	if err != nil {
		return ipam.failed(err)
	}
	defer host.portUp.Close()
	result, plan, err := ipam.plan()
	if err != nil {
		return err
	}
	if err := addGateways(conf, host, plan); err != nil {
		return err
	}
	if err := configureContainer(netns, conf, att, host, plan); err != nil {
		var dad *link.DADError
		if errors.As(err, &dad) {
			// Another host holds it: the rollback's IPAM DEL says so.
			ipam.duplicates = append(ipam.duplicates, dad.Addr.Addr())
		}
		return err
	}
	if err := setUpMasquerade(conf, att, plan, &rollback); err != nil {
		return err
	}
	// A result the runtime cannot read is a failed ADD: roll back.
	if err := types.PrintResult(att.result(result, host, plan), conf.CNIVersion); err != nil {
		return fmt.Errorf("print result: %w", err)
	}
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

// deleteAttachment removes the attachment's veth (on the host, and in the
// netns if that still exists) and its nftables state. Every step is tried
// even when one fails: each error is reported, and a DEL the runtime
// retries has less left to do.
func deleteAttachment(conf *bridgeconf.NetConf, args *skel.CmdArgs) error {
	att := newAttachment(conf, args)
	if conf.MACSpoofChk {
		// Recomputed from the same input as ADD's; when that fails, the
		// MAC stays nil and the port alone is removed from the check.
		_ = att.deriveMAC(conf, args)
	}
	errs := deleteHostSide(conf, att)
	errs = append(errs, deleteContainerEnd(att))
	return joinErrors(errs...)
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := bridgeconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "required prevResult missing", "")
	}
	record, err := ipamCheck(context.Background(), conf.IPAM.Type, args)
	if err != nil {
		return err
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w", err)
	}
	att := newAttachment(conf, args)
	if prev, err = withRecordedIPs(prev, att, record); err != nil {
		return err
	}
	want, err := expectedState(conf, prev, att)
	if err != nil {
		return err
	}
	if err := checkHost(conf, att, want); err != nil {
		return err
	}
	return checkContainer(conf, att, want)
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

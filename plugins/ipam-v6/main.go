// Command ipam-v6 is v6cni's CNI IPAM plugin for cluster-wide pools. It is a
// thin client: it validates the ipam section, forwards the call to ipamd over
// its unix socket and prints ipamd's answer as a CNI result or error. All
// address state lives in ipamd (and etcd); this binary links neither.
package main

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
		GC:     cmdGC,
	}, cniversion.All, "ipam-v6 "+version+": IPv6-first IPAM from cluster-wide pools (v6cni)")
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, client, err := load(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamapi.DefaultTimeout)
	defer cancel()
	result, err := client.Add(ctx, request(conf, args))
	if err != nil {
		return err
	}
	return types.PrintResult(result, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, client, err := load(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamapi.DefaultTimeout)
	defer cancel()
	return client.Del(ctx, request(conf, args))
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, client, err := load(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamapi.DefaultTimeout)
	defer cancel()
	return client.Check(ctx, request(conf, args))
}

// cmdStatus answers 0 only when ipamd answers that it can serve this network;
// an unreachable ipamd is code 50, not 11: STATUS reports, it is not retried.
func cmdStatus(args *skel.CmdArgs) error {
	conf, client, err := load(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamapi.DefaultTimeout)
	defer cancel()
	if err := client.Status(ctx, request(conf, args)); err != nil {
		if e, ok := err.(*types.Error); ok && e.Code == types.ErrTryAgainLater {
			return types.NewError(types.ErrPluginNotAvailable, e.Msg, e.Details)
		}
		return err
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	conf, client, err := load(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamapi.DefaultTimeout)
	defer cancel()
	return client.GC(ctx, request(conf, args))
}

// load validates the configuration here, before any round trip, so a bad
// config is a code-7 error even when ipamd is down.
func load(args *skel.CmdArgs) (*ipamconf.NetConf, *ipamapi.Client, error) {
	conf, err := ipamconf.Parse(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	return conf, ipamapi.NewClient(conf.IPAM.Socket), nil
}

func request(conf *ipamconf.NetConf, args *skel.CmdArgs) *ipamapi.Request {
	return &ipamapi.Request{
		Network:     conf.Name,
		ContainerID: args.ContainerID,
		IfName:      args.IfName,
		Netns:       args.Netns,
		Args:        args.Args,
		Config:      args.StdinData,
	}
}

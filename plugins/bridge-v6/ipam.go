package main

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/plugin/delegate"
	"github.com/v6cni/v6cni/pkg/plugin/ipamplugin"
)

// inProcessIPAM are v6cni's own IPAM plugins. For them bridge-v6 sends the
// request to ipamd itself — exactly what the plugin would send — instead
// of exec'ing the plugin to send it: an exec of a Go binary costs 2–3 ms
// here, a third of an ADD. Any other IPAM type is exec'd as the CNI spec
// describes. A failed verb run in process is logged as the plugin would log
// it (stderr, and the config's logFile): ipamplugin.LogFailure.
var inProcessIPAM = map[string]bool{"ipam-v6": true, "pd-ipam": true}

// ipamReply is the answer of the IPAM plugin's ADD.
type ipamReply struct {
	result types.Result
	err    error
}

// startIPAMAdd starts the IPAM ADD in the background; its answer arrives
// on the channel. For v6cni's own IPAM types the configuration is
// validated first, so a bad one is refused before any kernel work; other
// IPAM plugins validate their own when they run.
func startIPAMAdd(ctx context.Context, typ string, args *skel.CmdArgs) (<-chan ipamReply, error) {
	add := func(ctx context.Context) (types.Result, error) { return delegate.Add(ctx, typ, args.StdinData) }
	if inProcessIPAM[typ] {
		own, err := ipamplugin.PrepareAdd(args)
		if err != nil {
			ipamplugin.LogFailure(typ, "ADD", args, err)
			return nil, err
		}
		add = func(ctx context.Context) (types.Result, error) {
			r, err := own(ctx)
			if err != nil {
				ipamplugin.LogFailure(typ, "ADD", args, err)
				return nil, err
			}
			return r, nil
		}
	}
	done := make(chan ipamReply, 1)
	go func() {
		r, err := add(ctx)
		done <- ipamReply{r, err}
	}()
	return done, nil
}

// ipamVerb runs verb, one without a result (DEL, CHECK, STATUS, GC): in
// process for v6cni's own IPAM types, else by exec.
func ipamVerb(ctx context.Context, typ, verb string, args *skel.CmdArgs,
	own func(context.Context, *skel.CmdArgs) error, exec func(context.Context, string, []byte) error) error {
	if inProcessIPAM[typ] {
		err := own(ctx, args)
		if err != nil {
			ipamplugin.LogFailure(typ, verb, args, err)
		}
		return err
	}
	return exec(ctx, typ, args.StdinData)
}

// ipamCheck runs IPAM's CHECK. For v6cni's own IPAM types it returns the
// attachment's addresses as ipamd's record holds them (nil from an ipamd
// that does not say, or for another IPAM type: prevResult's are checked).
func ipamCheck(ctx context.Context, typ string, args *skel.CmdArgs) (*ipamapi.CheckResult, error) {
	if !inProcessIPAM[typ] {
		return nil, delegate.Check(ctx, typ, args.StdinData)
	}
	r, err := ipamplugin.CheckState(ctx, args)
	if err != nil {
		ipamplugin.LogFailure(typ, "CHECK", args, err)
		return nil, err
	}
	return r, nil
}

// Package ipamplugin is the body of v6cni's IPAM plugins (ipam-v6, pd-ipam):
// validate the ipam section, forward the call to ipamd over its unix
// socket, print ipamd's answer as a CNI result or error. All address state
// and policy live in ipamd; a plugin links neither etcd nor gRPC.
package ipamplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/macaddr"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
)

// Funcs are the CNI verbs of an IPAM plugin named name, for
// skel.PluginMainFuncs. A failed verb is logged to stderr and, when the
// network config sets logFile, appended to that file; success is silent.
func Funcs(name string) skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    logged(name, "ADD", cmdAdd),
		Del:    logged(name, "DEL", cmdDel),
		Check:  logged(name, "CHECK", cmdCheck),
		Status: logged(name, "STATUS", cmdStatus),
		GC:     logged(name, "GC", cmdGC),
	}
}

// logged reports fn's error on stderr (runtimes keep a plugin's stderr in
// their logs) and in the config's logFile, if any.
func logged(name, verb string, fn func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		err := fn(args)
		if err != nil {
			LogFailure(name, verb, args, err)
		}
		return err
	}
}

// LogFailure writes the line an IPAM plugin named name writes when verb
// fails: time, plugin, verb, network, container ID, ifname and error, on
// stderr and appended to the file named by the config's top-level logFile,
// if set. bridge-v6 calls it when it runs an IPAM verb in process, so the
// file gets what the exec'd plugin would have written. A logFile that
// cannot be written is said on stderr: the operator asked for that file.
func LogFailure(name, verb string, args *skel.CmdArgs, err error) {
	var lf struct {
		Name    string `json:"name"`
		LogFile string `json:"logFile"`
	}
	// Best effort: a config that is not JSON has its own error, logged
	// here without a network name.
	_ = json.Unmarshal(args.StdinData, &lf)
	line := fmt.Sprintf("%s %s %s: network %q container %q ifname %q: %v\n",
		time.Now().UTC().Format(time.RFC3339), name, verb, lf.Name, args.ContainerID, args.IfName, err)
	fmt.Fprint(os.Stderr, line)
	if lf.LogFile == "" {
		return
	}
	if werr := appendLine(lf.LogFile, line); werr != nil {
		fmt.Fprintf(os.Stderr, "%s %s: logFile: %v\n", name, verb, werr)
	}
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line)
	return errors.Join(err, f.Close())
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := ipamconf.Parse(args.StdinData)
	if err != nil {
		return err
	}
	result, err := Add(context.Background(), args)
	if err != nil {
		return err
	}
	return types.PrintResult(result, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error    { return Del(context.Background(), args) }
func cmdCheck(args *skel.CmdArgs) error  { return Check(context.Background(), args) }
func cmdStatus(args *skel.CmdArgs) error { return Status(context.Background(), args) }
func cmdGC(args *skel.CmdArgs) error     { return GC(context.Background(), args) }

// Add asks ipamd for the attachment's addresses. It is the IPAM plugins'
// ADD, and what bridge-v6 does itself for v6cni's IPAM types instead of
// exec'ing a plugin to do it (one exec less per container).
func Add(ctx context.Context, args *skel.CmdArgs) (*current.Result, error) {
	add, err := PrepareAdd(args)
	if err != nil {
		return nil, err
	}
	return add(ctx)
}

// PrepareAdd validates the configuration (a code-7 error naming the field
// when it is bad) and returns the ADD, ready to send: a caller can refuse
// a bad config before any other work and run the round trip to ipamd
// beside its own.
func PrepareAdd(args *skel.CmdArgs) (func(context.Context) (*current.Result, error), error) {
	conf, client, err := load(args)
	if err != nil {
		return nil, err
	}
	req := request(conf, args)
	if req.Attachment, err = Attachment(conf, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context) (*current.Result, error) {
		ctx, cancel := context.WithTimeout(ctx, ipamapi.DefaultTimeout)
		defer cancel()
		return client.Add(ctx, req)
	}, nil
}

// Del releases the attachment's addresses.
func Del(ctx context.Context, args *skel.CmdArgs) error {
	return call(ctx, args, (*ipamapi.Client).Del)
}

// DelDuplicates is Del for the rollback of an ADD whose duplicate address
// detection found dups (addresses IPAM gave it) in use by another host on
// the link: ipamd keeps them out of use for the network's
// ipam.duplicateQuarantine instead of freeing them, so the next ADD does
// not get them again (bridge-v6 on a provider network calls it).
func DelDuplicates(ctx context.Context, args *skel.CmdArgs, dups []netip.Addr) error {
	conf, client, err := load(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ipamapi.DefaultTimeout)
	defer cancel()
	req := request(conf, args)
	req.Duplicates = dups
	return client.Del(ctx, req)
}

// Check verifies that ipamd still holds the attachment's addresses.
func Check(ctx context.Context, args *skel.CmdArgs) error {
	return call(ctx, args, (*ipamapi.Client).Check)
}

// CheckState is Check, returning the attachment's addresses as ipamd's
// record holds them: after a renumbering they are no longer prevResult's
// (see ipamapi.CheckResult). bridge-v6 checks the container against them.
func CheckState(ctx context.Context, args *skel.CmdArgs) (*ipamapi.CheckResult, error) {
	conf, client, err := load(args)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, ipamapi.DefaultTimeout)
	defer cancel()
	return client.CheckState(ctx, request(conf, args))
}

// Status answers 0 only when ipamd answers that it can serve this network;
// an unreachable ipamd is code 50, not 11: STATUS reports, it is not retried.
func Status(ctx context.Context, args *skel.CmdArgs) error {
	err := call(ctx, args, (*ipamapi.Client).Status)
	var e *types.Error
	if errors.As(err, &e) && e.Code == types.ErrTryAgainLater {
		return types.NewError(types.ErrPluginNotAvailable, e.Msg, e.Details)
	}
	return err
}

// GC releases the network's attachments the runtime no longer lists.
func GC(ctx context.Context, args *skel.CmdArgs) error {
	return call(ctx, args, (*ipamapi.Client).GC)
}

func call(ctx context.Context, args *skel.CmdArgs, verb func(*ipamapi.Client, context.Context, *ipamapi.Request) error) error {
	conf, client, err := load(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ipamapi.DefaultTimeout)
	defer cancel()
	return verb(client, ctx, request(conf, args))
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

// Attachment is what ipamd needs to know of the main plugin's attachment
// for an ADD (nil when nothing): bridge-v6's bridge and ipv6Mode when the
// container configures its address itself, and the MAC bridge-v6 gives the
// container interface (macaddr.ForAttachment, the function bridge-v6 sets
// it with) when the address depends on it (eui64 addressing, slaac) or
// DHCPv6 must recognise the client. IPAM receives the main plugin's whole
// config, so bridge-v6's keys are read here, on the plugin side; ipamd
// only validates what it is told.
func Attachment(conf *ipamconf.NetConf, args *skel.CmdArgs) (*ipamapi.Attachment, error) {
	var at ipamapi.Attachment
	var head struct {
		Type     string `json:"type"`
		IPv6Mode any    `json:"ipv6Mode"`
	}
	// The common case (another main plugin, or static mode) is decided
	// without parsing bridge-v6's whole config.
	provider := false
	if json.Unmarshal(args.StdinData, &head) == nil && head.Type == "bridge-v6" {
		if m, ok := head.IPv6Mode.(string); head.IPv6Mode != nil && (!ok || ipamapi.IPv6Mode(m).SelfConfiguring()) {
			bc, err := bridgeconf.Parse(args.StdinData)
			if err != nil {
				return nil, err
			}
			// On a provider network the upstream routers serve RAs and
			// DHCPv6: ipamd is told the MAC only, and serves nothing
			// on the bridge.
			provider = bc.Provider != nil
			if bc.SelfConfiguring() && !provider {
				at.Bridge, at.IPv6Mode = bc.Bridge, ipamapi.IPv6Mode(bc.IPv6Mode)
			}
		}
	}
	if conf.IPAM.Addressing == ipamconf.EUI64 || at.IPv6Mode != "" || provider {
		mac, err := macaddr.ForAttachment(args.StdinData, args.Args, conf.Name, args.ContainerID, args.IfName)
		if err != nil {
			return nil, err
		}
		at.MAC = mac.String()
	}
	if at == (ipamapi.Attachment{}) {
		return nil, nil
	}
	return &at, nil
}

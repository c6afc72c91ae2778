package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
	"github.com/v6cni/v6cni/pkg/plugin/delegate"
	"github.com/v6cni/v6cni/pkg/plugin/ipamplugin"
)

// pendingIPAM is ADD's IPAM ADD, running side by side with the kernel work
// that does not need its answer: an ADD is then as long as the longer of
// the two, not their sum.
type pendingIPAM struct {
	conf  *bridgeconf.NetConf
	args  *skel.CmdArgs
	done  <-chan ipamReply
	reply *ipamReply // once received
	// duplicates are addresses IPAM gave that duplicate address
	// detection found in use on the link: release quarantines them.
	duplicates []netip.Addr
}

func startIPAM(conf *bridgeconf.NetConf, args *skel.CmdArgs) (*pendingIPAM, error) {
	done, err := startIPAMAdd(context.Background(), conf.IPAM.Type, args)
	if err != nil {
		return nil, err
	}
	return &pendingIPAM{conf: conf, args: args, done: done}, nil
}

// wait returns IPAM's answer, waiting for it the first time.
func (p *pendingIPAM) wait() *ipamReply {
	if p.reply == nil {
		r := <-p.done
		p.reply = &r
	}
	return p.reply
}

// failed is the error of ADD when a kernel step failed with err while
// IPAM may still be running: IPAM's error wins (an unreachable ipamd is
// code 11, which runtimes retry), else the kernel's.
func (p *pendingIPAM) failed(err error) error {
	if r := p.wait(); r.err != nil {
		return r.err
	}
	return err
}

// plan waits for IPAM's answer and plans the attachment from it.
func (p *pendingIPAM) plan() (*current.Result, *plan, error) {
	reply := p.wait()
	if reply.err != nil {
		return nil, nil, reply.err
	}
	result, err := current.NewResultFromResult(reply.result)
	if err != nil {
		return nil, nil, fmt.Errorf("convert result of IPAM plugin %s: %w", p.conf.IPAM.Type, err)
	}
	pl, err := planAttachment(p.conf, result)
	if err != nil {
		return nil, nil, err
	}
	return result, pl, nil
}

// release is the undo of the IPAM ADD: an IPAM DEL, only if it allocated
// (a refused IPAM ADD holds nothing), naming the duplicates found.
func (p *pendingIPAM) release() error {
	if p.wait().err != nil {
		return nil
	}
	del := ipamplugin.Del
	if len(p.duplicates) > 0 {
		// v6cni's IPAM keeps them out of use a while (another IPAM has
		// no way to be told: it frees them).
		del = func(ctx context.Context, args *skel.CmdArgs) error {
			return ipamplugin.DelDuplicates(ctx, args, p.duplicates)
		}
	}
	if err := ipamVerb(context.Background(), p.conf.IPAM.Type, "DEL", p.args, del, delegate.Del); err != nil {
		return fmt.Errorf("release the addresses (IPAM %s DEL): %w", p.conf.IPAM.Type, err)
	}
	return nil
}

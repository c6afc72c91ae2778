package ipamserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// This file: the node verbs, `ipamd nodes` and `ipamd node remove`. Any
// ipamd answers them for the whole cluster: they read and write etcd, not
// this node's allocator.

// nodes lists every node name the cluster knows (registered, alive,
// removed, or only named by blocks and attachments), read at one revision.
func (s *Server) nodes(ctx context.Context, _ *ipamapi.AdminRequest) (any, error) {
	infos, err := s.store.NodeInfos(ctx)
	if err != nil {
		return nil, err
	}
	local := s.alloc.Node()
	out := make([]ipamapi.NodeInfo, 0, len(infos))
	for _, in := range infos {
		out = append(out, nodeInfo(in, local))
	}
	return out, nil
}

func nodeInfo(in store.NodeInfo, local string) ipamapi.NodeInfo {
	n := ipamapi.NodeInfo{Name: in.Name, State: in.State(), Blocks: in.Blocks, Attachments: in.Attachments, Local: in.Name == local}
	if in.Node != nil {
		n.Epoch = in.Node.Epoch
		n.LastSeen, n.Started, n.Registered = rfc3339(in.Node.LastSeen), rfc3339(in.Node.Started), rfc3339(in.Node.Registered)
		n.MachineID = in.Node.MachineID
	}
	if in.Alive != nil {
		// The liveness record is the running ipamd's own word.
		n.Started, n.MachineID = rfc3339(in.Alive.Started), in.Alive.MachineID
	}
	if rm := in.Removed; rm != nil {
		n.Removed = &ipamapi.NodeTombstone{Epoch: rm.Epoch, At: rfc3339(rm.At), Reason: rm.Reason, Attachments: rm.Attachments, Blocks: rm.Blocks}
		if in.Node == nil {
			n.Epoch = rm.Epoch
		}
	}
	return n
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// removeNode decommissions a node (store.RemoveNode: one transaction
// deletes the registration, guarded by its epoch, then batches release
// what it held). It refuses, unless forced, a node whose ipamd is alive —
// its pods run and would lose their addresses — and the node of the ipamd
// answering — which would fence itself. Removing a removed node finishes
// what its removal left, if anything, and says it was removed already.
func (s *Server) removeNode(ctx context.Context, req *ipamapi.AdminRequest) (any, error) {
	start := time.Now()
	name := req.Node
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r == '/' || unicode.IsControl(r) || unicode.IsSpace(r) }) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("node remove: node name %q: want a node name as `ipamd nodes` lists it", name), "")
	}
	local := s.alloc.Node()
	reg, err := s.store.NodeRegistration(ctx, name)
	if err != nil {
		return nil, err
	}
	tomb, err := s.store.Tombstone(ctx, name)
	if err != nil {
		return nil, err
	}
	var alive *store.Alive
	if reg != nil {
		all, err := s.store.AliveNodes(ctx)
		if err != nil {
			return nil, err
		}
		for i := range all {
			if all[i].Node == name {
				alive = &all[i]
			}
		}
	}
	if reg != nil && !req.Force {
		if name == local {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("node remove: %s is this ipamd's own node: removing it fences this ipamd, which then gives up every address and block the node holds (its pods lose their addresses); run the removal on another node, or use --force", name), "")
		}
		if alive != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("node remove: node %s is alive (its ipamd holds its liveness lease; last seen %s, %s ago): removing it takes the addresses of the pods it runs; stop its ipamd and wait until `ipamd nodes` shows it dead, or use --force",
					name, rfc3339(reg.LastSeen), time.Since(reg.LastSeen).Round(time.Second)), "")
		}
	}
	reason := "ipamd node remove on node " + local
	if req.Force {
		reason += " --force"
	}
	if r := strings.TrimSpace(req.Reason); r != "" {
		reason += ": " + r
	}
	rm, err := s.store.RemoveNode(ctx, name, reason)
	took := time.Since(start)
	out := ipamapi.NodeRemoval{Node: name, Forced: req.Force, WasAlive: alive != nil, Took: took.Round(10 * time.Microsecond).String(), TookSeconds: took.Seconds()}
	switch {
	case errors.Is(err, store.ErrNotRegistered):
		if tomb == nil {
			// Removed meanwhile by another call: that call wrote it.
			if tomb, err = s.store.Tombstone(ctx, name); err != nil {
				return nil, err
			}
		}
		if tomb == nil {
			return nil, types.NewError(types.ErrUnknownContainer,
				fmt.Sprintf("node remove: no node %s: it is not registered, has no tombstone and holds no block or attachment (`ipamd nodes` lists the nodes)", name), "")
		}
		out.AlreadyRemoved, out.Epoch, out.At, out.Reason = true, tomb.Epoch, rfc3339(tomb.At), tomb.Reason
		out.Message = fmt.Sprintf("node %s was already removed at %s (%s); nothing left to release", name, out.At, tomb.Reason)
		s.log.Info("node remove: already removed", "node", name, "removedAt", out.At, "reason", tomb.Reason)
		return out, nil
	case err != nil:
		return nil, err
	}
	out.Epoch, out.At, out.Reason, out.Revision = rm.Epoch, rfc3339(rm.At), rm.Reason, rm.Revision
	// RemoveNode's counts add up every run of the removal; this call's
	// share is what the tombstone it started from did not count yet.
	out.Attachments, out.Blocks = rm.Attachments, rm.Blocks
	if reg == nil && tomb != nil {
		out.AlreadyRemoved = true
		out.Attachments -= tomb.Attachments
		out.Blocks -= tomb.Blocks
	}
	what := fmt.Sprintf("released %d attachment(s) and %d block(s) in %s", out.Attachments, out.Blocks, out.Took)
	switch {
	case out.AlreadyRemoved:
		out.Message = fmt.Sprintf("node %s was already removed at %s (%s); finished its release: %s", name, out.At, out.Reason, what)
	case reg == nil:
		out.Message = fmt.Sprintf("node %s was not registered; %s", name, what)
	case out.WasAlive:
		out.Message = fmt.Sprintf("node %s (epoch %d) removed while alive (--force): %s; its ipamd is fenced and withdraws its routes", name, out.Epoch, what)
	default:
		out.Message = fmt.Sprintf("node %s (epoch %d) removed: %s", name, out.Epoch, what)
	}
	s.log.Info("node removed", "node", name, "epoch", out.Epoch, "forced", req.Force, "wasAlive", out.WasAlive,
		"alreadyRemoved", out.AlreadyRemoved, "attachments", out.Attachments, "blocks", out.Blocks, "reason", reason, "duration", took)
	return out, nil
}

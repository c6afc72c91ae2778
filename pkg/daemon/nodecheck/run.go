package nodecheck

import (
	"context"
	"slices"
	"strings"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// Run is `ipamd check` as a node's ipamd answers it: the checks of the
// whole key space (store.Check, store.CheckNodes) and this node's own
// (Check against host), all on one snapshot, in one report. Problems are
// sorted by node, then as store.Check sorts them; Nodes by name.
//
// It runs in ipamd rather than in the CLI because only ipamd is sure to
// run where the node's bridges are (the host's network namespace) and
// knows the node's name and the netns test gc uses; the CLI may run in a
// container or on another machine with --socket pointing at a forwarded
// socket, where the kernel it sees is not the node's.
func Run(ctx context.Context, st *store.Store, node string, host Host) (*ipamapi.Consistency, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return Report(snap, node, host)
}

// Report checks snap as Run does.
func Report(snap *store.Snapshot, node string, host Host) (*ipamapi.Consistency, error) {
	local, err := Check(snap, node, host)
	if err != nil {
		return nil, err
	}
	states, nodeProblems := store.CheckNodes(snap)
	problems := append(append(store.Check(snap), nodeProblems...), local...)
	store.SortProblems(problems)
	// Stable: within a node, the order SortProblems gave.
	slices.SortStableFunc(problems, func(x, y store.Problem) int { return strings.Compare(x.Node, y.Node) })

	out := &ipamapi.Consistency{
		Revision: snap.Revision, Blocks: len(snap.Blocks), Addrs: len(snap.Addrs),
		Handles: len(snap.Handles), Stickies: len(snap.Stickies),
		Problems: make([]ipamapi.Problem, 0, len(problems)),
		Node:     node,
		Nodes:    make([]ipamapi.NodeCheck, 0, len(states)),
	}
	for _, p := range problems {
		out.Problems = append(out.Problems, ipamapi.Problem{Kind: p.Kind, Key: p.Key, Msg: p.Msg, Node: p.Node})
	}
	for _, s := range states {
		out.Nodes = append(out.Nodes, ipamapi.NodeCheck{
			Name: s.Name, State: s.State, Epoch: s.Epoch, Blocks: s.Blocks, Attachments: s.Attachments, Note: s.Note,
		})
	}
	return out, nil
}

package store

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file: the records checked against the node registrations, for
// `ipamd check`. Kept apart from Check, whose callers (the allocator's and
// the model's tests) write blocks and handles without registering nodes.

// The states of a node, as CheckNodes reports them.
const (
	// NodeAlive: registered, and its ipamd runs (a liveness record).
	NodeAlive = "alive"
	// NodeDead: registered, no liveness record. Not a problem by itself:
	// a dead node's blocks are held until it is removed.
	NodeDead = "dead"
	// NodeRemoved: not registered, a tombstone says it was removed, and
	// records of it are left (an unfinished removal).
	NodeRemoved = "removed"
	// NodeUnregistered: not registered and no tombstone, yet records name
	// it.
	NodeUnregistered = "unregistered"
)

// NodeState is what CheckNodes says of one node.
type NodeState struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Epoch is the registration's epoch, 0 when not registered.
	Epoch int64 `json:"epoch,omitempty"`
	// Blocks and Attachments count the node's blocks and handles.
	Blocks      int `json:"blocks"`
	Attachments int `json:"attachments"`
	// Note explains the state when it needs explaining (dead, removed).
	Note string `json:"note,omitempty"`
}

// CheckNodes checks snap's records against the node registrations: every
// block, handle, sticky record and PD binding names a registered node
// (kinds "block-no-node", "handle-no-node", "sticky-no-node",
// "pd-no-node"). It returns the state of every registered node and of every
// node a record names, sorted by name, and the problems, sorted as Check
// sorts them. Removed nodes of which nothing is left are not listed.
func CheckNodes(snap *Snapshot) ([]NodeState, []Problem) {
	states := map[string]*NodeState{}
	state := func(name string) *NodeState {
		if s, ok := states[name]; ok {
			return s
		}
		s := &NodeState{Name: name, State: NodeUnregistered}
		states[name] = s
		return s
	}
	registered := map[string]bool{}
	for _, n := range snap.Nodes {
		registered[n.Name] = true
		s := state(n.Name)
		s.State, s.Epoch = NodeDead, n.Epoch
		if !n.LastSeen.IsZero() {
			s.Note = fmt.Sprintf("no liveness record (last seen %s); its blocks are held until `ipamd node remove %s`",
				n.LastSeen.UTC().Format(time.RFC3339), n.Name)
		} else {
			s.Note = fmt.Sprintf("no liveness record; its blocks are held until `ipamd node remove %s`", n.Name)
		}
	}
	for _, a := range snap.Alive {
		if s := state(a.Node); registered[a.Node] {
			s.State, s.Note = NodeAlive, ""
		}
	}
	tombs := map[string]Removed{}
	for _, r := range snap.Removed {
		tombs[r.Node] = r
	}

	var out []Problem
	// unregistered reports a record of a node that is not registered.
	unregistered := func(kind, key, node, what string) {
		if node == "" {
			out = append(out, Problem{Kind: kind, Key: key, Msg: what + " names no node"})
			return
		}
		state(node)
		msg := fmt.Sprintf("%s of node %s, which is not registered", what, node)
		if r, ok := tombs[node]; ok {
			msg += fmt.Sprintf(" (removed %s: %s; the removal did not finish)", r.At.UTC().Format(time.RFC3339), r.Reason)
		}
		out = append(out, Problem{Kind: kind, Key: key, Node: node, Msg: msg})
	}
	for _, b := range snap.Blocks {
		if b.Node != "" {
			state(b.Node).Blocks++
		}
		if !registered[b.Node] {
			unregistered("block-no-node", BlockKey(b.CIDR), b.Node, "block "+b.CIDR.String())
		}
	}
	for _, h := range snap.Handles {
		if h.Node == "" {
			continue
		}
		state(h.Node).Attachments++
		if !registered[h.Node] {
			unregistered("handle-no-node", HandleKey(h.AttachmentID), h.Node, "attachment "+h.AttachmentID.String())
		}
	}
	for _, st := range snap.Stickies {
		if st.Node != "" && !registered[st.Node] {
			unregistered("sticky-no-node", StickyKey(st.Network, st.Pod, st.IfName), st.Node, "sticky record of pod "+st.Pod)
		}
	}
	for _, key := range snap.PD {
		node, _, _ := strings.Cut(strings.TrimPrefix(key, pdPrefix), "/")
		if !registered[node] {
			unregistered("pd-no-node", key, node, "DHCPv6-PD binding")
		}
	}

	for name, s := range states {
		if registered[name] {
			continue
		}
		if r, ok := tombs[name]; ok {
			s.State = NodeRemoved
			s.Note = fmt.Sprintf("removed %s: %s", r.At.UTC().Format(time.RFC3339), r.Reason)
		}
		if slices.ContainsFunc(snap.Alive, func(a Alive) bool { return a.Node == name }) {
			// Its ipamd still runs: fencing keeps it from taking anything.
			s.Note = strings.TrimPrefix(s.Note+"; its ipamd still runs (liveness record)", "; ")
		}
	}
	nodes := make([]NodeState, 0, len(states))
	for _, s := range states {
		nodes = append(nodes, *s)
	}
	slices.SortFunc(nodes, func(x, y NodeState) int { return strings.Compare(x.Name, y.Name) })
	SortProblems(out)
	return nodes, out
}

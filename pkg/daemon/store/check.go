package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file: the consistency check of the whole key space. It is what
// `ipamd check`, the randomized model test and the fault scenarios assert:
// every invariant the transactions are meant to keep, checked on one
// snapshot (one read at one revision).

// Snapshot is every record under Prefix at one revision.
type Snapshot struct {
	Revision int64
	Pools    []Pool
	Blocks   []Block
	// Addrs maps each taken address to its holder.
	Addrs    map[netip.Addr]AttachmentID
	Handles  []Handle
	Stickies []Sticky
	// Quarantines are the quarantined addresses (quarantine.go).
	Quarantines []Quarantined
	// Nodes are the registrations, each with its Epoch.
	Nodes []Node
	// Alive are the liveness records. A registration under a lease (written
	// by an ipamd from before the liveness records) counts as its own.
	Alive []Alive
	// Removed are the tombstones of removed nodes.
	Removed []Removed
	// PD lists the keys of the nodes' DHCPv6-PD bindings: the key names the
	// node, the value is the PD client's own format.
	PD []string
	// PDClusters are the segments of cluster delegation (pdcluster.go),
	// sorted by segment.
	PDClusters []PDCluster
	// Elections are the candidates' keys of the etcd elections under
	// /v6cni/election/ (PD segments, the dead-node release).
	Elections []Candidate
	// Unknown lists keys under Prefix that no record kind claims: a newer
	// ipamd's, or debris. Not a Problem; `ipamd check` may show them.
	Unknown []string
	// Undecodable lists keys whose value could not be decoded.
	Undecodable []string
}

// PDCluster is what a snapshot holds of one segment's cluster delegation.
type PDCluster struct {
	Segment string
	// Identity is nil when the segment has none (or it is undecodable).
	Identity *PDIdentity
	// Binding is the raw binding (the PD client's format plus the
	// leader's fields), nil when none is stored.
	Binding []byte
}

// Candidate is one key of an etcd election (concurrency.Election): the
// candidate with the lowest CreateRevision of an election leads it.
type Candidate struct {
	// Election is the election's prefix, e.g. ElectionPrefixPD("rack1").
	Election       string
	Key            string
	Value          string // what the candidate campaigned with: its node name
	CreateRevision int64
}

// snapshotPage bounds the keys of one read of Snapshot: a cluster of
// 150,000 attachments is 300,000 keys, too many for one gRPC message and
// one allocation. A variable for the tests.
var snapshotPage int64 = 5000

// Snapshot reads the whole key space at one revision, so the records it
// returns are consistent with each other: in pages, each read at the
// revision of the first. If etcd compacts that revision meanwhile, it
// starts again at a new one.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	for try := 0; ; try++ {
		snap, err := s.snapshot(ctx)
		if errors.Is(err, rpctypes.ErrCompacted) && try < 3 {
			continue
		}
		return snap, err
	}
}

func (s *Store) snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Addrs: make(map[netip.Addr]AttachmentID)}
	from, end := Prefix, clientv3.GetPrefixRangeEnd(Prefix)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(snapshotPage)}
		if snap.Revision != 0 {
			opts = append(opts, clientv3.WithRev(snap.Revision))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, fmt.Errorf("read %s at revision %d: %w", Prefix, snap.Revision, err)
		}
		if snap.Revision == 0 {
			snap.Revision = resp.Header.Revision
		}
		snap.add(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return snap, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// add decodes records into snap.
func (snap *Snapshot) add(kvs []*mvccpb.KeyValue) {
	for _, kv := range kvs {
		key := string(kv.Key)
		var err error
		switch {
		case strings.HasPrefix(key, poolsPrefix):
			err = appendJSON(&snap.Pools, kv.Value)
		case strings.HasPrefix(key, blocksPrefix):
			err = appendJSON(&snap.Blocks, kv.Value)
		case strings.HasPrefix(key, handlesPrefix):
			err = appendJSON(&snap.Handles, kv.Value)
		case strings.HasPrefix(key, stickyPrefix):
			err = appendJSON(&snap.Stickies, kv.Value)
		case strings.HasPrefix(key, quarantinePrefix):
			err = appendJSON(&snap.Quarantines, kv.Value)
		case strings.HasPrefix(key, nodesPrefix):
			if err = appendJSON(&snap.Nodes, kv.Value); err == nil {
				n := &snap.Nodes[len(snap.Nodes)-1]
				n.Epoch = kv.CreateRevision
				if kv.Lease != 0 {
					snap.Alive = append(snap.Alive, Alive{Node: n.Name, Epoch: n.Epoch, Started: n.Started})
				}
			}
		case strings.HasPrefix(key, alivePrefix):
			err = appendJSON(&snap.Alive, kv.Value)
		case strings.HasPrefix(key, removedPrefix):
			err = appendJSON(&snap.Removed, kv.Value)
		case strings.HasPrefix(key, pdPrefix):
			snap.PD = append(snap.PD, key)
		case strings.HasPrefix(key, pdclusterPrefix):
			err = snap.addPDCluster(key, kv.Value)
		case strings.HasPrefix(key, electionPrefix):
			if i := strings.LastIndexByte(key, '/'); i > len(electionPrefix) {
				snap.Elections = append(snap.Elections, Candidate{Election: key[:i], Key: key, Value: string(kv.Value), CreateRevision: kv.CreateRevision})
			} else {
				snap.Unknown = append(snap.Unknown, key)
			}
		case strings.HasPrefix(key, netsvcPrefix):
			// Services' settings: read by ipamd at start, nothing to check.
		case strings.HasPrefix(key, addrsPrefix):
			var a netip.Addr
			if a, err = parseAddrKey(key); err == nil {
				var id AttachmentID
				if err = json.Unmarshal(kv.Value, &id); err == nil {
					snap.Addrs[a] = id
				}
			}
		default:
			snap.Unknown = append(snap.Unknown, key)
		}
		if err != nil {
			snap.Undecodable = append(snap.Undecodable, key)
		}
	}
}

// addPDCluster files a /v6cni/pdcluster/<segment>/<what> key under its
// segment (keys come sorted, so a segment's keys are adjacent).
func (snap *Snapshot) addPDCluster(key string, val []byte) error {
	seg, what, ok := strings.Cut(strings.TrimPrefix(key, pdclusterPrefix), "/")
	if !ok || ValidateSegment(seg) != nil || (what != "identity" && what != "binding") {
		snap.Unknown = append(snap.Unknown, key)
		return nil
	}
	if n := len(snap.PDClusters); n == 0 || snap.PDClusters[n-1].Segment != seg {
		snap.PDClusters = append(snap.PDClusters, PDCluster{Segment: seg})
	}
	c := &snap.PDClusters[len(snap.PDClusters)-1]
	if what == "binding" {
		c.Binding = val
		return nil
	}
	var id PDIdentity
	if err := json.Unmarshal(val, &id); err != nil {
		return err
	}
	c.Identity = &id
	return nil
}

func appendJSON[T any](out *[]T, val []byte) error {
	var v T
	if err := json.Unmarshal(val, &v); err != nil {
		return err
	}
	*out = append(*out, v)
	return nil
}

// Problem is one broken invariant of the key space.
type Problem struct {
	// Kind is a stable word for the invariant: "undecodable", "dangling-addr",
	// "addr-not-held", "addr-twice", "block-overlap", "addr-outside-block",
	// "addr-wrong-node", "block-no-pool".
	Kind string `json:"kind"`
	// Key names the record the problem is about.
	Key string `json:"key"`
	Msg string `json:"msg"`
	// Node is the node the problem belongs to ("" when it belongs to
	// none: an undecodable key, an address in no block), for `ipamd
	// check`'s report per node.
	Node string `json:"node,omitempty"`
}

// ProblemKinds are the kinds Check and CheckNodes report (ipamd's README
// explains each; a test keeps the two lists equal).
var ProblemKinds = []string{
	"undecodable", "dangling-addr", "addr-not-held", "addr-twice", "block-overlap", "addr-outside-block",
	"addr-wrong-node", "block-no-pool", "block-no-node", "handle-no-node", "sticky-no-node", "pd-no-node",
}

func (p Problem) String() string { return p.Kind + " " + p.Key + ": " + p.Msg }

// Check lists every broken invariant of snap, sorted, each naming the node
// it belongs to:
//
//   - every address key is held by an attachment whose handle (or a sticky
//     or quarantine record whose holder) lists that address;
//   - every address a live (not lost) handle, a sticky or a quarantine record lists is
//     held by it, and no address is listed by two of them;
//   - no two blocks overlap, and each belongs to a registered pool (pd
//     blocks excepted: their pool is the node's delegated prefix);
//   - every held address lies in a block owned by its attachment's node.
//
// It does not look at the node registrations: CheckNodes does.
func Check(snap *Snapshot) []Problem {
	var out []Problem
	add := func(kind, key, node, format string, args ...any) {
		out = append(out, Problem{Kind: kind, Key: key, Node: node, Msg: fmt.Sprintf(format, args...)})
	}
	for _, k := range snap.Undecodable {
		add("undecodable", k, "", "value is not valid JSON of its record")
	}

	blocks := slices.Clone(snap.Blocks)
	slices.SortFunc(blocks, func(x, y Block) int {
		if c := x.CIDR.Addr().Compare(y.CIDR.Addr()); c != 0 {
			return c
		}
		return x.CIDR.Bits() - y.CIDR.Bits()
	})
	// blockNode is the owner of the block holding a: the node a problem
	// about an address nobody (or everybody) claims belongs to.
	blockNode := func(a netip.Addr) string {
		if i := blockOf(blocks, a); i >= 0 {
			return blocks[i].Node
		}
		return ""
	}

	// Who lists each address: handles and sticky records.
	type lister struct {
		id   AttachmentID
		node string
	}
	listed := make(map[netip.Addr][]lister)
	for _, h := range snap.Handles {
		for _, ip := range h.IPs {
			a := ip.Address.Addr()
			if h.Lost && snap.Addrs[a] != h.AttachmentID {
				// A lost handle keeps its IPs for CHECK's message; those
				// of the lost prefix are released (MarkLost), not held.
				// Others (a pool address beside the delegated one) are.
				continue
			}
			listed[a] = append(listed[a], lister{h.AttachmentID, h.Node})
		}
	}
	for _, st := range snap.Stickies {
		for _, ip := range st.IPs {
			a := ip.Address.Addr()
			listed[a] = append(listed[a], lister{st.holder(), st.Node})
		}
	}

	for _, q := range snap.Quarantines {
		a := q.IP.Address.Addr()
		listed[a] = append(listed[a], lister{q.holder(), q.Node})
	}

	for a, ls := range listed {
		if len(ls) > 1 {
			ids := make([]string, len(ls))
			for i, l := range ls {
				ids[i] = l.id.String()
			}
			slices.Sort(ids)
			node := blockNode(a)
			if node == "" {
				node = ls[0].node
			}
			add("addr-twice", AddrKey(a), node, "listed by %d attachments: %s", len(ls), strings.Join(ids, ", "))
		}
		holder, ok := snap.Addrs[a]
		if !ok {
			for _, l := range ls {
				add("addr-not-held", AddrKey(a), l.node, "%s lists it, but no address key holds it", l.id)
			}
			continue
		}
		if !slices.ContainsFunc(ls, func(l lister) bool { return l.id == holder }) {
			add("addr-not-held", AddrKey(a), ls[0].node, "held by %s, but listed by %s", holder, ls[0].id)
		}
	}
	for a, holder := range snap.Addrs {
		if _, ok := listed[a]; !ok {
			add("dangling-addr", AddrKey(a), blockNode(a), "held by %s, which has no handle or sticky record listing it", holder)
		}
	}

	// Blocks: no overlap, a pool for each, each address inside one owned by
	// its attachment's node.
	for i := 1; i < len(blocks); i++ {
		// Sorted by first address: an overlap shows between neighbours or
		// a wide block and any later one it contains.
		for j := i - 1; j >= 0 && blocks[j].CIDR.Overlaps(blocks[i].CIDR); j-- {
			add("block-overlap", BlockKey(blocks[i].CIDR), blocks[i].Node, "overlaps block %s (node %s)", blocks[j].CIDR, blocks[j].Node)
		}
	}
	pools := make(map[string]bool, len(snap.Pools))
	for _, p := range snap.Pools {
		pools[p.Network] = true
	}
	for _, b := range blocks {
		if b.Source != "pd" && !pools[b.Network] {
			add("block-no-pool", BlockKey(b.CIDR), b.Node, "network %q has no registered pool", b.Network)
		}
	}
	for a, ls := range listed {
		i := blockOf(blocks, a)
		if i < 0 {
			add("addr-outside-block", AddrKey(a), ls[0].node, "listed by %s, in no claimed block", ls[0].id)
			continue
		}
		for _, l := range ls {
			if l.node != "" && l.node != blocks[i].Node {
				add("addr-wrong-node", AddrKey(a), l.node, "attachment %s is on node %s, block %s is node %s's",
					l.id, l.node, blocks[i].CIDR, blocks[i].Node)
			}
		}
	}
	SortProblems(out)
	return out
}

// SortProblems sorts problems by kind, key and message: the order Check
// and CheckNodes return them in.
func SortProblems(ps []Problem) {
	slices.SortFunc(ps, func(x, y Problem) int {
		if c := strings.Compare(x.Kind, y.Kind); c != 0 {
			return c
		}
		if c := strings.Compare(x.Key, y.Key); c != 0 {
			return c
		}
		if c := strings.Compare(x.Msg, y.Msg); c != 0 {
			return c
		}
		return strings.Compare(x.Node, y.Node)
	})
}

// blockOf is the index of the block of sorted that holds a, or -1: the last
// block starting at or before a (blocks are few per node, addresses many).
func blockOf(sorted []Block, a netip.Addr) int {
	i, _ := slices.BinarySearchFunc(sorted, a, func(b Block, a netip.Addr) int {
		if b.CIDR.Addr().Compare(a) <= 0 {
			return -1
		}
		return 1
	})
	for j := i - 1; j >= 0; j-- {
		if sorted[j].CIDR.Contains(a) {
			return j
		}
		if !sorted[j].CIDR.Overlaps(sorted[i-1].CIDR) {
			break
		}
	}
	return -1
}

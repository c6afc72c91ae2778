package store

import (
	"context"
	"encoding/json"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
)

func TestCheck(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	id := func(c string) AttachmentID { return AttachmentID{Network: "n", ContainerID: c, IfName: "eth0"} }
	ip := func(a string) IP {
		return IP{Address: netip.PrefixFrom(addr(a), 64), Block: pfx("2001:db8::/64")}
	}
	good := func() *Snapshot {
		return &Snapshot{
			Pools:   []Pool{{Network: "n"}},
			Blocks:  []Block{{CIDR: pfx("2001:db8::/64"), Node: "a", Network: "n"}},
			Addrs:   map[netip.Addr]AttachmentID{addr("2001:db8::2"): id("c1"), addr("2001:db8::3"): {Network: "n", ContainerID: "sticky:ns/p", IfName: "eth0"}},
			Handles: []Handle{{AttachmentID: id("c1"), Node: "a", IPs: []IP{ip("2001:db8::2")}}},
			Stickies: []Sticky{{Network: "n", Pod: "ns/p", IfName: "eth0", Node: "a",
				IPs: []IP{ip("2001:db8::3")}}},
		}
	}
	tests := []struct {
		name   string
		mutate func(s *Snapshot)
		kinds  []string
	}{
		{"consistent", func(*Snapshot) {}, nil},
		{"dangling address", func(s *Snapshot) { s.Addrs[addr("2001:db8::9")] = id("gone") }, []string{"dangling-addr"}},
		{"handle lists an address nobody holds", func(s *Snapshot) { delete(s.Addrs, addr("2001:db8::2")) }, []string{"addr-not-held"}},
		{"address held by another", func(s *Snapshot) { s.Addrs[addr("2001:db8::2")] = id("other") }, []string{"addr-not-held"}},
		{"two handles list one address", func(s *Snapshot) {
			s.Handles = append(s.Handles, Handle{AttachmentID: id("c2"), Node: "a", IPs: []IP{ip("2001:db8::2")}})
		}, []string{"addr-twice"}},
		{"lost handle holds nothing", func(s *Snapshot) {
			s.Handles = append(s.Handles, Handle{AttachmentID: id("c3"), Node: "a", Lost: true, IPs: []IP{ip("2001:db8::7")}})
		}, nil},
		{"overlapping blocks", func(s *Snapshot) {
			s.Blocks = append(s.Blocks, Block{CIDR: pfx("2001:db8::/120"), Node: "b", Network: "n"})
		}, []string{"addr-wrong-node", "addr-wrong-node", "block-overlap"}},
		{"address of another node's block", func(s *Snapshot) { s.Handles[0].Node = "b" }, []string{"addr-wrong-node"}},
		{"address in no block", func(s *Snapshot) { s.Blocks = nil }, []string{"addr-outside-block", "addr-outside-block"}},
		{"block without pool", func(s *Snapshot) { s.Pools = nil }, []string{"block-no-pool"}},
		{"pd block needs no pool", func(s *Snapshot) { s.Pools = nil; s.Blocks[0].Source = "pd" }, nil},
		{"undecodable", func(s *Snapshot) { s.Undecodable = []string{"/v6cni/handles/x"} }, []string{"undecodable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.mutate(s)
			var kinds []string
			for _, p := range Check(s) {
				kinds = append(kinds, p.Kind)
				if !slices.Contains(ProblemKinds, p.Kind) {
					t.Errorf("kind %q is not in ProblemKinds (nor in ipamd's README)", p.Kind)
				}
			}
			if !slices.Equal(kinds, tt.kinds) {
				t.Errorf("Check kinds = %v, want %v (%v)", kinds, tt.kinds, Check(s))
			}
		})
	}
}

// TestCheckNamesNodes: each problem names the node it belongs to, so that
// `ipamd check` can group them; an address in no block belongs to none.
func TestCheckNamesNodes(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	ip := func(a string) IP { return IP{Address: netip.PrefixFrom(addr(a), 64), Block: pfx("2001:db8::/64")} }
	id := func(c string) AttachmentID { return AttachmentID{Network: "n", ContainerID: c, IfName: "eth0"} }
	snap := &Snapshot{
		Pools:  []Pool{{Network: "n"}},
		Blocks: []Block{{CIDR: pfx("2001:db8::/64"), Node: "a", Network: "n"}, {CIDR: pfx("2001:db8:1::/64"), Node: "b", Network: "gone"}},
		Addrs: map[netip.Addr]AttachmentID{
			addr("2001:db8::9"):   id("nohandle"), // dangling, in a's block
			addr("2001:db8:9::1"): id("nowhere"),  // dangling, in no block
		},
		Handles: []Handle{{AttachmentID: id("c1"), Node: "c", IPs: []IP{ip("2001:db8::2")}}},
	}
	got := map[string]string{}
	for _, p := range Check(snap) {
		got[p.Kind+" "+p.Key] = p.Node
	}
	want := map[string]string{
		"dangling-addr " + AddrKey(addr("2001:db8::9")):     "a",
		"dangling-addr " + AddrKey(addr("2001:db8:9::1")):   "",
		"addr-not-held " + AddrKey(addr("2001:db8::2")):     "c",
		"addr-wrong-node " + AddrKey(addr("2001:db8::2")):   "c",
		"block-no-pool " + BlockKey(pfx("2001:db8:1::/64")): "b",
	}
	if len(got) != len(want) {
		t.Errorf("Check = %v, want %v", got, want)
	}
	for k, node := range want {
		if n, ok := got[k]; !ok || n != node {
			t.Errorf("%s: node %q (found %v), want %q", k, n, ok, node)
		}
	}
}

func TestCheckNodes(t *testing.T) {
	pfx := netip.MustParsePrefix
	at := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	good := func() *Snapshot {
		return &Snapshot{
			Nodes: []Node{{Name: "a", Epoch: 5}, {Name: "b", Epoch: 7, LastSeen: at}},
			Alive: []Alive{{Node: "a", Epoch: 5}},
			Blocks: []Block{{CIDR: pfx("2001:db8::/64"), Node: "a", Network: "n"},
				{CIDR: pfx("2001:db8:1::/64"), Node: "b", Network: "n"}},
			Handles:  []Handle{{AttachmentID: AttachmentID{"n", "c1", "eth0"}, Node: "a"}},
			Stickies: []Sticky{{Network: "n", Pod: "ns/p", IfName: "eth0", Node: "b"}},
			PD:       []string{PDKey("a", 1)},
			Removed:  []Removed{{Node: "old", At: at, Reason: "ipamd node remove"}},
		}
	}
	type node struct {
		name, state    string
		blocks, attach int
	}
	tests := []struct {
		name   string
		mutate func(s *Snapshot)
		nodes  []node
		kinds  []string
		keys   []string
	}{
		{"registered owners, b dead", func(*Snapshot) {}, []node{{"a", NodeAlive, 1, 1}, {"b", NodeDead, 1, 0}}, nil, nil},
		{"empty cluster", func(s *Snapshot) { *s = Snapshot{} }, []node{}, nil, nil},
		{"block of a node never registered", func(s *Snapshot) {
			s.Blocks = append(s.Blocks, Block{CIDR: pfx("2001:db8:2::/64"), Node: "x", Network: "n"})
		}, []node{{"a", NodeAlive, 1, 1}, {"b", NodeDead, 1, 0}, {"x", NodeUnregistered, 1, 0}},
			[]string{"block-no-node"}, []string{BlockKey(pfx("2001:db8:2::/64"))}},
		{"records left by an unfinished removal", func(s *Snapshot) {
			s.Handles = append(s.Handles, Handle{AttachmentID: AttachmentID{"n", "c9", "eth0"}, Node: "old"})
			s.Stickies = append(s.Stickies, Sticky{Network: "n", Pod: "ns/q", IfName: "eth0", Node: "old"})
			s.PD = append(s.PD, PDKey("old", 0xa))
		}, []node{{"a", NodeAlive, 1, 1}, {"b", NodeDead, 1, 0}, {"old", NodeRemoved, 0, 1}},
			[]string{"handle-no-node", "pd-no-node", "sticky-no-node"},
			[]string{HandleKey(AttachmentID{"n", "c9", "eth0"}), PDKey("old", 0xa), StickyKey("n", "ns/q", "eth0")}},
		{"registration gone under a live node", func(s *Snapshot) { s.Nodes = s.Nodes[1:] },
			[]node{{"a", NodeUnregistered, 1, 1}, {"b", NodeDead, 1, 0}},
			[]string{"block-no-node", "handle-no-node", "pd-no-node"},
			[]string{BlockKey(pfx("2001:db8::/64")), HandleKey(AttachmentID{"n", "c1", "eth0"}), PDKey("a", 1)}},
		{"block naming no node", func(s *Snapshot) {
			s.Blocks = append(s.Blocks, Block{CIDR: pfx("2001:db8:3::/64"), Network: "n"})
		}, []node{{"a", NodeAlive, 1, 1}, {"b", NodeDead, 1, 0}}, []string{"block-no-node"}, []string{BlockKey(pfx("2001:db8:3::/64"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.mutate(s)
			states, problems := CheckNodes(s)
			got := []node{}
			for _, n := range states {
				got = append(got, node{n.Name, n.State, n.Blocks, n.Attachments})
				if n.State == NodeDead && !strings.Contains(n.Note, "ipamd node remove "+n.Name) {
					t.Errorf("dead node %s: note %q does not say how to release its blocks", n.Name, n.Note)
				}
			}
			if !slices.Equal(got, tt.nodes) {
				t.Errorf("nodes = %+v, want %+v", got, tt.nodes)
			}
			var kinds, keys []string
			for _, p := range problems {
				kinds, keys = append(kinds, p.Kind), append(keys, p.Key)
				if !slices.Contains(ProblemKinds, p.Kind) {
					t.Errorf("kind %q is not in ProblemKinds (nor in ipamd's README)", p.Kind)
				}
			}
			if !slices.Equal(kinds, tt.kinds) || !slices.Equal(keys, tt.keys) {
				t.Errorf("problems = %v, want kinds %v keys %v", problems, tt.kinds, tt.keys)
			}
		})
	}
	// A removal's leftovers say so.
	s := good()
	s.Handles = append(s.Handles, Handle{AttachmentID: AttachmentID{"n", "c9", "eth0"}, Node: "old"})
	if _, ps := CheckNodes(s); len(ps) != 1 || !strings.Contains(ps[0].Msg, "the removal did not finish") || ps[0].Node != "old" {
		t.Errorf("leftover of a removal = %v", ps)
	}
}

// TestSnapshotNodeRecords: Snapshot reads the records of the nodes' lives
// from a real etcd: the epoch is the registration's CreateRevision, a
// registration under a lease (an ipamd from before the liveness records)
// counts as alive, and tombstones and PD bindings are there for
// CheckNodes.
func TestSnapshotNodeRecords(t *testing.T) {
	cli := etcdtest.Client(t)
	ctx := context.Background()
	put := func(key string, v any, opts ...clientv3.OpOption) int64 {
		t.Helper()
		val, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Put(ctx, key, string(val), opts...)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	epochA := put(NodeKey("a"), Node{Name: "a"})
	put(NodeKey("a"), Node{Name: "a", LastSeen: time.Now()}) // a heartbeat keeps the epoch
	put(AliveKey("a"), Alive{Node: "a", Epoch: epochA})
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	epochB := put(NodeKey("b"), Node{Name: "b"}, clientv3.WithLease(lease.ID))
	put(NodeKey("c"), Node{Name: "c"})
	put(RemovedKey("d"), Removed{Node: "d", Reason: "test"})
	if _, err := cli.Put(ctx, PDKey("d", 7), "not json: the PD client's own"); err != nil {
		t.Fatal(err)
	}

	snap, err := New(cli).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	epochs := map[string]int64{}
	for _, n := range snap.Nodes {
		epochs[n.Name] = n.Epoch
	}
	if epochs["a"] != epochA || epochs["b"] != epochB || len(epochs) != 3 {
		t.Errorf("epochs = %v, want a=%d b=%d and c", epochs, epochA, epochB)
	}
	if len(snap.Undecodable) != 0 || !slices.Equal(snap.PD, []string{PDKey("d", 7)}) || len(snap.Removed) != 1 {
		t.Errorf("snapshot: undecodable %v, pd %v, removed %v", snap.Undecodable, snap.PD, snap.Removed)
	}
	states, problems := CheckNodes(snap)
	got := map[string]string{}
	for _, s := range states {
		got[s.Name] = s.State
	}
	want := map[string]string{"a": NodeAlive, "b": NodeAlive, "c": NodeDead, "d": NodeRemoved}
	if !maps.Equal(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	if len(problems) != 1 || problems[0].Kind != "pd-no-node" || problems[0].Node != "d" {
		t.Errorf("problems = %v, want the PD binding of removed node d", problems)
	}
}

// TestSnapshotPages: a snapshot read in pages of a few keys is the one read
// in one page, at the same revision.
func TestSnapshotPages(t *testing.T) {
	cli := etcdtest.Client(t)
	fillCluster(t, cli, 2, 7)
	ctx := context.Background()
	whole, err := New(cli).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func(p int64) { snapshotPage = p }(snapshotPage)
	snapshotPage = 3
	paged, err := New(cli).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if paged.Revision != whole.Revision || len(paged.Handles) != 14 || len(paged.Blocks) != len(whole.Blocks) ||
		!maps.Equal(paged.Addrs, whole.Addrs) || len(paged.Nodes) != 2 || len(paged.Alive) != 2 || len(paged.Pools) != 1 {
		t.Errorf("paged snapshot differs: %+v\nwhole: %+v", paged, whole)
	}
}

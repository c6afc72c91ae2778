package nodecheck

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/link"
)

// fakeHost is a kernel with the given bridge addresses and live netns paths.
type fakeHost struct {
	netns map[string]bool
	addrs []link.BridgeAddr
	err   error
}

func (f *fakeHost) NetnsExists(path string) bool            { return f.netns[path] }
func (f *fakeHost) BridgeAddrs() ([]link.BridgeAddr, error) { return f.addrs, f.err }

func TestCheck(t *testing.T) {
	pfx := netip.MustParsePrefix
	ip := func(a, block string) store.IP {
		b := pfx(block)
		return store.IP{Address: netip.PrefixFrom(netip.MustParseAddr(a), b.Bits()), Block: b}
	}
	id := func(c string) store.AttachmentID {
		return store.AttachmentID{Network: "n", ContainerID: c, IfName: "eth0"}
	}
	snapshot := func() *store.Snapshot {
		return &store.Snapshot{
			Pools: []store.Pool{{Network: "n", Subnets: []netip.Prefix{pfx("2001:db8::/48"), pfx("10.9.0.0/16")}}},
			Blocks: []store.Block{
				{CIDR: pfx("2001:db8::/64"), Node: "me", Network: "n"},
				{CIDR: pfx("2001:db8:0:1::/64"), Node: "me", Network: "n"},
				{CIDR: pfx("10.9.0.0/24"), Node: "me", Network: "n"},
				{CIDR: pfx("2001:db8:0:2::/64"), Node: "other", Network: "n"},
			},
			Handles: []store.Handle{
				{AttachmentID: id("c1"), Node: "me", Netns: "/run/netns/c1", IPs: []store.IP{ip("2001:db8::2", "2001:db8::/64"), ip("10.9.0.2", "10.9.0.0/24")}},
				{AttachmentID: id("c2"), Node: "me", Netns: "/run/netns/c2", Bridge: "br1", Mode: "slaac", IPs: []store.IP{ip("2001:db8:0:1::2", "2001:db8:0:1::/64")}},
				{AttachmentID: id("c3"), Node: "other", Netns: "/run/netns/c3", IPs: []store.IP{ip("2001:db8:0:2::2", "2001:db8:0:2::/64")}},
			},
		}
	}
	host := func() *fakeHost {
		return &fakeHost{
			netns: map[string]bool{"/run/netns/c1": true, "/run/netns/c2": true},
			addrs: []link.BridgeAddr{
				{Link: "br0", Bridge: "br0", Addr: pfx("2001:db8::1/64")},
				{Link: "br0", Bridge: "br0", Addr: pfx("10.9.0.1/24")},
				{Link: "br0", Bridge: "br0", Addr: pfx("fd00::1/64")}, // the admin's, not v6cni's
				{Link: "br1.5", Bridge: "br1", Addr: pfx("2001:db8:0:1::1/64")},
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(*store.Snapshot, *fakeHost)
		kinds  []string
		keys   []string
		msg    string // a problem's message contains it
	}{
		{"clean", func(*store.Snapshot, *fakeHost) {}, nil, nil, ""},
		{"netns gone", func(_ *store.Snapshot, h *fakeHost) { delete(h.netns, "/run/netns/c2") },
			[]string{"netns-gone"}, []string{store.HandleKey(id("c2"))}, "/run/netns/c2 is gone"},
		{"lost or other node's attachment: no netns check", func(s *store.Snapshot, h *fakeHost) {
			s.Handles[0].Lost = true
			h.netns = map[string]bool{"/run/netns/c2": true}
		}, nil, nil, ""},
		{"gateway of a released block", func(_ *store.Snapshot, h *fakeHost) {
			h.addrs = append(h.addrs, link.BridgeAddr{Link: "br0", Bridge: "br0", Addr: pfx("2001:db8:0:7::1/64")})
		}, []string{"gateway-no-block"}, []string{store.BlockKey(pfx("2001:db8:0:7::/64"))}, "no block claims it"},
		{"gateway of another node's block, on a VLAN interface", func(_ *store.Snapshot, h *fakeHost) {
			h.addrs = append(h.addrs, link.BridgeAddr{Link: "br1.5", Bridge: "br1", Addr: pfx("2001:db8:0:2::1/64")})
		}, []string{"gateway-no-block"}, []string{store.BlockKey(pfx("2001:db8:0:2::/64"))}, "VLAN interface br1.5 of bridge br1"},
		{"an address in a pool that is no gateway", func(_ *store.Snapshot, h *fakeHost) {
			h.addrs = append(h.addrs, link.BridgeAddr{Link: "br0", Bridge: "br0", Addr: pfx("2001:db8:0:7::5/64")})
		}, nil, nil, ""},
		{"gateway missing on the recorded bridge", func(_ *store.Snapshot, h *fakeHost) {
			h.addrs[3].Bridge, h.addrs[3].Link = "br9", "br9"
		}, []string{"gateway-missing"}, []string{store.BlockKey(pfx("2001:db8:0:1::/64"))}, "bridge br1 has attachments"},
		{"gateway missing on every bridge", func(_ *store.Snapshot, h *fakeHost) { h.addrs = slices.Delete(h.addrs, 1, 2) },
			[]string{"gateway-missing"}, []string{store.BlockKey(pfx("10.9.0.0/24"))}, "no bridge carries gateway 10.9.0.1/24"},
		{"renumbered attachment: old and new address, both gateways", renumbered(true), nil, nil, ""},
		{"renumbered attachment: new gateway missing", renumbered(false),
			[]string{"gateway-missing"}, []string{store.BlockKey(pfx("2001:db8:bb00:1::/64"))}, "no bridge carries gateway 2001:db8:bb00:1::1/64"},
		{"no gateway at all: isGateway off", func(_ *store.Snapshot, h *fakeHost) { h.addrs = h.addrs[2:3] }, nil, nil, ""},
		{"empty cluster", func(s *store.Snapshot, h *fakeHost) { *s = store.Snapshot{}; h.addrs = h.addrs[2:3] }, nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, h := snapshot(), host()
			tt.mutate(s, h)
			ps, err := Check(s, "me", h)
			if err != nil {
				t.Fatal(err)
			}
			var kinds, keys []string
			for _, p := range ps {
				kinds, keys = append(kinds, p.Kind), append(keys, p.Key)
				if !slices.Contains(ProblemKinds, p.Kind) {
					t.Errorf("kind %q is not in ProblemKinds (nor in ipamd's README)", p.Kind)
				}
				if p.Node != "me" {
					t.Errorf("problem %s names node %q, want me", p, p.Node)
				}
				if tt.msg != "" && !strings.Contains(p.Msg, tt.msg) {
					t.Errorf("problem %s: message lacks %q", p, tt.msg)
				}
			}
			if !slices.Equal(kinds, tt.kinds) || !slices.Equal(keys, tt.keys) {
				t.Errorf("Check = %v, want kinds %v keys %v", ps, tt.kinds, tt.keys)
			}
		})
	}
	if _, err := Check(snapshot(), "me", &fakeHost{err: errors.New("netlink down")}); err == nil || !strings.Contains(err.Error(), "netlink down") {
		t.Errorf("Check with a failing kernel read = %v", err)
	}
}

// TestReport: the store's checks, the node checks and the local checks in
// one report, problems sorted by node, every node listed with its state.
func TestReport(t *testing.T) {
	pfx := netip.MustParsePrefix
	id := store.AttachmentID{Network: "n", ContainerID: "c1", IfName: "eth0"}
	a := netip.MustParseAddr("2001:db8::2")
	snap := &store.Snapshot{
		Revision: 7,
		Pools:    []store.Pool{{Network: "n", Subnets: []netip.Prefix{pfx("2001:db8::/48")}}},
		Nodes:    []store.Node{{Name: "me", Epoch: 3}, {Name: "sleeper", Epoch: 4}},
		Alive:    []store.Alive{{Node: "me", Epoch: 3}},
		Blocks: []store.Block{
			{CIDR: pfx("2001:db8::/64"), Node: "me", Network: "n"},
			{CIDR: pfx("2001:db8:0:1::/64"), Node: "ghost", Network: "n"},
			{CIDR: pfx("2001:db8:0:2::/64"), Node: "sleeper", Network: "n"},
		},
		Handles: []store.Handle{{AttachmentID: id, Node: "me", Netns: "/run/netns/gone",
			IPs: []store.IP{{Address: netip.PrefixFrom(a, 64), Block: pfx("2001:db8::/64")}}}},
		Addrs:       map[netip.Addr]store.AttachmentID{a: id},
		Undecodable: []string{"/v6cni/handles/x"},
	}
	r, err := Report(snap, "me", &fakeHost{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range r.Problems {
		got = append(got, p.Node+" "+p.Kind)
	}
	want := []string{" undecodable", "ghost block-no-node", "me netns-gone"}
	if !slices.Equal(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
	var nodes []string
	for _, n := range r.Nodes {
		nodes = append(nodes, n.Name+" "+n.State)
	}
	if want := []string{"ghost unregistered", "me alive", "sleeper dead"}; !slices.Equal(nodes, want) {
		t.Errorf("nodes = %q, want %q", nodes, want)
	}
	if r.Node != "me" || r.Revision != 7 || r.Blocks != 3 || r.Handles != 1 || r.Addrs != 1 {
		t.Errorf("report = %+v", r)
	}
	if _, err := Report(snap, "me", &fakeHost{err: errors.New("netlink down")}); err == nil {
		t.Error("Report with a failing kernel read succeeded")
	}
}

// renumbered adds an attachment in the middle of a renumbering (§3.2): a
// deprecated address in the old delegated block and its successor in the
// new one, both held, both blocks this node's; the bridge carries the old
// gateway and, with newGateway, the new one.
func renumbered(newGateway bool) func(*store.Snapshot, *fakeHost) {
	pfx := netip.MustParsePrefix
	return func(s *store.Snapshot, h *fakeHost) {
		oldB, newB := pfx("2001:db8:aa00:1::/64"), pfx("2001:db8:bb00:1::/64")
		s.Blocks = append(s.Blocks,
			store.Block{CIDR: oldB, Subnet: oldB, Node: "me", Network: "pd", Source: "pd"},
			store.Block{CIDR: newB, Subnet: newB, Node: "me", Network: "pd", Source: "pd"})
		oldA, newA := netip.MustParseAddr("2001:db8:aa00:1::2"), netip.MustParseAddr("2001:db8:bb00:1::2")
		s.Handles = append(s.Handles, store.Handle{
			AttachmentID: store.AttachmentID{Network: "pd", ContainerID: "c9", IfName: "eth0"}, Node: "me", Netns: "/run/netns/c9",
			IPs: []store.IP{
				{Address: netip.PrefixFrom(oldA, 64), Block: oldB, Deprecated: true, ValidUntil: time.Now().Add(time.Hour)},
				{Address: netip.PrefixFrom(newA, 64), Block: newB, Replaces: oldA},
			},
		})
		h.netns["/run/netns/c9"] = true
		h.addrs = append(h.addrs, link.BridgeAddr{Link: "br2", Bridge: "br2", Addr: pfx("2001:db8:aa00:1::1/64")})
		if newGateway {
			h.addrs = append(h.addrs, link.BridgeAddr{Link: "br2", Bridge: "br2", Addr: pfx("2001:db8:bb00:1::1/64")})
		}
	}
}

package store

import (
	"net/netip"
	"slices"
	"testing"
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
			}
			if !slices.Equal(kinds, tt.kinds) {
				t.Errorf("Check kinds = %v, want %v (%v)", kinds, tt.kinds, Check(s))
			}
		})
	}
}

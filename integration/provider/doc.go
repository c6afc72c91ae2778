// Package provider holds the end-to-end tests of provider networks
// (issue 15, "Tests (real routers)"): the real bridge-v6, ipam-v6 and
// ipamd, built by TestMain, on the upstream lab of
// internal/testutil/upstream (two router netns with radvd and keepalived
// VRRPv3, Kea DHCPv6 and hosts on the segment, a far host behind the
// routers).
//
// A node is a netns on the lab's segment: its uplink eth1 has an address
// of the provider prefix (static <prefix>::10, or its own SLAAC one) and
// learns its default route from the routers' RAs; it runs its own ipamd
// (embedded etcd); the test, as the runtime, calls the plugins through
// libcni, which execs them inside the node's netns. The provider
// network is bridge-v6 with provider.master eth1 and ipam-v6 with the
// provider /64 as its pool, the routers', the nodes', the DNS, the
// segment host's and Kea's addresses excluded. Containers are netns.
//
//   - TestProviderVRRP (VRRP, 100 ms adverts; RAs A=1 O=1 RDNSS): a
//     container in each self-addressed mode (static with gateway fe80::1,
//     with standard DAD, with the global virtual gateway, with the
//     router learned from the RA; slaac; dhcpv6-stateless with the
//     container's dhclient -S) has an address of the prefix, the default
//     route via the gateway, the RDNSS in the RA it sees (rdisc6), reaches
//     the far host and the segment host, passes CHECK, and DEL leaves no
//     veth and no lease; the node stays reachable. An address held by
//     another host on the segment (the one IPAM hands next, and one the
//     container asks for) fails ADD naming it, with nothing left. The
//     node's own routed bridge-v6 network beside the provider one: its
//     container reaches the provider containers (via the routers, which
//     route its pool to the node). Then the master router dies while the
//     containers ping the far host every 20 ms.
//   - TestProviderStateful (RAs M=1): dhcpv6-stateful; Kea holds a
//     reservation of IPAM's address for the container's MAC, the
//     container's dhclient -6 gets it; CHECK fails before, passes after.
//   - TestProviderFailover: VRRP with 1 s adverts, and two routers
//     without VRRP (NUD with the timers bridge-v6 sets in containers),
//     the router killed at any time or right after the container's entry
//     became REACHABLE; the node's first ADDs run at once while the node
//     is pinged (the uplink's move must not cut it off). Its nodes' uplink
//     addresses are their own SLAAC ones.
//   - TestProviderBesidePD: the node's ipamd runs its DHCPv6-PD client on
//     the uplink (Kea on the segment host delegates /60s, T1 3 s); a
//     pd-ipam routed container (the routers route the delegated prefix
//     to the node, set by hand) and then a provider container, whose ADD
//     enslaves the uplink: the client keeps renewing through the bridge
//     (three Renews answered, its socket reopened once on the bridge,
//     no Rebind, same prefix, Kea delegated no other), both containers
//     reach the far host and each other.
//
// Two issues of pkg/link's uplink move (moveToBridge) these tests found,
// fixed there: a node whose uplink address is its own SLAAC one kept the
// RA's on-link prefix route (proto kernel, with an expiry) on the
// enslaved uplink and then reached neither its containers nor, once the
// neighbour entries made before the move expired, the segment's hosts
// (TestProviderFailover's nodes are SLAAC ones, newNode with host 0); and
// the uplink's RA-learned default routes were dropped and relearned on
// the bridge from the next RA, which a router rate-limits (RFC 4861: 3 s
// between multicast RAs), so in about one first ADD in three the node's
// own traffic beyond the segment was lost for 1.0-1.9 s (they are now
// moved to the bridge with their remaining lifetime). The node watch
// during the first ADDs (PROVIDER-NODE-FIGURES) requires that the node
// loses at most one ping each way (watchNode says why one).
//
// The segment is untagged: the running kernel has no 802.1Q. The tagged
// segment (provider.vlanId) is tested in a vmtest guest by
// internal/testutil/upstream (TestVLAN) and plugins/bridge-v6
// (provider_vlan_linux_test.go).
//
// The tests need root and fail, never skip, without it. Figures:
//
//	go test -race -count=1 -v ./integration/provider/ | grep -E 'PROVIDER-(FAILOVER|ADD|NODE)-FIGURES'
package provider

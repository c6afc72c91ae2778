// Package bridgesvc serves what the containers on a bridge-v6 bridge need
// from the node beyond their addresses: router advertisements (pkg/daemon/ra)
// and, in the dhcpv6-* modes, DHCPv6 (pkg/daemon/dhcp6server) on each
// bridge with at least one self-configuring attachment (ipv6Mode slaac,
// dhcpv6-stateless, dhcpv6-stateful), and the end of a block's gateway
// address on its bridge when the block is released.
//
// It follows the node's handles in etcd: ipamserver calls Attached and
// Detached on ADD and DEL, and ipamd calls Sync at start and after each GC
// round, so the servers match what the store records across restarts and
// releases ipamd did not see. Status and Metrics report the servers'
// health to STATUS (CNI code 51) and to the metrics.
//
// bridge-v6 adds the gateway address (pkg/link.AddGatewayAddrs) at ADD;
// ReleaseEmptyBlocks removes it (pkg/link.RemoveGateway) when the block
// goes back to the pool.
//
// Blocks of a delegated prefix (SetLifetimes) are advertised and handed
// out with the prefix's remaining lifetimes; during a renumbering the old
// block is deprecated (preferred 0) in the RA, in DHCPv6 and on the
// bridge's gateway address until its valid end.
package bridgesvc

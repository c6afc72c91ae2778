// Package ipamapi is the protocol between v6cni's IPAM plugins and ipamd:
// HTTP/JSON over ipamd's unix socket, versioned by path. It holds the wire
// types and a small client; it links neither etcd nor gRPC, so plugins can
// use it.
//
// Every verb is a POST of a Request. A success is 200 with a verb-specific
// body (ADD: a CNI 1.1.0 result). A failure is a non-2xx status with a CNI
// error object ({code, msg, details}) as body, which the plugin prints as its
// own error, so the code ipamd chose reaches the runtime unchanged.
//
// The request says explicitly what ipamd needs beyond the IPAM config: for
// ADD, the Attachment (the main plugin's bridge, ipv6Mode and the
// container's MAC), which the plugin reads from the main plugin's config;
// ipamd validates it and never parses another plugin's configuration.
package ipamapi

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// Paths of the verbs, version 1.
const (
	PathAdd    = "/v1/add"
	PathDel    = "/v1/del"
	PathCheck  = "/v1/check"
	PathStatus = "/v1/status"
	PathGC     = "/v1/gc"
	PathState  = "/v1/state"
)

// Request is one CNI call forwarded by an IPAM plugin.
type Request struct {
	// Network is the network name from the configuration.
	Network string `json:"network"`
	// ContainerID, IfName and Netns are CNI_CONTAINERID, CNI_IFNAME and
	// CNI_NETNS; (Network, ContainerID, IfName) names one attachment.
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Netns       string `json:"netns,omitempty"`
	// Args is CNI_ARGS as the runtime set it.
	Args string `json:"args,omitempty"`
	// Config is the network configuration exactly as the plugin read it on
	// stdin (ipam section, runtimeConfig, args, prevResult, GC lists).
	Config json.RawMessage `json:"config"`
	// Attachment is what the main plugin does with the container's
	// interface, when ipamd needs to know it (ADD only): the IPAM plugin
	// fills it from the main plugin's config, so ipamd never parses
	// another plugin's configuration. Nil means a static attachment whose
	// MAC does not matter.
	Attachment *Attachment `json:"attachment,omitempty"`
	// Duplicates (DEL only) are addresses of the attachment that duplicate
	// address detection found in use by another host: the DEL rolls back
	// the ADD that found them, and ipamd keeps them out of use for the
	// network's ipam.duplicateQuarantine instead of freeing them.
	Duplicates []netip.Addr `json:"duplicates,omitempty"`
}

// Attachment is how the main plugin (bridge-v6) attaches the container.
type Attachment struct {
	// Bridge is the host bridge the container is attached to; required
	// when IPv6Mode is self-configuring (ipamd serves RAs/DHCPv6 there).
	Bridge string `json:"bridge,omitempty"`
	// IPv6Mode is how the container gets its IPv6 address ("" is static).
	IPv6Mode IPv6Mode `json:"ipv6Mode,omitempty"`
	// MAC is the container interface's MAC ("02:00:5e:10:00:01"), when the
	// addresses depend on it (eui64 addressing, a self-configuring mode)
	// or DHCPv6 must recognise the client.
	MAC string `json:"mac,omitempty"`
}

// CheckResult is ipamd's answer to CHECK: the attachment's addresses as
// its record holds them, the truth a renumbered attachment is checked
// against (design pd-ha-renumbering §3.5) instead of prevResult's, which
// names the addresses of the ADD. IPs lists the current addresses first,
// in the record's order, then the deprecated ones still valid; an old
// address past its valid end is not listed. An empty IPs (an ipamd from
// before this field) means "check prevResult's".
type CheckResult struct {
	IPs []CheckIP `json:"ips,omitempty"`
}

// CheckIP is one address of an attachment.
type CheckIP struct {
	// Address carries the block's prefix length, as in a CNI result.
	Address netip.Prefix `json:"address"`
	// Gateway is the block's gateway (zero: none).
	Gateway netip.Addr `json:"gateway,omitzero"`
	// Deprecated marks an old address during a renumbering's overlap: the
	// container still holds it, not preferred, until ValidUntil.
	Deprecated bool      `json:"deprecated,omitempty"`
	ValidUntil time.Time `json:"validUntil,omitzero"`
	// Replaces is, on a renumbering's new address, the old address it
	// succeeds: routes via the old one's gateway now go via this one's.
	Replaces netip.Addr `json:"replaces,omitzero"`
}

// IPv6Mode is how a container gets its IPv6 address: bridge-v6's ipv6Mode.
// The values live here, once, for the plugins and for ipamd.
type IPv6Mode string

// The ipv6Mode values.
const (
	// IPv6ModeStatic: the plugin adds the IPAM address (the default).
	IPv6ModeStatic IPv6Mode = "static"
	// IPv6ModeSLAAC: the container's kernel forms the EUI-64 address from
	// router advertisements (which IPAM recorded as the address).
	IPv6ModeSLAAC IPv6Mode = "slaac"
	// IPv6ModeDHCPv6Stateless: SLAAC address, DNS by DHCPv6
	// Information-Request.
	IPv6ModeDHCPv6Stateless IPv6Mode = "dhcpv6-stateless"
	// IPv6ModeDHCPv6Stateful: address and DNS by DHCPv6, from a client
	// the workload runs.
	IPv6ModeDHCPv6Stateful IPv6Mode = "dhcpv6-stateful"
)

// IPv6Modes are the valid ipv6Mode values, in the order messages list them.
var IPv6Modes = []IPv6Mode{IPv6ModeStatic, IPv6ModeSLAAC, IPv6ModeDHCPv6Stateless, IPv6ModeDHCPv6Stateful}

// Valid reports whether m is one of IPv6Modes.
func (m IPv6Mode) Valid() bool {
	switch m {
	case IPv6ModeStatic, IPv6ModeSLAAC, IPv6ModeDHCPv6Stateless, IPv6ModeDHCPv6Stateful:
		return true
	}
	return false
}

// IPv6ModeError says why m is not a valid ipv6Mode, for a message that
// names the field first: `%q: want static, slaac, dhcpv6-stateless or
// dhcpv6-stateful`.
func IPv6ModeError(m IPv6Mode) string {
	return fmt.Sprintf("%q: want %s, %s, %s or %s", string(m),
		IPv6ModeStatic, IPv6ModeSLAAC, IPv6ModeDHCPv6Stateless, IPv6ModeDHCPv6Stateful)
}

// SelfConfiguring reports whether the container configures its address
// itself (not "" and not static): ipamd then serves its bridge.
func (m IPv6Mode) SelfConfiguring() bool { return m != "" && m != IPv6ModeStatic }

// Autoconf reports whether the container's kernel forms its address from
// the MAC (SLAAC): IPAM must assign that EUI-64 address.
func (m IPv6Mode) Autoconf() bool { return m == IPv6ModeSLAAC || m == IPv6ModeDHCPv6Stateless }

// State is what ipamd holds for this node, for the CLI and the demo.
type State struct {
	Node     string         `json:"node"`
	Networks []NetworkState `json:"networks"`
}

// NetworkState is one registered pool and this node's part of it.
type NetworkState struct {
	Network string       `json:"network"`
	Pool    string       `json:"pool"`
	Blocks  []BlockState `json:"blocks"`
}

// BlockState is one block and the addresses taken in it.
type BlockState struct {
	Block   string      `json:"block"`
	Node    string      `json:"node"`
	Gateway string      `json:"gateway"`
	Addrs   []AddrState `json:"addrs"`
}

// AddrState is one allocated address and the attachment holding it.
type AddrState struct {
	Addr        string `json:"addr"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Admin paths, used by the ipamd CLI.
const (
	PathHealth  = "/v1/health"
	PathLeases  = "/v1/leases"
	PathReclaim = "/v1/admin/gc"
	PathRelease = "/v1/admin/release"
	PathConsist = "/v1/admin/check"
)

// Consistency is the outcome of `ipamd check`: every broken invariant of
// the cluster's key space, read at one etcd revision.
type Consistency struct {
	Revision int64 `json:"revision"`
	// Counts of what was checked.
	Blocks   int `json:"blocks"`
	Addrs    int `json:"addrs"`
	Handles  int `json:"handles"`
	Stickies int `json:"stickies"`
	// Problems is empty when the state is consistent.
	Problems []Problem `json:"problems"`
	// Node is the node whose ipamd answered: the local checks (netns,
	// bridges' gateways) are of this node only.
	Node string `json:"node,omitempty"`
	// Nodes is every registered node and every node a record names, with
	// its state (alive, dead, removed, unregistered).
	Nodes []NodeCheck `json:"nodes"`
}

// Problem is one broken invariant (see store.Check, store.CheckNodes and
// package nodecheck for the kinds).
type Problem struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
	Msg  string `json:"msg"`
	// Node is the node the problem belongs to ("" for none).
	Node string `json:"node,omitempty"`
}

// NodeCheck is one node as `ipamd check` found it.
type NodeCheck struct {
	Name string `json:"name"`
	// State is alive, dead (registered, its ipamd gone: its records are
	// held, not errors), removed (a removal that did not finish) or
	// unregistered (records of a node never registered).
	State       string `json:"state"`
	Epoch       int64  `json:"epoch,omitempty"`
	Blocks      int    `json:"blocks"`
	Attachments int    `json:"attachments"`
	Note        string `json:"note,omitempty"`
}

// Health is ipamd's own view of whether it can serve.
type Health struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	// Etcd is "ok" or the error etcd answered with.
	Etcd string `json:"etcd"`
	// Nodes are the nodes whose ipamd is alive, as etcd's leases say.
	Nodes []string `json:"nodes"`
}

// Lease is one attachment and its addresses.
type Lease struct {
	Network     string   `json:"network"`
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifName"`
	Node        string   `json:"node"`
	Netns       string   `json:"netns,omitempty"`
	Addrs       []string `json:"addrs"`
	Created     string   `json:"created"`
}

// AdminRequest selects attachments for the admin verbs.
type AdminRequest struct {
	Network     string `json:"network,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	// GraceSeconds: GC releases only attachments older than this.
	GraceSeconds int `json:"graceSeconds,omitempty"`
	// Node, Force and Reason are node remove's: the node, whether to
	// remove it while alive or local, and why (kept in its tombstone).
	Node   string `json:"node,omitempty"`
	Force  bool   `json:"force,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Released lists what an admin verb released.
type Released struct {
	Released []Lease `json:"released"`
}

// PathBGP is the admin path of the BGP speaker's state.
const PathBGP = "/v1/bgp"

// BGPState is what the node's BGP speaker does (for `ipamd bgp`).
type BGPState struct {
	// Enabled is false when ipamd runs without a bgp section.
	Enabled bool      `json:"enabled"`
	Peers   []BGPPeer `json:"peers"`
	// Announced are the prefixes the speaker announces.
	Announced []string `json:"announced"`
}

// BGPPeer is one BGP session.
type BGPPeer struct {
	Address          string `json:"address"`
	ASN              uint32 `json:"asn"`
	State            string `json:"state"`
	Established      bool   `json:"established"`
	Uptime           string `json:"uptime,omitempty"`
	PrefixesSent     uint64 `json:"prefixesSent"`
	PrefixesReceived uint64 `json:"prefixesReceived"`
	Message          string `json:"message,omitempty"`
}

// Prefix delegation paths.
const (
	PathPD        = "/v1/pd"
	PathPDRelease = "/v1/pd/release"
)

// PDState is the node's DHCPv6-PD binding (for `ipamd pd`).
type PDState struct {
	// Enabled is false when ipamd runs no PD client.
	Enabled bool `json:"enabled"`
	// Mode is "node" (one client per node) or "cluster" (one client per
	// uplink segment, on its elected leader); empty from an older ipamd.
	Mode string `json:"mode,omitempty"`
	// Segment, Leader and LeaderSince (cluster mode): the uplink segment,
	// the node whose ipamd runs its client and since when (as this node saw
	// it take office). Role is this node's part: leader, standby,
	// "not ready: <why>" or consumer.
	Segment     string    `json:"segment,omitempty"`
	Leader      string    `json:"leader,omitempty"`
	LeaderSince time.Time `json:"leaderSince,omitzero"`
	Role        string    `json:"role,omitempty"`
	Interface   string    `json:"interface,omitempty"`
	Server      string    `json:"server,omitempty"`
	ServerDUID  string    `json:"serverDUID,omitempty"`
	ClientDUID  string    `json:"clientDUID,omitempty"`
	IAID        uint32    `json:"iaid,omitempty"`
	// RenewIn and RebindIn are the time left to T1 and T2 ("" when none).
	RenewIn  string     `json:"renewIn,omitempty"`
	RebindIn string     `json:"rebindIn,omitempty"`
	Prefixes []PDPrefix `json:"prefixes"`
}

// PDPrefix is one delegated prefix and its lifetimes left.
type PDPrefix struct {
	Prefix string `json:"prefix"`
	// PreferredLeft and ValidLeft are durations, or "infinite".
	PreferredLeft string `json:"preferredLeft"`
	ValidLeft     string `json:"validLeft"`
	// State is "current" (new addresses come from it), "deprecated"
	// (being renumbered away from: its addresses go at its valid end) or
	// "expired".
	State string `json:"state,omitempty"`
}

// ShortID is a container ID as logs and tables show it: the 64-hex IDs
// runtimes use are cut to 12 characters, as docker ps does; other IDs are
// shown whole, where a cut could make two look the same.
func ShortID(id string) string {
	if len(id) == 64 {
		return id[:12]
	}
	return id
}

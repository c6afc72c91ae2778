package link

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Access VLANs (the `vlan` option): the bridge filters VLANs, each host veth
// port is an untagged member of exactly one VLAN (its PVID), and the gateway
// of a VLAN network lives on a VLAN interface (VLANIfName) on top of the
// bridge, the bridge itself being a tagged member of the VLAN.

// DefaultPVID is the VLAN the kernel puts every new bridge port (and the
// bridge itself) in, untagged, as its PVID: the bridge's vlan_default_pvid
// unless an administrator changed it. Ports of networks without the `vlan`
// option stay in it, and the gateways of VLAN DefaultPVID are on the bridge
// itself, its untagged member.
const DefaultPVID = 1

// MaxVLAN is the highest VLAN ID (4095 is reserved by IEEE 802.1Q).
const MaxVLAN = 4094

// PrepareVLANBridge readies the bridge for ports in VLAN vid: it turns
// vlan_filtering on unless it already is. Concurrent ADDs may all do so: the
// request is idempotent.
//
// Turning it on keeps every existing port in the VLANs it has — a port of a
// network without a VLAN is an untagged member of the default PVID and keeps
// working — but cuts off a port that is in no VLAN at all (a bridge whose
// vlan_default_pvid was set to 0, or whose ports' VLANs were removed): then
// it fails naming the port and changes nothing.
//
// VLAN DefaultPVID on a bridge whose vlan_default_pvid is another VLAN is
// refused: its gateways could not live on the bridge itself.
func PrepareVLANBridge(br *netlink.Bridge, vid int) error {
	if vid < 1 || vid > MaxVLAN {
		return fmt.Errorf("VLAN %d out of range 1..%d", vid, MaxVLAN)
	}
	if vid == DefaultPVID && br.VlanDefaultPVID != nil && *br.VlanDefaultPVID != DefaultPVID {
		return fmt.Errorf("bridge %s has vlan_default_pvid %d: VLAN %d networks need it to be %d (their gateways are on the bridge, its untagged member)",
			br.Name, *br.VlanDefaultPVID, vid, DefaultPVID)
	}
	if br.VlanFiltering != nil && *br.VlanFiltering {
		return nil
	}
	if err := portsWithoutVLAN(br); err != nil {
		return err
	}
	if err := setVLANFiltering(br.Index); err != nil {
		return fmt.Errorf("turn vlan_filtering on for bridge %s: %w", br.Name, err)
	}
	on := true
	br.VlanFiltering = &on
	return nil
}

// setVLANFiltering turns vlan_filtering on for the bridge with this index
// by a request that carries nothing else (so it goes through nlraw):
// netlink.BridgeSetVlanFiltering also sends the name (the kernel then
// fails an up bridge with EBUSY, after having changed the option) and
// every attribute of the Bridge it is given.
func setVLANFiltering(index int) error {
	var (
		c   nlraw.Conn
		req [64]byte
	)
	// The answer is an ack with the kernel's message, if any.
	if err := c.Init(nlraw.Options{ExtAck: true, Buf: make([]byte, 4096)}); err != nil {
		return err
	}
	defer c.Close()
	return c.Request(vlanFilteringRequest(req[:0], c.Seq(), index), nil)
}

// vlanFilteringRequest appends to buf an RTM_NEWLINK of the bridge index
// with IFLA_LINKINFO {IFLA_INFO_KIND "bridge", IFLA_INFO_DATA
// {IFLA_BR_VLAN_FILTERING 1}} and nothing else.
func vlanFilteringRequest(buf []byte, seq uint32, index int) []byte {
	m := nlraw.NewMsg(buf)
	m.Begin(unix.RTM_NEWLINK, unix.NLM_F_ACK, seq)
	m.IfInfomsg(int32(index), 0, 0)
	info := m.Nest(unix.IFLA_LINKINFO)
	m.Attr(unix.IFLA_INFO_KIND, []byte("bridge"))
	data := m.Nest(unix.IFLA_INFO_DATA)
	m.Attr(nl.IFLA_BR_VLAN_FILTERING, []byte{1})
	m.EndNest(data)
	m.EndNest(info)
	return m.Bytes()
}

// portsWithoutVLAN fails naming the first port of br that is in no VLAN:
// with vlan_filtering on, the bridge would drop all its frames.
func portsWithoutVLAN(br *netlink.Bridge) error {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list ports of bridge %s: %w", br.Name, err)
	}
	vlans, err := retryDump(netlink.BridgeVlanList)
	if err != nil {
		return fmt.Errorf("list VLANs of bridge %s's ports: %w", br.Name, err)
	}
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex == br.Index && len(vlans[int32(a.Index)]) == 0 {
			return fmt.Errorf("bridge %s: turning vlan_filtering on would cut off port %s, which is in no VLAN "+
				"(give it one, e.g. `bridge vlan add dev %s vid %d pvid untagged`, or turn vlan_filtering on yourself)",
				br.Name, a.Name, a.Name, DefaultPVID)
		}
	}
	return nil
}

// SetAccessVLAN makes the new bridge port an access port of VLAN vid: vid
// is its PVID and leaves it untagged, and it is no longer a member of the
// bridge's default PVID (the one VLAN the kernel put the new port in), so
// it reaches only its own VLAN. Call it before the other end of the veth
// comes up, so that no frame of the port is forwarded in another VLAN.
func SetAccessVLAN(br *netlink.Bridge, port netlink.Link, vid int) error {
	name := port.Attrs().Name
	if vid < 1 || vid > MaxVLAN {
		return fmt.Errorf("port %s: VLAN %d out of range 1..%d", name, vid, MaxVLAN)
	}
	if err := netlink.BridgeVlanAdd(port, uint16(vid), true, true, false, true); err != nil {
		return fmt.Errorf("put port %s in VLAN %d (pvid untagged): %w", name, vid, err)
	}
	def := DefaultPVID
	if br.VlanDefaultPVID != nil {
		def = int(*br.VlanDefaultPVID)
	}
	if def == 0 || def == vid {
		return nil
	}
	err := netlink.BridgeVlanDel(port, uint16(def), false, false, false, true)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove port %s from the default VLAN %d: %w", name, def, err)
	}
	return nil
}

// linkVLANs lists the bridge VLAN entries of the link with this index
// (`bridge vlan show dev`); for a bridge, its own ("self") entries. The
// kernel only dumps them for every link at once.
func linkVLANs(index int) ([]*nl.BridgeVlanInfo, error) {
	all, err := retryDump(netlink.BridgeVlanList)
	if err != nil {
		return nil, err
	}
	return all[int32(index)], nil
}

// VLANString formats VLAN entries as `bridge vlan show` does: "100 pvid
// untagged, 200"; "none" for none. Exported for bridge-v6's tests, which
// print a port's VLANs as CHECK's errors do.
func VLANString(vs []*nl.BridgeVlanInfo) string {
	if len(vs) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(vs))
	for _, v := range vs {
		s := fmt.Sprint(v.Vid)
		if v.PortVID() {
			s += " pvid"
		}
		if v.EngressUntag() {
			s += " untagged"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// CheckAccessVLAN verifies that the bridge port name is in VLAN vid as PVID
// and untagged, and in no other VLAN.
func CheckAccessVLAN(name string, vid int) error {
	l, err := linkByName(name)
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	vs, err := linkVLANs(l.Attrs().Index)
	if err != nil {
		return fmt.Errorf("list VLANs of port %s: %w", name, err)
	}
	if len(vs) != 1 || int(vs[0].Vid) != vid || !vs[0].PortVID() || !vs[0].EngressUntag() {
		return fmt.Errorf("port %s has VLANs %s, want only %d pvid untagged", name, VLANString(vs), vid)
	}
	return nil
}

// EnsureVLANGateway returns the VLAN interface ifname (VLANIfName) of VLAN
// vid on top of the bridge, creating it if needed, and makes the bridge
// itself a tagged member of the VLAN (`bridge vlan add dev <br> vid <vid>
// self`), so that the frames of the VLAN's ports reach the interface. The
// interface gets mtu (0: the bridge's), accept_ra=0, accept_dad=0 (its
// link-local address is usable at once, as the bridge's), disable_ipv6=0,
// and is up. Concurrent ADDs racing to create it all succeed and share it.
// A link of that name that is not this VLAN of this bridge is an error.
//
// VLAN DefaultPVID is refused: the bridge is its untagged member, and its
// gateways belong on the bridge itself.
func EnsureVLANGateway(br *netlink.Bridge, vid int, ifname string, mtu int) (*netlink.Vlan, error) {
	if vid <= DefaultPVID || vid > MaxVLAN {
		return nil, fmt.Errorf("VLAN %d: a gateway VLAN interface needs a VLAN in %d..%d", vid, DefaultPVID+1, MaxVLAN)
	}
	// Tagged, not PVID: the bridge's untagged traffic stays in the
	// default VLAN (the gateways of networks without a VLAN).
	if err := netlink.BridgeVlanAdd(br, uint16(vid), false, false, true, false); err != nil {
		return nil, fmt.Errorf("add bridge %s itself to VLAN %d: %w", br.Name, vid, err)
	}
	l, err := linkByName(ifname)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("look up VLAN interface %s: %w", ifname, err)
	}
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = ifname
		attrs.ParentIndex = br.Index
		attrs.MTU = mtu
		// Created down: the sysctls below apply before its link-local
		// address is formed (no DAD for it, as for the bridge).
		err = netlink.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: vid, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create VLAN interface %s (VLAN %d of bridge %s): %w", ifname, vid, br.Name, err)
		}
		// EEXIST: another ADD created it between our lookup and our add.
		if l, err = linkByName(ifname); err != nil {
			return nil, fmt.Errorf("look up VLAN interface %s: %w", ifname, err)
		}
	}
	v, err := asVLANOf(l, br, vid)
	if err != nil {
		return nil, err
	}
	// Every ADD sets them (a read when already set): one that lost the
	// race to create the interface may bring it up before the winner got
	// to them.
	for _, kv := range [][2]string{{"accept_ra", "0"}, {"accept_dad", "0"}, {"disable_ipv6", "0"}} {
		if err := setSysctl("net/ipv6/conf/"+ifname+"/"+kv[0], kv[1]); err != nil {
			return nil, fmt.Errorf("VLAN interface %s: %w", ifname, err)
		}
	}
	if err := mtuAndUp(v, "VLAN interface", mtu); err != nil {
		return nil, err
	}
	return v, nil
}

// asVLANOf returns l as a VLAN link if it is VLAN vid on top of br.
func asVLANOf(l netlink.Link, br *netlink.Bridge, vid int) (*netlink.Vlan, error) {
	name := l.Attrs().Name
	v, ok := l.(*netlink.Vlan)
	if !ok {
		return nil, fmt.Errorf("link %s exists and is a %s, not VLAN %d of bridge %s", name, l.Type(), vid, br.Name)
	}
	if v.ParentIndex != br.Index || v.VlanId != vid {
		return nil, fmt.Errorf("link %s is VLAN %d of link index %d, not VLAN %d of bridge %s (index %d)",
			name, v.VlanId, v.ParentIndex, vid, br.Name, br.Index)
	}
	return v, nil
}

// CheckVLANGateway verifies the gateway side of VLAN vid: the bridge is a
// tagged member of it, and ifname is that VLAN of the bridge, up.
func CheckVLANGateway(br *netlink.Bridge, vid int, ifname string) (*netlink.Vlan, error) {
	self, err := linkVLANs(br.Index)
	if err != nil {
		return nil, fmt.Errorf("list VLANs of bridge %s: %w", br.Name, err)
	}
	if !slices.ContainsFunc(self, func(v *nl.BridgeVlanInfo) bool { return int(v.Vid) == vid && !v.EngressUntag() }) {
		return nil, fmt.Errorf("bridge %s itself is not a tagged member of VLAN %d (it has %s)", br.Name, vid, VLANString(self))
	}
	l, err := linkByName(ifname)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("VLAN interface %s not found", ifname)
		}
		return nil, fmt.Errorf("look up VLAN interface %s: %w", ifname, err)
	}
	v, err := asVLANOf(l, br, vid)
	if err != nil {
		return nil, err
	}
	if v.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("VLAN interface %s is down", ifname)
	}
	return v, nil
}

package link

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"

	"github.com/v6cni/v6cni/pkg/macaddr"
)

// hostVethPrefix starts the name of every host-side veth bridge-v6 creates.
const hostVethPrefix = "v6c"

// HostVethName is the name of the host end of the veth of the attachment
// (containerID, ifname): "v6c" and 12 hex digits of
// sha256(containerID + "/" + ifname), 15 bytes, the longest name Linux takes.
// DEL recomputes it, so it finds the veth even when the netns is gone.
// 48 bits keep collisions between live containers of one host negligible.
func HostVethName(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	return hostVethPrefix + hex.EncodeToString(sum[:6])
}

// ContainerMAC is the MAC address of the container end of the attachment
// (network, containerID, ifname) when no MAC is requested: it is
// macaddr.Derive, where the rule lives so that an IPAM deriving EUI-64
// interface IDs computes the same MAC. Use macaddr.ForAttachment for the
// MAC an attachment really gets (it honours the `mac` capability).
// Exported for bridge-v6's tests, its only users outside this package (they
// could call macaddr.Derive directly).
func ContainerMAC(network, containerID, ifname string) net.HardwareAddr {
	return macaddr.Derive(network, containerID, ifname)
}

// HostVethMAC is the MAC of the host end of the attachment's veth. Setting
// it ourselves (instead of letting the kernel pick a random one) saves a
// netlink round trip to learn it for the CNI result.
func HostVethMAC(containerID, ifname string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("host/" + containerID + "/" + ifname))
	return localUnicast(sum[:6])
}

// bridgeMAC is the MAC a new bridge gets. A bridge whose MAC was set
// explicitly keeps it; otherwise the kernel gives it the lowest MAC of its
// ports, which changes as containers come and go and leaves every container
// with a stale neighbour entry for its gateway.
func bridgeMAC(bridge string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("bridge/" + bridge))
	return localUnicast(sum[:6])
}

// localUnicast sets the locally administered bit and clears the multicast
// bit of the first byte of a copy of b.
func localUnicast(b []byte) net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	copy(mac, b)
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// VLANIfName is the name of the VLAN interface of VLAN vid on top of the
// bridge, which holds the gateway addresses of a network with that VLAN:
// "<bridge>.<vid>" when that fits in 15 bytes, else "v6v" + 7 hex digits of
// sha256(bridge) + "." + vid (at most 15 bytes; deterministic, so every
// ADD, CHECK and a human can recompute it).
func VLANIfName(bridge string, vid int) string {
	name := fmt.Sprintf("%s.%d", bridge, vid)
	if len(name) <= 15 {
		return name
	}
	sum := sha256.Sum256([]byte(bridge))
	return fmt.Sprintf("v6v%s.%d", hex.EncodeToString(sum[:4])[:7], vid)
}

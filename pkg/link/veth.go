package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VethSpec describes the veth pair of one attachment.
type VethSpec struct {
	HostName      string           // host end, e.g. HostVethName(containerID, ifname)
	HostMAC       net.HardwareAddr // nil: the kernel picks one
	ContainerName string           // container end, CNI_IFNAME
	ContainerMAC  net.HardwareAddr // nil: the kernel picks one
	MTU           int              // both ends; 0: kernel default
	BridgeIndex   int              // master of the host end; 0: none
	NetNSFd       int              // the container's network namespace
}

// CreateVeth creates the veth pair with its container end created directly
// inside the container's network namespace (the peer's IFLA_NET_NS_FD), never
// created here and moved: a move costs ~15 ms and serialises in the kernel.
// The host end is up and enslaved to the bridge; the container end is down,
// so its sysctls can be set before it comes up.
//
// A host end left over by an earlier attachment with the same name (same
// container ID and ifname, e.g. an ADD retried after a crash) is deleted
// and the pair created again, so a retried ADD neither fails nor leaks.
//
// On error nothing is left behind. The returned link is the host end, with
// its index set.
func CreateVeth(spec VethSpec) (*netlink.Veth, error) {
	veth, err := addVeth(spec)
	if errors.Is(err, unix.EEXIST) {
		if _, lookupErr := linkByName(spec.HostName); lookupErr == nil {
			if err := DeleteLinkByName(spec.HostName); err != nil {
				return nil, fmt.Errorf("remove stale host veth %s: %w", spec.HostName, err)
			}
			veth, err = addVeth(spec)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create veth %s (container end %s): %w", spec.HostName, spec.ContainerName, err)
	}
	return veth, nil
}

func addVeth(spec VethSpec) (*netlink.Veth, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.HostName
	attrs.HardwareAddr = spec.HostMAC
	attrs.MTU = spec.MTU
	attrs.Flags = net.FlagUp
	attrs.MasterIndex = spec.BridgeIndex
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         spec.ContainerName,
		PeerHardwareAddr: spec.ContainerMAC,
		PeerNamespace:    netlink.NsFd(spec.NetNSFd),
		PeerMTU:          uint32(max(spec.MTU, 0)),
	}
	// LinkAdd creates the pair, then looks up the index and sets the master
	// in separate calls: if a later step fails the pair exists and must go.
	err := netlink.LinkAdd(veth)
	if err == nil && veth.Index == 0 {
		err = fmt.Errorf("index of new veth %s unknown", spec.HostName)
	}
	if err != nil {
		if !errors.Is(err, unix.EEXIST) {
			_ = DeleteLinkByName(spec.HostName)
		}
		return nil, err
	}
	// The host end is a bridge port and needs no IPv6 address of its own.
	// Without one it sends no DAD probe or MLD report when the container
	// end comes up: on a bridge with N ports every such multicast reaches
	// all N, which makes each ADD slower as the node fills. Set before the
	// carrier comes up (the container end is still down), so no link-local
	// address is ever formed. An old kernel without the knob keeps one.
	_ = netlink.LinkSetIP6AddrGenMode(veth, 1 /* IN6_ADDR_GEN_MODE_NONE */)
	return veth, nil
}

// DeleteLinkByName deletes the link called name in the namespace of the
// calling thread. A link that does not exist is not an error (DEL must be
// idempotent). Deleting either end of a veth deletes both.
func DeleteLinkByName(name string) error {
	l, err := linkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up link %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) && !IsNotFound(err) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// LinkExists reports whether a link called name exists in the namespace of
// the calling thread.
func LinkExists(name string) (bool, error) {
	_, err := linkByName(name)
	switch {
	case err == nil:
		return true, nil
	case IsNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("look up link %s: %w", name, err)
}

// CheckHostVeth verifies that the host end called name exists, is a veth,
// and is a port of the bridge.
func CheckHostVeth(name string, br netlink.Link) error {
	l, err := linkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return fmt.Errorf("host veth %s not found", name)
		}
		return fmt.Errorf("look up host veth %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("host link %s is a %s, not a veth", name, l.Type())
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host veth %s is not a port of bridge %s", name, br.Attrs().Name)
	}
	return nil
}

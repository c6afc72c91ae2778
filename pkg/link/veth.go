package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
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
// One RTM_NEWLINK does all of it and, on kernels since 6.2, echoes the new
// host end, which gives its index; older kernels cost one RTM_GETLINK by
// name more. One RTM_SETLINK by index then turns off the host end's IPv6
// address generation (see newlink.go for why it cannot be part of the
// creation). vishvananda/netlink's LinkAdd took four requests on four
// sockets for the same.
//
// A host end left over by an earlier attachment with the same name (same
// container ID and ifname, e.g. an ADD retried after a crash) is deleted
// and the pair created again, so a retried ADD neither fails nor leaks.
//
// On error nothing is left behind. The returned link is the host end, with
// its index set, and ParentIndex the container end's index in its
// namespace (the kernel's IFLA_LINK of a veth), for
// ContainerOptions.Index.
func CreateVeth(spec VethSpec) (*netlink.Veth, error) {
	veth, err := addVeth(spec, true)
	if errors.Is(err, unix.EEXIST) {
		if _, lookupErr := linkByName(spec.HostName); lookupErr == nil {
			if err := DeleteLinkByName(spec.HostName); err != nil {
				return nil, fmt.Errorf("remove stale host veth %s: %w", spec.HostName, err)
			}
			veth, err = addVeth(spec, true)
		}
	}
	if err != nil {
		bridge := ""
		if spec.BridgeIndex > 0 {
			bridge = fmt.Sprintf(", port of bridge ifindex %d", spec.BridgeIndex)
		}
		return nil, fmt.Errorf("create veth %s (container end %s%s): %w", spec.HostName, spec.ContainerName, bridge, err)
	}
	return veth, nil
}

// addVeth creates the pair of spec and turns off IPv6 address generation on
// its host end. Without echo it takes the path of kernels before 6.2, which
// send no echo of a new link: tests use that to cover it.
func addVeth(spec VethSpec, echo bool) (*netlink.Veth, error) {
	c, err := nlraw.Open(nlraw.Options{ExtAck: true})
	if err != nil {
		return nil, err
	}
	defer c.Close()

	index, peer, err := newVeth(c, spec, echo)
	if err != nil {
		// A kernel error leaves nothing: the kernel unregisters the pair
		// if a step after registration fails (rtnl_newlink_create →
		// out_unregister). Any other error lost the answer, and the pair
		// may exist; a host end of that name can only be this
		// attachment's.
		var kerr *nlraw.Error
		if !errors.As(err, &kerr) {
			_ = DeleteLinkByName(spec.HostName) // on a socket of its own
		}
		return nil, err
	}
	if index == 0 {
		if index, peer, err = linkIndex(c, spec.HostName); err != nil {
			_ = DeleteLinkByName(spec.HostName)
			return nil, fmt.Errorf("look up new host veth %s: %w", spec.HostName, err)
		}
	}

	// The host end is a bridge port and needs no IPv6 address of its own.
	// Without one it sends no DAD probe or MLD report when the container
	// end comes up: on a bridge with N ports every such multicast reaches
	// all N, which makes each ADD slower as the node fills. Set before the
	// carrier comes up (the container end is still down), so no link-local
	// address is ever formed. Best effort, as before: a kernel without IPv6
	// or without the knob keeps one.
	_ = setAddrGenMode(c, index, in6AddrGenModeNone)

	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.HostName
	attrs.Index = index
	attrs.HardwareAddr = spec.HostMAC
	attrs.MTU = spec.MTU
	attrs.Flags = net.FlagUp
	attrs.MasterIndex = spec.BridgeIndex
	attrs.ParentIndex = peer
	return &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         spec.ContainerName,
		PeerHardwareAddr: spec.ContainerMAC,
		PeerNamespace:    netlink.NsFd(spec.NetNSFd),
		PeerMTU:          uint32(max(spec.MTU, 0)),
	}, nil
}

// DeleteLinkByName deletes the link called name in the namespace of the
// calling thread. A link that does not exist is not an error (DEL must be
// idempotent). Deleting either end of a veth deletes both.
func DeleteLinkByName(name string) error {
	l, err := linkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up link %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) && !isNotFound(err) {
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
	case isNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("look up link %s: %w", name, err)
}

// CheckHostVeth verifies that the host end called name exists, is a veth,
// and is a port of the bridge.
func CheckHostVeth(name string, br netlink.Link) error {
	l, err := linkByName(name)
	if err != nil {
		if isNotFound(err) {
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

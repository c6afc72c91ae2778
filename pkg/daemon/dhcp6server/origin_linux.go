package dhcp6server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Why a packet socket: a UDP socket on the bridge reports the bridge as the
// receiving interface (IPV6_PKTINFO) and the IPv6 source, both of which
// every port shares or the client chooses; the neighbour table and the FDB
// are learned from the very frames in question, so they follow a forger.
// The one fact a container cannot forge is the bridge port (its host veth)
// a frame enters by. An ETH_P_ALL packet socket sees each frame on the
// port itself, before the bridge takes it (taps run before the bridge's rx
// handler; PACKET_ORIGDEV does not help, since the bridge passes frames up
// as new receptions on the bridge device), with the Ethernet source. It
// sees every device of the namespace, so read keeps only frames entering a
// port of this bridge.

var errTimeout = errors.New("no datagram yet")

// pollInterval bounds how long a read blocks, so Run sees its context end.
const pollInterval = 200 * time.Millisecond

type originConn struct {
	fd     int
	bridge int
}

// udp547 keeps IPv6 frames carrying UDP to port 547 without extension
// headers (offsets in the IPv6 packet: SOCK_DGRAM strips the Ethernet
// header). A client message never needs extension headers.
var udp547 = []bpf.Instruction{
	bpf.LoadExtension{Num: bpf.ExtProto},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IPV6, SkipTrue: 5},
	bpf.LoadAbsolute{Off: 6, Size: 1}, // next header
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 3},
	bpf.LoadAbsolute{Off: 40 + 2, Size: 2}, // UDP dst port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 547, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func listenOrigin(ifi *net.Interface) (*originConn, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	c := &originConn{fd: fd, bridge: ifi.Index}
	prog, err := bpf.Assemble(udp547)
	if err != nil {
		c.close()
		return nil, fmt.Errorf("assemble filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
		c.close()
		return nil, fmt.Errorf("attach filter: %w", err)
	}
	tv := unix.NsecToTimeval(pollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		c.close()
		return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL)}); err != nil {
		c.close()
		return nil, fmt.Errorf("bind: %w", err)
	}
	return c, nil
}

func (c *originConn) close() { _ = unix.Close(c.fd) }

// read returns the next client datagram's UDP payload and its origin.
func (c *originConn) read(buf []byte) ([]byte, Origin, error) {
	for {
		n, sa, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil, Origin{}, errTimeout
		}
		if err != nil {
			return nil, Origin{}, err
		}
		ll, ok := sa.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING || ll.Halen != 6 || n < 48 || ll.Ifindex == c.bridge {
			continue
		}
		// The port's name, not its index: the index of a deleted veth is
		// reused, the name is the attachment's (link.HostVethName).
		port, err := netlink.LinkByIndex(ll.Ifindex)
		if err != nil || port.Attrs().MasterIndex != c.bridge {
			continue
		}
		pkt := buf[:n]
		src, _ := netip.AddrFromSlice(pkt[8:24])
		udpLen := int(binary.BigEndian.Uint16(pkt[44:46]))
		if udpLen < 8 || 40+udpLen > n {
			continue
		}
		from := Origin{MAC: net.HardwareAddr(append([]byte(nil), ll.Addr[:6]...)), Port: port.Attrs().Name, Addr: src}
		return pkt[48 : 40+udpLen], from, nil
	}
}

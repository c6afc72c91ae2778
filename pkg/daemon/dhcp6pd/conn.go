package dhcp6pd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Ports and the multicast group of RFC 8415 §7.
const (
	clientPort = 546
	serverPort = 547
)

var allServers = netip.MustParseAddr("ff02::1:2")

// linkLocalWait bounds the wait for the interface's link-local address to
// exist and leave the tentative state (DAD).
var linkLocalWait = 15 * time.Second

// udpTransport is one UDP socket on [link-local%on]:546, where on is the
// configured interface or, while that is a bridge or bond port, its
// master (see listenOn).
type udpTransport struct {
	iface, on string
	conn      *net.UDPConn
	dst       *net.UDPAddr
	packets   chan packet
	mu        sync.Mutex
	err       error
	closed    chan struct{}
}

// openUDP binds [link-local%iface]:546, waiting (bounded) for the
// link-local address to appear and pass DAD; while iface is a port of a
// bridge or a bond it binds its master's instead (listenOn).
//
// Not the per-bridge servers' open-ended backoff (internal/listenretry): the
// uplink exists before ipamd starts, so only its link-local address and
// DAD are waited for, at a steady short poll and up to linkLocalWait;
// longer is a fault the client reports (Run returns, and STATUS and
// `ipamd pd` say why), where a bridge's server must wait for a bridge that
// appears only with its first container.
func openUDP(ctx context.Context, iface string) (transport, error) {
	deadline := time.Now().Add(linkLocalWait)
	var lastErr error
	for {
		on := listenOn(iface)
		conn, err := listenLinkLocal(on)
		if err == nil {
			t := &udpTransport{
				iface:   iface,
				on:      on,
				conn:    conn,
				dst:     &net.UDPAddr{IP: allServers.AsSlice(), Port: serverPort, Zone: on},
				packets: make(chan packet, 16),
				closed:  make(chan struct{}),
			}
			go t.read()
			return t, nil
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w on %s (%v)", ErrPortInUse, iface, err)
		}
		if !errors.Is(err, errNoLinkLocal) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, fmt.Errorf("dhcp6pd: listen on %s: %w", iface, err)
		}
		lastErr = err
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dhcp6pd: no usable link-local address on %s after %v: %w", iface, linkLocalWait, lastErr)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var errNoLinkLocal = errors.New("no link-local address")

// listenOn is the interface whose socket receives what arrives on iface:
// iface itself, or its master while iface is a port of a bridge or a bond
// (a provider network's bridge-v6 enslaves the node's uplink to its
// bridge). A port's frames go up the stack on its master: a socket bound
// to the port (a link-local address with the port as zone) still sends
// through it but no longer receives the servers' Replies. Other masters
// (a VRF) deliver to the port's sockets, and a lookup error leaves iface
// (its socket then fails the usual way).
func listenOn(iface string) string {
	l, err := netlink.LinkByName(iface)
	if err != nil || l.Attrs().MasterIndex == 0 {
		return iface
	}
	m, err := netlink.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		return iface
	}
	switch m.Type() {
	case "bridge", "bond":
		return m.Attrs().Name
	}
	return iface
}

// Moved says whether the socket is no longer on the interface listenOn
// names now: the configured one was enslaved to a bridge or a bond, or
// released from it, since the socket was opened. The client then opens
// a new one before it sends.
func (t *udpTransport) Moved() (bool, string) {
	on := listenOn(t.iface)
	return on != t.on, on
}

func listenLinkLocal(iface string) (*net.UDPConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("dhcp6pd: interface %q: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("dhcp6pd: addresses of %s: %w", iface, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok || !ip.Is6() || ip.Is4In6() || !ip.IsLinkLocalUnicast() {
			continue
		}
		// EADDRNOTAVAIL while the address is tentative.
		return net.ListenUDP("udp6", &net.UDPAddr{IP: ip.AsSlice(), Port: clientPort, Zone: iface})
	}
	return nil, fmt.Errorf("%w on %s", errNoLinkLocal, iface)
}

func (t *udpTransport) read() {
	defer close(t.packets)
	buf := make([]byte, 65536)
	for {
		n, from, err := t.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			select {
			case <-t.closed:
			default:
				t.mu.Lock()
				t.err = err
				t.mu.Unlock()
			}
			return
		}
		if from.Port() != serverPort {
			continue
		}
		p := packet{data: append([]byte(nil), buf[:n]...), from: from.Addr().WithZone("")}
		select {
		case t.packets <- p:
		case <-t.closed:
			return
		}
	}
}

func (t *udpTransport) Send(b []byte) error {
	_, err := t.conn.WriteToUDP(b, t.dst)
	return err
}

func (t *udpTransport) Packets() <-chan packet { return t.packets }

func (t *udpTransport) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

func (t *udpTransport) Close() error {
	close(t.closed)
	return t.conn.Close()
}

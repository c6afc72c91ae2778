package dhcp6server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/ipv6"

	"github.com/v6cni/v6cni/pkg/daemon/internal/listenretry"
)

// Server serves DHCPv6 on one interface. Create it with New, run it with
// Run.
type Server struct {
	log *slog.Logger
	cfg atomic.Pointer[Config] // validated, defaults applied

	mu       sync.Mutex
	serverID dhcpv6.DUID // DUID-LL of the interface, set by Run

	// failure is why the server is not serving (nil while it is); see Err.
	failure atomic.Pointer[error]
}

// Err is why the server is not serving now (the interface missing, a
// socket error), nil while it serves or before Run first tries; Run keeps
// retrying meanwhile.
func (s *Server) Err() error {
	if e := s.failure.Load(); e != nil {
		return *e
	}
	return nil
}

// New validates cfg and returns a server for it; a nil logger discards.
// Nothing is opened before Run.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: logger.With("interface", c.Interface)}
	s.cfg.Store(&c)
	return s, nil
}

// Update replaces DNS, search list, lifetimes, rapid commit and Lookup
// without a restart; the interface cannot change.
func (s *Server) Update(cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if old := s.cfg.Load(); c.Interface != old.Interface {
		return fmt.Errorf("dhcp6server: update names interface %s, the server serves %s", c.Interface, old.Interface)
	}
	s.cfg.Store(&c)
	return nil
}

// Run serves on UDP port 547 of the interface (bound to it, joined to
// ff02::1:2 and ff05::1:3) until ctx is done, then returns nil. Its server
// DUID is a DUID-LL of the interface's MAC. While the interface is missing,
// and after a socket error, it retries with backoff (logging, not
// returning). Run it in the network namespace of the interface.
func (s *Server) Run(ctx context.Context) error {
	// While the interface is missing or the socket cannot open: the same
	// backoff as the RA server's on the same bridge (its cap was 5 s here,
	// for no reason but history).
	var retry listenretry.Backoff
	failing := false
	for {
		err := s.serveOnce(ctx, retry.Reset)
		if ctx.Err() != nil {
			return nil
		}
		s.failure.Store(&err)
		if !failing {
			s.log.Warn("DHCPv6 server waiting for the interface", "err", err)
			failing = true
		}
		if !retry.Wait(ctx) {
			return nil
		}
	}
}

// serveOnce opens the sockets and serves until an error or ctx ends;
// listening is called once it serves.
func (s *Server) serveOnce(ctx context.Context, listening func()) error {
	name := s.cfg.Load().Interface
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if len(ifi.HardwareAddr) == 0 {
		return fmt.Errorf("interface %s has no link-layer address for the server DUID", name)
	}
	s.mu.Lock()
	s.serverID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: ifi.HardwareAddr}
	s.mu.Unlock()

	// The UDP socket joins the DHCPv6 groups (so MLD snooping forwards
	// Solicits to the bridge), holds port 547 (no ICMP port unreachable)
	// and sends the replies; what it receives is discarded. Requests are
	// read from the packet socket, which alone knows the frame's origin.
	conn, err := server6.NewIPv6UDPConn(name, &net.UDPAddr{IP: net.IPv6unspecified, Port: dhcpv6.DefaultServerPort})
	if err != nil {
		return fmt.Errorf("listen on %s port 547: %w", name, err)
	}
	defer conn.Close()
	p := ipv6.NewPacketConn(conn)
	for _, g := range []net.IP{dhcpv6.AllDHCPRelayAgentsAndServers, dhcpv6.AllDHCPServers} {
		if err := p.JoinGroup(ifi, &net.UDPAddr{IP: g}); err != nil {
			return fmt.Errorf("join %s on %s: %w", g, name, err)
		}
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	pc, err := listenOrigin(ifi)
	if err != nil {
		return fmt.Errorf("packet socket on %s: %w", name, err)
	}
	defer pc.close()
	s.failure.Store(nil)
	listening()
	s.log.Info("DHCPv6 server started")
	buf := make([]byte, 65536)
	for ctx.Err() == nil {
		payload, from, err := pc.read(buf)
		if err != nil {
			if errors.Is(err, errTimeout) {
				continue
			}
			return fmt.Errorf("read on %s: %w", name, err)
		}
		m, err := decodeRequest(payload)
		if err != nil {
			s.log.Debug("DHCPv6 datagram not decoded", "from", from.Addr, "mac", from.MAC, "port", from.Port, "err", err)
			continue
		}
		s.handle(conn, ifi.Name, m, from)
	}
	return nil
}

// handle answers one message.
func (s *Server) handle(conn net.PacketConn, zone string, msg *dhcpv6.Message, from Origin) {
	s.mu.Lock()
	serverID := s.serverID
	s.mu.Unlock()
	reply, err := respond(*s.cfg.Load(), serverID, msg, from)
	if err != nil {
		s.log.Debug("DHCPv6 message not answered", "from", from.Addr, "mac", from.MAC, "port", from.Port, "type", msg.Type(), "err", err)
		return
	}
	s.log.Debug("DHCPv6 answer", "to", from.Addr, "mac", from.MAC, "port", from.Port, "type", msg.Type(), "reply", reply.Type(),
		"claimed", ClientMAC(msg, from.Addr), "summary", summary(reply))
	peer := &net.UDPAddr{IP: from.Addr.AsSlice(), Port: dhcpv6.DefaultClientPort, Zone: zone}
	if _, err := conn.WriteTo(reply.ToBytes(), peer); err != nil {
		s.log.Warn("DHCPv6 answer not sent", "to", peer, "err", err)
	}
}

// summary is the status or the addresses of a reply, for logs.
func summary(m *dhcpv6.Message) string {
	if st := m.Options.Status(); st != nil {
		return st.StatusCode.String()
	}
	if ia := m.Options.OneIANA(); ia != nil {
		if st := ia.Options.Status(); st != nil {
			return st.StatusCode.String()
		}
		var addrs []string
		for _, a := range ia.Options.Addresses() {
			addrs = append(addrs, fmt.Sprintf("%s (preferred %s, valid %s)", a.IPv6Addr, a.PreferredLifetime, a.ValidLifetime))
		}
		if len(addrs) > 0 {
			return strings.Join(addrs, ", ")
		}
	}
	return "ok"
}

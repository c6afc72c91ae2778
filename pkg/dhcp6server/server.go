package dhcp6server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"github.com/insomniacslk/dhcp/iana"
)

// Retry bounds while the interface is missing or the socket cannot open.
const (
	minListenRetry = 100 * time.Millisecond
	maxListenRetry = 5 * time.Second
)

// Server serves DHCPv6 on one interface. Create it with New, run it with
// Run.
type Server struct {
	log *slog.Logger
	cfg atomic.Pointer[Config] // validated, defaults applied

	mu       sync.Mutex
	serverID dhcpv6.DUID // DUID-LL of the interface, set by Run
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
	retry := minListenRetry
	failing := false
	for {
		err := s.serveOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !failing {
			s.log.Warn("DHCPv6 server waiting for the interface", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		retry = min(2*retry, maxListenRetry)
	}
}

func (s *Server) serveOnce(ctx context.Context) error {
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
	srv, err := server6.NewServer(name, nil, s.handle)
	if err != nil {
		return fmt.Errorf("listen on %s port 547: %w", name, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	s.log.Info("DHCPv6 server started")
	return srv.Serve()
}

// handle answers one message (server6 calls it on a goroutine of its own).
func (s *Server) handle(conn net.PacketConn, peer net.Addr, m dhcpv6.DHCPv6) {
	msg, ok := m.(*dhcpv6.Message)
	if !ok {
		return // relayed: not served
	}
	udp, ok := peer.(*net.UDPAddr)
	if !ok {
		return
	}
	src, _ := netip.AddrFromSlice(udp.IP)
	s.mu.Lock()
	serverID := s.serverID
	s.mu.Unlock()
	reply, err := respond(*s.cfg.Load(), serverID, msg, src.Unmap())
	if err != nil {
		s.log.Debug("DHCPv6 message not answered", "from", peer, "type", msg.Type(), "err", err)
		return
	}
	s.log.Debug("DHCPv6 answer", "to", peer, "type", msg.Type(), "reply", reply.Type(), "client", ClientMAC(msg, src.Unmap()), "summary", summary(reply))
	if _, err := conn.WriteTo(reply.ToBytes(), peer); err != nil {
		s.log.Warn("DHCPv6 answer not sent", "to", peer, "err", err)
	}
}

// summary is the status or the address of a reply, for logs.
func summary(m *dhcpv6.Message) string {
	if st := m.Options.Status(); st != nil {
		return st.StatusCode.String()
	}
	if ia := m.Options.OneIANA(); ia != nil {
		if st := ia.Options.Status(); st != nil {
			return st.StatusCode.String()
		}
		if a := ia.Options.OneAddress(); a != nil {
			return a.IPv6Addr.String()
		}
	}
	return "ok"
}

package dhcp6pd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Config configures a Client. The JSON keys let a daemon's config file embed
// it; Persister, Logger and OnChange are set in code.
type Config struct {
	// Interface is the uplink the delegating router is on.
	Interface string `json:"interface"`
	// PrefixLength is the length hint sent while no binding is held
	// (default 64). Servers may ignore it (Kea 2.2 does).
	PrefixLength int `json:"prefixLength,omitempty"`
	// DUID is the client's DUID. Empty: the one of the persisted binding,
	// else the DUID-LL of the interface's Ethernet MAC, else the DUID-UUID
	// of /etc/machine-id.
	DUID DUID `json:"duid,omitempty"`
	// IAID of the IA_PD. 0: the one of the persisted binding, else derived
	// from the interface name (IAIDFromName).
	IAID uint32 `json:"iaid,omitempty"`
	// TakeOver is set by a caller that starts this client on a binding
	// another node held until now (cluster delegation: the new leader of a
	// segment). The first Renew of the restored binding (Rebind when past
	// T2 or without a known server) then goes out at once with the take-over
	// timers, IRT 1 s, MRT 4 s, MRD 10 s, instead of 10 s/600 s; after 10 s
	// without a Reply the client Renews/Rebinds on the normal schedule. And
	// the client never Solicits while it holds a valid prefix: where it
	// would, it Rebinds after the usual back-off. Set in code only.
	TakeOver bool `json:"-"`

	// Persister stores the binding (nil: none; a restart then solicits).
	Persister Persister `json:"-"`
	// Logger (nil: slog.Default()).
	Logger *slog.Logger `json:"-"`
	// OnChange is called, from Run's goroutine, whenever the prefixes or their
	// lifetimes change: obtained, renewed, rebound, deprecated, expired,
	// released, or restored from the Persister at start. It gets a copy of
	// the binding; Binding.Valid and Binding.Usable tell which prefixes to
	// keep and which to hand out from. It must not block for long and must
	// not call Release.
	OnChange func(Binding) `json:"-"`
}

// DefaultPrefixLength is the length hint when Config.PrefixLength is 0.
const DefaultPrefixLength = 64

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Interface == "" {
		return errors.New("dhcp6pd: interface is required")
	}
	if len(c.Interface) >= 16 {
		return fmt.Errorf("dhcp6pd: invalid interface name %q", c.Interface)
	}
	if c.PrefixLength < 0 || c.PrefixLength > 128 {
		return fmt.Errorf("dhcp6pd: prefixLength %d out of range 1-128", c.PrefixLength)
	}
	if len(c.DUID) > 0 && (len(c.DUID) < 3 || len(c.DUID) > 130) {
		return fmt.Errorf("dhcp6pd: invalid DUID %s", c.DUID)
	}
	return nil
}

// ErrPortInUse is returned by Run when another DHCPv6 client already listens
// on the interface: two clients on one link fight over the binding.
var ErrPortInUse = errors.New("another DHCPv6 client holds port 546")

// ErrNotRunning is returned by Release when Run is not running.
var ErrNotRunning = errors.New("dhcp6pd: client is not running")

// Exchange names one counter of Stats.Exchanges: the client message and how
// the exchange went ("advertise", "success", "timeout", "empty", "noIA", or
// a status code name such as "NoPrefixAvail", "NoBinding", "UnspecFail").
type Exchange struct {
	Message string // "solicit", "request", "renew", "rebind", "release"
	Result  string
}

// Stats are the client's counters since New.
type Stats struct {
	Sent       map[string]uint64   // messages sent by type, retransmissions included
	Exchanges  map[Exchange]uint64 // server answers (and timeouts) by exchange and result
	Expired    uint64              // prefixes dropped at the end of their valid lifetime
	Invalid    uint64              // datagrams dropped: malformed, or for another exchange or client
	SendErrors uint64
	SaveErrors uint64
}

func newStats() Stats {
	return Stats{Sent: map[string]uint64{}, Exchanges: map[Exchange]uint64{}}
}

func (s Stats) clone() Stats {
	s.Sent = maps.Clone(s.Sent)
	s.Exchanges = maps.Clone(s.Exchanges)
	return s
}

// Client is a DHCPv6 prefix delegation client for one interface and one
// IA_PD.
type Client struct {
	cfg Config
	log *slog.Logger

	// Injected by tests.
	clock   clock
	rnd     func() float64
	open    func(ctx context.Context, iface string) (transport, error)
	hwaddr  func(iface string) (net.HardwareAddr, error)
	machine string // path of the machine id

	mu        sync.Mutex
	running   bool
	runDone   chan struct{} // closed when the current Run returns
	binding   Binding
	stats     Stats
	releaseCh chan chan error
}

// New returns a client for cfg. It does no I/O: Run does.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PrefixLength == 0 {
		cfg.PrefixLength = DefaultPrefixLength
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Client{
		cfg:       cfg,
		log:       log.With("component", "dhcp6pd", "interface", cfg.Interface),
		clock:     realClock{},
		rnd:       rand.Float64,
		open:      openUDP,
		hwaddr:    interfaceMAC,
		machine:   "/etc/machine-id",
		stats:     newStats(),
		releaseCh: make(chan chan error),
	}, nil
}

// Binding returns a copy of the binding as last reported to OnChange.
func (c *Client) Binding() Binding {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.binding.Clone()
}

// Stats returns a copy of the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats.clone()
}

// Release gives the delegated prefixes back to the server, reports the
// binding without prefixes (OnChange, Persister), and makes Run return nil.
// A plain stop (cancelling Run's context) does not release: the persisted
// binding is renewed at the next Run.
func (c *Client) Release(ctx context.Context) error {
	done := make(chan error, 1)
	c.mu.Lock()
	running, runDone := c.running, c.runDone
	c.mu.Unlock()
	if !running {
		return ErrNotRunning
	}
	select {
	case c.releaseCh <- done:
	case <-runDone:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-runDone:
		select {
		case err := <-done: // Run answered, then returned
			return err
		default:
			return ErrNotRunning
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run runs the client until ctx ends (it then returns nil, without
// Release) or Release completes. It returns an error when it cannot start:
// the Persister fails to load, the interface is missing or has no usable
// link-local address within a bounded wait, or port 546 is taken
// (ErrPortInUse); and later only when the socket fails and cannot be bound
// again, or at once when Persister.Save fails with an error wrapping
// ErrNotOwner (nothing more is sent, not even the packets of the event that
// changed the binding). Run again after an error: with a Persister the
// binding is renewed.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("dhcp6pd: Run is already running")
	}
	c.running = true
	runDone := make(chan struct{})
	c.runDone = runDone
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
		close(runDone)
	}()

	var saved Binding
	if c.cfg.Persister != nil {
		b, err := c.cfg.Persister.Load(ctx)
		if err != nil {
			return fmt.Errorf("dhcp6pd: load binding for %s: %w", c.cfg.Interface, err)
		}
		saved = b
	}
	duid, err := c.clientDUID(saved)
	if err != nil {
		return err
	}
	iaid := c.cfg.IAID
	if iaid == 0 {
		iaid = saved.IAID
	}
	if iaid == 0 {
		iaid = IAIDFromName(c.cfg.Interface)
	}

	tr, err := c.open(ctx, c.cfg.Interface)
	if err != nil {
		return err
	}
	defer func() { tr.Close() }()

	m := newMachine(c.cfg.Interface, duid, iaid, c.cfg.PrefixLength, c.rnd, c.log)
	m.takeOver = c.cfg.TakeOver
	m.start(c.clock.Now(), saved)
	c.log.Info("DHCPv6-PD client started", "duid", duid, "iaid", iaid, "state", m.st, "takeOver", c.cfg.TakeOver)

	var releaseDone chan error
	for {
		out, changed := m.takeOutput()
		// Save before sending what the same event produced: a client that
		// is no longer the owner learns it here and sends nothing more.
		var b Binding
		if changed {
			b = m.b.Clone()
			if err := c.save(ctx, m, b); err != nil {
				for _, pkt := range out { // counted when queued, never sent
					typ := msgName(dhcpv6.MessageType(pkt[0]))
					if m.stats.Sent[typ]--; m.stats.Sent[typ] == 0 {
						delete(m.stats.Sent, typ)
					}
				}
				c.mu.Lock()
				c.stats = m.stats.clone()
				c.mu.Unlock()
				if releaseDone != nil {
					releaseDone <- err
				}
				return err
			}
		}
		if mv, ok := tr.(mover); ok && len(out) > 0 {
			if moved, on := mv.Moved(); moved {
				// The interface became a bridge's (or bond's) port, or
				// stopped being one: its master receives the Replies now.
				tr.Close()
				if tr, err = c.open(ctx, c.cfg.Interface); err != nil {
					return err
				}
				c.log.Info("socket reopened: the interface's master changed", "listenOn", on)
			}
		}
		reopen := false
		for _, pkt := range out {
			if err := tr.Send(pkt); err != nil {
				m.stats.SendErrors++
				c.log.Warn("send DHCPv6 message", "err", err)
				reopen = reopen || addressGone(err)
			}
		}
		if reopen {
			// The link-local address or the interface went away (a flap, a new
			// MAC): bind again, keeping the binding and the exchange; the
			// retransmission schedule resends.
			tr.Close()
			if tr, err = c.open(ctx, c.cfg.Interface); err != nil {
				return err
			}
			c.log.Info("socket reopened after the interface changed")
		}
		if changed && c.cfg.OnChange != nil {
			c.cfg.OnChange(b.Clone())
		}
		c.mu.Lock()
		c.stats = m.stats.clone()
		c.mu.Unlock()
		if m.st == stReleased {
			if releaseDone != nil {
				releaseDone <- nil
			}
			return nil
		}

		t := c.clock.NewTimer(m.deadline().Sub(c.clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
			m.timer(c.clock.Now())
		case p, ok := <-tr.Packets():
			t.Stop()
			if !ok {
				return fmt.Errorf("dhcp6pd: socket on %s closed: %w", c.cfg.Interface, tr.Err())
			}
			m.packet(c.clock.Now(), p.data, p.from)
		case releaseDone = <-c.releaseCh:
			t.Stop()
			m.release(c.clock.Now())
		}
	}
}

// save hands a changed binding to the snapshot and the Persister. It
// returns only an error wrapping ErrNotOwner; other Save errors are logged
// and counted, and the client goes on with what it holds.
func (c *Client) save(ctx context.Context, m *machine, b Binding) error {
	c.mu.Lock()
	c.binding = b.Clone()
	c.mu.Unlock()
	if c.cfg.Persister == nil {
		return nil
	}
	err := c.cfg.Persister.Save(ctx, b.Clone())
	if err == nil {
		return nil
	}
	m.stats.SaveErrors++
	if errors.Is(err, ErrNotOwner) {
		c.log.Warn("PD binding owned elsewhere now; stopping without another packet", "err", err)
		return fmt.Errorf("dhcp6pd: save binding for %s: %w", c.cfg.Interface, err)
	}
	c.log.Error("save PD binding", "err", err)
	return nil
}

// clientDUID picks the DUID: configured, persisted, DUID-LL of the
// interface, DUID-UUID of the machine id.
func (c *Client) clientDUID(saved Binding) (DUID, error) {
	if len(c.cfg.DUID) > 0 {
		return c.cfg.DUID, nil
	}
	if len(saved.ClientDUID) > 0 {
		return saved.ClientDUID, nil
	}
	mac, err := c.hwaddr(c.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("dhcp6pd: %w", err)
	}
	if len(mac) == 6 {
		return DUIDLL(mac), nil
	}
	d, err := DUIDFromMachineID(c.machine)
	if err != nil {
		return nil, fmt.Errorf("dhcp6pd: %s has no MAC address for a DUID-LL and: %w", c.cfg.Interface, err)
	}
	return d, nil
}

// addressGone reports whether a send failed because the socket's address or
// interface no longer exists.
func addressGone(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO)
}

func interfaceMAC(name string) (net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	return ifi.HardwareAddr, nil
}

// packet is a datagram from a server.
type packet struct {
	data []byte
	from netip.Addr
}

// transport sends to All_DHCP_Relay_Agents_and_Servers and delivers what
// arrives on port 546.
type transport interface {
	Send(b []byte) error
	// Packets is closed when the socket fails; Err then says why.
	Packets() <-chan packet
	Err() error
	Close() error
}

// mover is a transport that can tell that the interface it listens on
// for the configured one has changed (udpTransport: the configured one
// was enslaved to a bridge or released from it).
type mover interface {
	Moved() (bool, string)
}

type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) timer
}

type timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) NewTimer(d time.Duration) timer {
	return realTimer{time.NewTimer(d)}
}

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

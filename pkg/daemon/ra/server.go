package ra

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/v6cni/v6cni/pkg/daemon/internal/listenretry"
)

// Protocol constants of RFC 4861 section 10 (router side).
const (
	maxInitialAdvertisements = 3
	maxInitialInterval       = 16 * time.Second
	minDelayBetweenRAs       = 3 * time.Second
	maxRADelay               = 500 * time.Millisecond
)

// withdrawnAdvertisements is how many RAs still carry a prefix an Update
// removed, with lifetimes 0.
const withdrawnAdvertisements = 3

// Unicast answers to solicitations are rate limited by a token bucket:
// at most unicastBurst at once, unicastPerSecond on average.
const (
	unicastBurst     = 20
	unicastPerSecond = 10
)

var (
	allNodes   = netip.MustParseAddr("ff02::1")
	allRouters = netip.MustParseAddr("ff02::2")
)

// Server advertises one interface. Create it with New, run it with Run.
type Server struct {
	log *slog.Logger

	// failure is why the server is not advertising (nil while it is);
	// see Err.
	failure atomic.Pointer[error]

	mu      sync.Mutex
	cfg     Config // validated, defaults applied
	updated chan struct{}

	readyOnce sync.Once
	ready     chan struct{}
}

// New validates cfg and returns a server for it; a nil logger discards.
// Nothing is opened before Run.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// Marshal once so that a bad search domain fails here, not in Run.
	if _, err := ndp.MarshalMessage(build(c, nil, nil, false, time.Now())); err != nil {
		return nil, fmt.Errorf("ra: %s: %w", c.Interface, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log:     logger.With("interface", c.Interface),
		cfg:     c,
		updated: make(chan struct{}, 1),
		ready:   make(chan struct{}),
	}, nil
}

// Update replaces what the server advertises (prefixes and their
// lifetimes, DNS, mode, MTU) without a restart; the interface cannot
// change. When the content changed, a running server sends an RA with it
// at once: right away if the last multicast RA is at least
// MIN_DELAY_BETWEEN_RAS (3 s) old, else when it is (RFC 4861 section
// 6.2.6 allows no more); then, as after a start, the next few RAs come at
// most 16 s apart (section 6.2.4 treats a change like an initialisation),
// so a host that missed one learns it soon. Prefixes no longer in cfg are
// advertised with lifetimes 0 in the next few RAs, so hosts deprecate
// their addresses. An Update that changes nothing sends nothing.
func (s *Server) Update(cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if _, err := ndp.MarshalMessage(build(c, nil, nil, false, time.Now())); err != nil {
		return fmt.Errorf("ra: %s: %w", c.Interface, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Interface != s.cfg.Interface {
		return fmt.Errorf("ra: update names interface %s, the server serves %s", c.Interface, s.cfg.Interface)
	}
	if sameConfig(c, s.cfg) {
		return nil
	}
	s.cfg = c
	select {
	case s.updated <- struct{}{}:
	default:
	}
	return nil
}

// Ready is closed once the server has its socket and has sent its first RA.
func (s *Server) Ready() <-chan struct{} { return s.ready }

func (s *Server) config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Err is why the server is not advertising now (the interface or its
// link-local address missing, a socket error), nil while it is or before
// Run first tries; Run keeps retrying meanwhile.
func (s *Server) Err() error {
	if e := s.failure.Load(); e != nil {
		return *e
	}
	return nil
}

// Run serves until ctx is done, then sends a final RA with router lifetime
// 0 (unless Config.NoFinalRA) and returns nil. While the interface or its
// usable (non-tentative) link-local address is missing, and after a socket
// error, it retries with backoff (logging, not returning). Run it in the
// network namespace of the interface: its sockets are opened there.
func (s *Server) Run(ctx context.Context) error {
	// While the interface or its link-local address is missing: a bridge
	// without ports has no carrier, so no link-local address; a new one is
	// tentative for about a second.
	var retry listenretry.Backoff
	failing := false
	for {
		conn, ifi, err := s.listen()
		if err != nil {
			s.failure.Store(&err)
			if !failing {
				s.log.Warn("router advertisements waiting for the interface", "err", err)
				failing = true
			}
			if !retry.Wait(ctx) {
				return nil
			}
			continue
		}
		if failing {
			s.log.Info("router advertisements started")
			failing = false
		}
		retry.Reset()
		s.failure.Store(nil)
		err = s.serve(ctx, conn, ifi)
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		s.failure.Store(&err)
		s.log.Warn("router advertisements interrupted, reopening", "err", err)
		failing = true
	}
}

// listen opens the ICMPv6 socket on the interface's link-local address,
// receiving only router solicitations, with their hop limit, on all-routers.
func (s *Server) listen() (*ndp.Conn, *net.Interface, error) {
	name := s.config().Interface
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, nil, fmt.Errorf("interface %s: %w", name, err)
	}
	conn, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on the link-local address of %s: %w", name, err)
	}
	var filter ipv6.ICMPFilter
	filter.SetAll(true)
	filter.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := conn.SetICMPFilter(&filter); err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("set ICMPv6 filter on %s: %w", name, err)
	}
	if err := conn.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("ask for hop limits on %s: %w", name, err)
	}
	if err := conn.JoinGroup(allRouters); err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("join ff02::2 on %s: %w", name, err)
	}
	return conn, ifi, nil
}

// serve is the loop of one socket: periodic RAs, answers to solicitations,
// updates; on ctx done the final RA.
func (s *Server) serve(ctx context.Context, conn *ndp.Conn, ifi *net.Interface) error {
	solicits := make(chan solicitation, 16)
	readErr := make(chan error, 1)
	go func() { readErr <- readSolicitations(conn, solicits) }()

	cfg := s.config()
	var (
		sent         int          // multicast RAs sent on this socket
		sinceChange  int          // of them since the start or the last Update
		lastMcast    time.Time    // when the last one went out
		withdrawn    []withdrawal // prefixes removed by Update
		tokens       = float64(unicastBurst)
		tokensAt     = time.Now()
		pendingMcast bool // a multicast answer to a solicitation is scheduled
	)
	timer := time.NewTimer(0) // the first RA at once
	defer timer.Stop()

	advertisement := func(final bool) *ndp.RouterAdvertisement {
		var w []netip.Prefix
		for _, x := range withdrawn {
			w = append(w, x.prefix)
		}
		return build(cfg, ifi.HardwareAddr, w, final, time.Now())
	}
	multicast := func() error {
		err := conn.WriteTo(advertisement(false), nil, allNodes)
		sent++
		sinceChange++
		lastMcast = time.Now()
		pendingMcast = false
		for i := range withdrawn {
			withdrawn[i].left--
		}
		withdrawn = slices.DeleteFunc(withdrawn, func(x withdrawal) bool { return x.left <= 0 })
		resetTimer(timer, nextInterval(cfg.MaxInterval, sinceChange))
		if err != nil {
			return fmt.Errorf("send router advertisement on %s: %w", ifi.Name, err)
		}
		s.readyOnce.Do(func() { close(s.ready) })
		return nil
	}
	// asap schedules a multicast RA as soon as the minimum delay allows.
	asap := func(delay time.Duration) {
		resetTimer(timer, mcastDelay(time.Now(), lastMcast, sent, delay))
		pendingMcast = true
	}

	for {
		select {
		case <-ctx.Done():
			if !cfg.NoFinalRA {
				if err := conn.WriteTo(advertisement(true), nil, allNodes); err != nil {
					s.log.Warn("final router advertisement", "err", err)
				}
			}
			return ctx.Err()
		case err := <-readErr:
			return err
		case <-timer.C:
			if err := multicast(); err != nil {
				// A bridge that lost its last port drops packets
				// (ENETDOWN…): keep the schedule, say it once.
				s.log.Debug("router advertisement not sent", "err", err)
			}
		case <-s.updated:
			next := s.config()
			withdrawn = withdraw(withdrawn, cfg.Prefixes, next.Prefixes)
			cfg = next
			sinceChange = 0
			asap(0)
		case rs := <-solicits:
			if !rs.src.IsUnspecified() {
				now := time.Now()
				tokens = min(float64(unicastBurst), tokens+now.Sub(tokensAt).Seconds()*unicastPerSecond)
				tokensAt = now
				if tokens >= 1 {
					tokens--
					if err := conn.WriteTo(advertisement(false), nil, rs.src.WithZone(ifi.Name)); err != nil {
						s.log.Debug("answer to router solicitation not sent", "to", rs.src, "err", err)
					}
					continue
				}
			}
			// From a host without an address yet (or over the unicast
			// rate): a multicast RA after a random delay (RFC 4861
			// section 6.2.6), unless one is already on its way.
			if !pendingMcast {
				asap(rand.N(maxRADelay))
			}
		}
	}
}

type withdrawal struct {
	prefix netip.Prefix
	left   int
}

// withdraw adds to withdrawn the prefixes of prev missing from next (each
// for withdrawnAdvertisements RAs) and drops those next advertises again.
func withdraw(withdrawn []withdrawal, prev, next []Prefix) []withdrawal {
	in := func(ps []Prefix, p netip.Prefix) bool {
		return slices.ContainsFunc(ps, func(q Prefix) bool { return q.Prefix == p })
	}
	for _, p := range prev {
		if !in(next, p.Prefix) {
			withdrawn = append(withdrawn, withdrawal{prefix: p.Prefix, left: withdrawnAdvertisements})
		}
	}
	return slices.DeleteFunc(withdrawn, func(x withdrawal) bool { return in(next, x.prefix) })
}

// mcastDelay is how long to wait, at now, before a multicast RA wanted
// after delay (0 for a configuration change, random up to 500 ms for a
// solicitation), when the last one went out at last and sent have gone
// out on this socket: consecutive multicast RAs are at least
// MIN_DELAY_BETWEEN_RAS apart (RFC 4861 section 6.2.6); the first one is
// not held back.
func mcastDelay(now, last time.Time, sent int, delay time.Duration) time.Duration {
	if sent == 0 {
		return delay
	}
	return max(last.Add(minDelayBetweenRAs).Sub(now), delay)
}

// sameConfig reports whether a and b (both defaulted) advertise the same.
func sameConfig(a, b Config) bool {
	return a.Interface == b.Interface && a.Mode == b.Mode && a.MTU == b.MTU &&
		a.RouterLifetime == b.RouterLifetime && a.MaxInterval == b.MaxInterval &&
		a.ValidLifetime == b.ValidLifetime && a.PreferredLifetime == b.PreferredLifetime &&
		a.NoFinalRA == b.NoFinalRA &&
		slices.Equal(a.DNS, b.DNS) && slices.Equal(a.Search, b.Search) &&
		slices.EqualFunc(a.Prefixes, b.Prefixes, func(x, y Prefix) bool {
			return x.Prefix == y.Prefix && x.Preferred == y.Preferred && x.Valid == y.Valid &&
				x.Deprecated == y.Deprecated && x.PreferredUntil.Equal(y.PreferredUntil) && x.ValidUntil.Equal(y.ValidUntil)
		})
}

// readSolicitations feeds valid solicitations to out until the socket
// fails (or is closed); invalid ones are dropped, as RFC 4861 requires.
func readSolicitations(conn *ndp.Conn, out chan<- solicitation) error {
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := conn.ReadRaw(buf)
		if err != nil {
			return err
		}
		hopLimit := 0
		if cm != nil {
			hopLimit = cm.HopLimit
		}
		rs, err := parseSolicitation(buf[:n], hopLimit, src)
		if err != nil {
			continue
		}
		select {
		case out <- rs:
		default: // flooded: the periodic RAs still come
		}
	}
}

// nextInterval is the wait before the next unsolicited RA after sent of
// them went out: uniform in [MinRtrAdvInterval, MaxRtrAdvInterval], and at
// most 16 s for the first few (RFC 4861 section 6.2.4).
func nextInterval(maxInterval time.Duration, sent int) time.Duration {
	lo := minInterval(maxInterval)
	d := lo + rand.N(maxInterval-lo+1)
	if sent < maxInitialAdvertisements {
		d = min(d, maxInitialInterval)
	}
	return d
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

package bgpspeaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	apipb "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// connectRetry is the seconds between dial attempts (GoBGP waits a random
// 1–2× of it; a dial times out after connectRetry-1 s). GoBGP's default
// of 120 s would leave a session to a rebooted router down for minutes.
const connectRetry = 5

// notEstablishedWarning is how long a session may stay down before the
// speaker logs a warning and PeerStatus.Message explains it. A variable
// so that tests can shorten it.
var notEstablishedWarning = 30 * time.Second

// ErrNotRunning is returned by calls that need a started, not yet stopped
// Speaker.
var ErrNotRunning = errors.New("bgp: speaker is not running")

type lifecycle int

const (
	created lifecycle = iota
	running
	stopped
)

// Speaker announces this node's prefixes to its BGP peers through an
// embedded GoBGP server. Create it with New, Start it once with the
// routes derived from state, keep it in step with SetRoutes, and Stop it.
// Its methods are safe for concurrent use.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer

	mu        sync.Mutex // serialises Start, SetRoutes, Stop
	state     lifecycle
	announced map[netip.Prefix]announced
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	peerMu sync.Mutex
	peers  map[netip.Addr]*peerWatch
}

type announced struct {
	announcement
	uuid []byte // GoBGP's handle of the path, for DeletePath
}

// peerWatch follows one session's state for logs and PeerStatus.Message.
type peerWatch struct {
	established bool
	downSince   time.Time // when the session was configured or last went down
	warned      bool
}

// New checks cfg (after filling in defaults) and returns a Speaker that is
// not started. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Speaker, error) {
	cfg.Peers = slices.Clone(cfg.Peers)
	cfg.Families = slices.Clone(cfg.Families)
	cfg.Communities = slices.Clone(cfg.Communities)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Speaker{
		cfg:       cfg,
		log:       logger.With("component", "bgp"),
		announced: map[netip.Prefix]announced{},
		peers:     map[netip.Addr]*peerWatch{},
	}, nil
}

// Start starts the BGP server, installs the initial routes and then
// dials the peers. initial must be the full set derived from state: it
// is in place before any session opens, so after a restart peers holding
// this node's routes as stale (graceful restart) get them refreshed
// rather than withdrawn and re-added, and routes no longer in the set are
// withdrawn by the End-of-RIB that follows.
//
// With graceful restart enabled every start is treated as a restart
// (Restart State bit set): updates wait for each peer's End-of-RIB, or
// for half the restart time, as RFC 4724 asks.
func (s *Speaker) Start(ctx context.Context, initial []Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != created {
		return errors.New("bgp: Start called twice (a Speaker runs once; make a new one)")
	}
	desired, err := desiredSet(&s.cfg, initial)
	if err != nil {
		return err
	}

	s.srv = server.NewBgpServer(server.LoggerOption(gobgpLogger{s.log}))
	go s.srv.Serve()

	listenPort := int32(-1) // no listener
	if s.cfg.ListenPort > 0 {
		listenPort = int32(s.cfg.ListenPort)
	}
	if err := s.srv.StartBgp(ctx, &apipb.StartBgpRequest{Global: &apipb.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: listenPort,
	}}); err != nil {
		return fmt.Errorf("bgp: start (as %d, router-id %s, listen port %d): %w", s.cfg.ASN, s.cfg.RouterID, s.cfg.ListenPort, err)
	}
	s.state = running

	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.srv.WatchEvent(bg, &apipb.WatchEventRequest{Peer: &apipb.WatchEventRequest_Peer{}}, s.onPeerEvent); err != nil {
		s.abortStart()
		return fmt.Errorf("bgp: watch peer events: %w", err)
	}
	if err := s.applyLocked(ctx, desired); err != nil {
		s.abortStart()
		return err
	}
	for _, p := range s.cfg.Peers {
		s.peerMu.Lock()
		s.peers[p.Address.Unmap()] = &peerWatch{downSince: time.Now()}
		s.peerMu.Unlock()
		if err := s.srv.AddPeer(ctx, &apipb.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			s.abortStart()
			return fmt.Errorf("bgp: add peer %s (as %d): %w", p.Address, p.ASN, err)
		}
	}
	s.wg.Add(1)
	go s.watchSessions(bg)
	s.log.Info("bgp speaker started", "asn", s.cfg.ASN, "routerID", s.cfg.RouterID,
		"peers", len(s.cfg.Peers), "routes", len(s.announced), "gracefulRestart", s.cfg.GracefulRestart.IsEnabled())
	return nil
}

func (s *Speaker) abortStart() {
	s.cancel()
	_ = s.srv.StopBgp(context.Background(), &apipb.StopBgpRequest{})
	s.state = stopped
}

// apiPeer is the GoBGP neighbour configuration of one peer.
func (s *Speaker) apiPeer(p PeerConfig) *apipb.Peer {
	gr := s.cfg.GracefulRestart
	afis := make([]*apipb.AfiSafi, 0, len(s.cfg.Families))
	for _, f := range s.cfg.Families {
		afis = append(afis, &apipb.AfiSafi{
			Config:            &apipb.AfiSafiConfig{Family: apiFamily(f), Enabled: true},
			MpGracefulRestart: &apipb.MpGracefulRestart{Config: &apipb.MpGracefulRestartConfig{Enabled: gr.IsEnabled()}},
		})
	}
	peer := &apipb.Peer{
		Conf: &apipb.PeerConf{
			NeighborAddress: p.Address.Unmap().String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
		},
		Timers: &apipb.Timers{Config: &apipb.TimersConfig{
			HoldTime:          uint64(p.HoldTime),
			KeepaliveInterval: uint64(max(p.HoldTime/3, 1)),
			ConnectRetry:      connectRetry,
		}},
		Transport: &apipb.Transport{PassiveMode: false},
		AfiSafis:  afis,
	}
	if p.LocalAddress.IsValid() {
		peer.Transport.LocalAddress = p.LocalAddress.Unmap().String()
	}
	if p.Multihop > 1 {
		peer.EbgpMultihop = &apipb.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if gr.IsEnabled() {
		peer.GracefulRestart = &apipb.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(gr.RestartTime),
			DeferralTime:    uint32(max(gr.RestartTime/2, 1)),
			LocalRestarting: true,
		}
	}
	return peer
}

// SetRoutes makes the announced set equal to routes: new prefixes (or
// changed communities) are announced, prefixes not in routes withdrawn,
// unchanged ones left alone. It is idempotent: call it with the full
// desired set after every change. On error (an invalid route) nothing is
// changed; on a GoBGP failure part of the change may be applied, and the
// next call retries the rest.
func (s *Speaker) SetRoutes(ctx context.Context, routes []Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != running {
		return ErrNotRunning
	}
	desired, err := desiredSet(&s.cfg, routes)
	if err != nil {
		return err
	}
	return s.applyLocked(ctx, desired)
}

func (s *Speaker) applyLocked(ctx context.Context, desired map[netip.Prefix]announcement) error {
	current := make(map[netip.Prefix]announcement, len(s.announced))
	for p, a := range s.announced {
		current[p] = a.announcement
	}
	announce, withdraw := diffRoutes(current, desired)
	var errs []error
	for _, a := range announce {
		path, err := apiPath(&s.cfg, a)
		if err == nil {
			var resp *apipb.AddPathResponse
			resp, err = s.srv.AddPath(ctx, &apipb.AddPathRequest{TableType: apipb.TableType_GLOBAL, Path: path})
			if err == nil {
				s.announced[a.prefix] = announced{announcement: a, uuid: resp.GetUuid()}
				s.log.Debug("bgp announce", "prefix", a.prefix)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", a.prefix, err))
		}
	}
	for _, p := range withdraw {
		a := s.announced[p]
		err := s.srv.DeletePath(ctx, &apipb.DeletePathRequest{
			TableType: apipb.TableType_GLOBAL,
			Family:    apiFamily(a.family()),
			Uuid:      a.uuid, // never empty: without it GoBGP deletes every path of the family
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", p, err))
			continue
		}
		delete(s.announced, p)
		s.log.Debug("bgp withdraw", "prefix", p)
	}
	if len(announce)+len(withdraw) > 0 {
		s.log.Info("bgp routes updated", "announced", len(announce), "withdrawn", len(withdraw),
			"total", len(s.announced), "errors", len(errs))
	}
	return errors.Join(errs...)
}

// Routes returns the routes currently announced, sorted by prefix.
func (s *Speaker) Routes() []Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Route, 0, len(s.announced))
	for _, a := range s.announced {
		r := Route{Prefix: a.prefix}
		for _, c := range a.communities {
			r.Communities = append(r.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// Stop is a planned stop that keeps this node's routes at the peers. With
// graceful restart enabled (the default) no NOTIFICATION is sent: the
// TCP sessions are closed under the BGP server, which is what peers see
// when a speaker restarts, so they keep the routes as stale for the
// restart time; the next Speaker re-announces them and its End-of-RIB
// clears what is gone. (GoBGP's own StopBgp sends a Cease, after which
// peers drop the routes at once.) With graceful restart disabled Stop is
// StopAndWithdraw. The Speaker cannot be started again.
func (s *Speaker) Stop(ctx context.Context) error {
	if !s.cfg.GracefulRestart.IsEnabled() {
		return s.StopAndWithdraw(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != running {
		return ErrNotRunning
	}
	s.state = stopped
	s.cancel()

	s.peerMu.Lock()
	up := 0
	for _, w := range s.peers {
		if w.established {
			up++
		}
	}
	s.peerMu.Unlock()
	n, err := shutdownSessions(s.isSessionSocket)
	if err != nil || n < up {
		s.log.Warn("bgp graceful stop: could not close every session without a NOTIFICATION; those peers will drop this node's routes",
			"established", up, "closed", n, "error", err)
	}
	// The sessions are dead, so the Cease StopBgp sends goes nowhere; it
	// still tears the FSMs down.
	err = s.srv.StopBgp(ctx, &apipb.StopBgpRequest{})
	s.wg.Wait()
	s.log.Info("bgp speaker stopped, routes kept at the peers (graceful restart)",
		"sessionsClosed", n, "routes", len(s.announced), "restartTime", s.cfg.GracefulRestart.RestartTime)
	return err
}

// StopAndWithdraw stops the speaker with a Cease to every peer: the
// peers drop this node's routes at once. For decommissioning a node, not
// for restarts.
func (s *Speaker) StopAndWithdraw(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != running {
		return ErrNotRunning
	}
	s.state = stopped
	s.cancel()
	err := s.srv.StopBgp(ctx, &apipb.StopBgpRequest{})
	s.wg.Wait()
	s.log.Info("bgp speaker stopped, routes withdrawn", "routes", len(s.announced))
	return err
}

// isSessionSocket reports whether a TCP connection of this process is a
// BGP session of this speaker: to a configured peer's port 179 (we dial)
// or to our listen port (the peer dialled), from the configured local
// address if there is one.
func (s *Speaker) isSessionSocket(local, remote netip.AddrPort) bool {
	for _, p := range s.cfg.Peers {
		if remote.Addr().Unmap() != p.Address.Unmap() {
			continue
		}
		if p.LocalAddress.IsValid() && local.Addr().Unmap() != p.LocalAddress.Unmap() {
			continue
		}
		if remote.Port() == 179 || (s.cfg.ListenPort > 0 && int(local.Port()) == s.cfg.ListenPort) {
			return true
		}
	}
	return false
}

// onPeerEvent runs in GoBGP's watcher goroutine for every session state
// change.
func (s *Speaker) onPeerEvent(r *apipb.WatchEventResponse) {
	ev := r.GetPeer()
	if ev == nil || ev.GetType() != apipb.WatchEventResponse_PeerEvent_STATE {
		return
	}
	st := ev.GetPeer().GetState()
	addr, err := netip.ParseAddr(st.GetNeighborAddress())
	if err != nil {
		return
	}
	addr = addr.Unmap()
	up := st.GetSessionState() == apipb.PeerState_ESTABLISHED

	s.peerMu.Lock()
	w := s.peers[addr]
	if w == nil {
		w = &peerWatch{downSince: time.Now()}
		s.peers[addr] = w
	}
	wasUp := w.established
	w.established = up
	if wasUp && !up {
		w.downSince, w.warned = time.Now(), false
	}
	s.peerMu.Unlock()

	switch {
	case up && !wasUp:
		s.log.Info("bgp session established", "peer", addr, "peerASN", st.GetPeerAsn(),
			"local", ev.GetPeer().GetTransport().GetLocalAddress())
	case wasUp && !up:
		s.log.Warn("bgp session down", "peer", addr, "peerASN", st.GetPeerAsn(), "state", sessionState(st.GetSessionState()))
	}
}

// watchSessions logs once per outage a session that stays down longer
// than notEstablishedWarning. A TCP-MD5 mismatch in particular is
// silent: the kernel drops the segments and no error reaches BGP.
func (s *Speaker) watchSessions(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range s.cfg.Peers {
			s.peerMu.Lock()
			w := s.peers[p.Address.Unmap()]
			warn := w != nil && !w.established && !w.warned && time.Since(w.downSince) >= notEstablishedWarning
			var since time.Time
			if warn {
				w.warned, since = true, w.downSince
			}
			s.peerMu.Unlock()
			if warn {
				s.log.Warn("bgp session not established", "peer", p.Address, "peerASN", p.ASN,
					"for", time.Since(since).Round(time.Second).String(), "hint", downHint(p))
			}
		}
	}
}

// downHint says what to check when a session does not come up.
func downHint(p PeerConfig) string {
	if p.Password != "" {
		return "check reachability, the peer's ASN and address, and the TCP-MD5 password: a wrong password is silent (the kernel drops the segments)"
	}
	return "check reachability and the peer's ASN and address; if the peer expects a TCP-MD5 password, none is configured here"
}

func sessionState(s apipb.PeerState_SessionState) string {
	return strings.ToLower(s.String())
}

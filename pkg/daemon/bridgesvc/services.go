package bridgesvc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6server"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/ra"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/link"
)

// Services serves router advertisements (and DHCPv6, in the dhcpv6-*
// modes) on each bridge that has at least one self-configuring attachment
// on this node (bridge-v6 ipv6Mode slaac, dhcpv6-stateless,
// dhcpv6-stateful). The membership is the node's handles in etcd: ADD and
// DEL update it at once, and Sync rebuilds it at start and after GC, so it
// survives restarts and releases it did not see.
type Services struct {
	root context.Context
	st   *store.Store
	node string
	log  *slog.Logger

	mu      sync.Mutex
	bridges map[string]*bridgeService
	nets    map[string]store.NetService
	// badMAC holds the bridge of each stateful attachment whose stored
	// MAC does not parse: DHCPv6 cannot serve it (metric and log).
	badMAC map[store.AttachmentID]string
	// lifetimes tells the lifetimes of delegated blocks (SetLifetimes);
	// nil: every block is advertised with the defaults.
	lifetimes LifetimeFunc
	watching  bool
	gateways  gatewayLifetimes
}

// bridgeService is what runs on one bridge.
type bridgeService struct {
	bridge, mode string
	network      string
	members      map[store.AttachmentID]svcMember
	raCfg        ra.Config
	// served is the state of each of its blocks at the last configure:
	// what the lifetime watcher compares against.
	served   map[netip.Prefix]servedBlock
	ra       *ra.Server
	startErr error // the servers could not be created (configuration)
	dhcp     *dhcp6server.Server
	cancel   context.CancelFunc
	done     sync.WaitGroup
}

// svcMember is one self-configuring attachment.
type svcMember struct {
	mac net.HardwareAddr
	// addrs are its IPv6 addresses: one, two while a renumbering
	// overlaps (the old block's and the new one's).
	addrs []memberAddr
}

type memberAddr struct {
	addr  netip.Addr
	block netip.Prefix
}

// New returns the services of node, with none running yet: Sync starts
// them from the handles in st. Servers run until root ends or Stop.
func New(root context.Context, st *store.Store, node string, log *slog.Logger) *Services {
	return &Services{root: root, st: st, node: node, log: log,
		bridges: map[string]*bridgeService{}, nets: map[string]store.NetService{}, badMAC: map[store.AttachmentID]string{},
		gateways: gatewayLifetimes{deprecate: DeprecateGateway, restore: RestoreGateway}}
}

// Attached records a new (or repeated) self-configuring attachment.
func (s *Services) Attached(ctx context.Context, req allocator.Request, config []byte, res *current.Result) error {
	ns := store.NetService{Network: req.ID.Network, DNS: req.Conf.IPAM.DNS.Nameservers, Search: req.Conf.IPAM.DNS.Search, MTU: configMTU(config)}
	s.mu.Lock()
	prev, known := s.nets[ns.Network]
	s.mu.Unlock()
	if !known || !sameService(prev, ns) {
		if err := s.st.PutNetService(ctx, ns); err != nil {
			return err
		}
	}
	m := svcMember{mac: req.MAC}
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is6() {
			ones, _ := ip.Address.Mask.Size()
			m.addrs = append(m.addrs, memberAddr{addr: a.Unmap(), block: netip.PrefixFrom(a.Unmap(), ones).Masked()})
		}
	}
	if len(m.addrs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nets[ns.Network] = ns
	s.add(req.Bridge, req.Mode, req.ID, m)
	return nil
}

// Detached forgets an attachment; the bridge's servers stop with the last.
func (s *Services) Detached(_ context.Context, h *store.Handle) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.badMAC, h.AttachmentID)
	s.remove(h.Bridge, h.AttachmentID)
	return nil
}

// Sync makes the running servers match the node's handles in etcd.
func (s *Services) Sync(ctx context.Context) error {
	handles, err := s.st.Handles(ctx, "")
	if err != nil {
		return err
	}
	nets, err := s.st.NetServices(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ns := range nets {
		s.nets[ns.Network] = ns
	}
	want := map[store.AttachmentID]bool{}
	clear(s.badMAC)
	for _, h := range handles {
		if h.Node != s.node || h.Mode == "" || h.Bridge == "" || h.Lost {
			continue
		}
		mac, err := net.ParseMAC(h.MAC)
		if err != nil && h.Mode == ra.ModeDHCPv6Stateful {
			// Without its MAC the attachment gets no DHCPv6 address: say so.
			s.log.Error("stateful DHCPv6 disabled for an attachment: stored MAC unparsable", "attachment", h.AttachmentID.String(), "mac", h.MAC, "error", err)
			s.badMAC[h.AttachmentID] = h.Bridge
		}
		m := svcMember{mac: mac}
		for _, ip := range h.IPs {
			if ip.Address.Addr().Is6() {
				m.addrs = append(m.addrs, memberAddr{addr: ip.Address.Addr(), block: ip.Block})
			}
		}
		if len(m.addrs) > 0 {
			want[h.AttachmentID] = true
			s.add(h.Bridge, h.Mode, h.AttachmentID, m)
		}
	}
	for _, b := range s.bridges {
		for id := range b.members {
			if !want[id] {
				s.remove(b.bridge, id)
			}
		}
	}
	return nil
}

// Status is what STATUS says about the network's bridges: CNI code 51
// (limited connectivity: IPAM serves ADDs, but the containers on the
// bridge cannot configure themselves) while a bridge's RA or DHCPv6
// server is not serving (the servers keep retrying), or a stateful
// attachment's stored MAC does not parse.
func (s *Services) Status(network string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var problems []string
	for _, b := range s.bridges {
		if b.network != network {
			continue
		}
		if b.startErr != nil {
			problems = append(problems, fmt.Sprintf("bridge %s: %v", b.bridge, b.startErr))
		}
		if b.ra != nil {
			if err := b.ra.Err(); err != nil {
				problems = append(problems, fmt.Sprintf("bridge %s: router advertisements not served: %v", b.bridge, err))
			}
		}
		if b.dhcp != nil {
			if err := b.dhcp.Err(); err != nil {
				problems = append(problems, fmt.Sprintf("bridge %s: DHCPv6 not served: %v", b.bridge, err))
			}
		}
	}
	for id, bridge := range s.badMAC {
		if id.Network == network {
			problems = append(problems, fmt.Sprintf("bridge %s: attachment %s: stored MAC unparsable, no DHCPv6 address", bridge, id))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems)
	return types.NewError(types.ErrLimitedConnectivity, "containers cannot configure themselves", strings.Join(problems, "; "))
}

// Metrics is the bridges' service state for the metrics
// (v6cni_ipamd_service_up, v6cni_ipamd_dhcpv6_unservable_attachments):
// ipammetrics.Metrics.SetServices takes it.
func (s *Services) Metrics() []ipammetrics.ServiceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	byBridge := map[string]*ipammetrics.ServiceState{}
	state := func(bridge string) *ipammetrics.ServiceState {
		if byBridge[bridge] == nil {
			byBridge[bridge] = &ipammetrics.ServiceState{Bridge: bridge, Up: map[string]bool{}}
		}
		return byBridge[bridge]
	}
	for _, b := range s.bridges {
		st := state(b.bridge)
		st.Up["ra"] = b.ra != nil && b.ra.Err() == nil
		if b.mode == ra.ModeDHCPv6Stateless || b.mode == ra.ModeDHCPv6Stateful {
			st.Up["dhcpv6"] = b.dhcp != nil && b.dhcp.Err() == nil
		}
	}
	for _, bridge := range s.badMAC {
		state(bridge).Unservable++
	}
	out := make([]ipammetrics.ServiceState, 0, len(byBridge))
	for _, st := range byBridge {
		out = append(out, *st)
	}
	return out
}

// add (s.mu held) adds a member and starts or updates the bridge's servers.
func (s *Services) add(bridge, mode string, id store.AttachmentID, m svcMember) {
	b := s.bridges[bridge]
	if b == nil {
		b = &bridgeService{bridge: bridge, mode: mode, network: id.Network, members: map[store.AttachmentID]svcMember{}}
		s.bridges[bridge] = b
	}
	b.members[id] = m
	s.configure(b)
}

// remove (s.mu held) removes a member; the servers stop with the last one.
func (s *Services) remove(bridge string, id store.AttachmentID) {
	b := s.bridges[bridge]
	if b == nil {
		return
	}
	delete(b.members, id)
	if len(b.members) > 0 {
		s.configure(b)
		return
	}
	delete(s.bridges, bridge)
	if b.cancel != nil {
		b.cancel() // the RA server sends a last RA with router lifetime 0
		go func() {
			b.done.Wait()
			s.log.Info("stopped serving router advertisements", "bridge", bridge)
		}()
	}
}

// configure (s.mu held) starts the bridge's servers or updates them to the
// members' prefixes (with the lifetimes of delegated ones) and the
// network's DNS and MTU.
func (s *Services) configure(b *bridgeService) {
	ns := s.nets[b.network]
	now := time.Now()
	var blocks []netip.Prefix
	for _, m := range b.members {
		for _, a := range m.addrs {
			if !slices.Contains(blocks, a.block) {
				blocks = append(blocks, a.block)
			}
		}
	}
	slices.SortFunc(blocks, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	prefixes := make([]ra.Prefix, 0, len(blocks))
	served := map[netip.Prefix]servedBlock{}
	for _, blk := range blocks {
		sb := s.served(blk, now)
		served[blk] = sb
		p := ra.Prefix{Prefix: blk}
		if sb.delegated {
			if sb.ended {
				continue // gone: advertised no more (hosts keep what they were told)
			}
			// The deadlines cap the defaults to the time left at each
			// RA; a block past its preferred end is the old one of a
			// renumbering (or a prefix the server stopped extending).
			p.PreferredUntil, p.ValidUntil, p.Deprecated = sb.lt.preferredUntil, sb.lt.validUntil, sb.deprecated
		}
		prefixes = append(prefixes, p)
	}
	s.followGateways(b, served)
	b.served = served
	var dns []netip.Addr
	for _, d := range ns.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			dns = append(dns, a)
		}
	}
	raCfg := ra.Config{Interface: b.bridge, Mode: b.mode, Prefixes: prefixes, MTU: ns.MTU, DNS: dns, Search: ns.Search}
	dhCfg := dhcp6server.Config{Interface: b.bridge, DNS: dns, Search: ns.Search}
	if b.mode == ra.ModeDHCPv6Stateful {
		bridge := b.bridge
		dhCfg.Lookup = func(from dhcp6server.Origin) ([]dhcp6server.Lease, bool) { return s.lookup(bridge, from) }
	}
	b.raCfg = raCfg
	if b.ra != nil {
		if err := b.ra.Update(raCfg); err != nil {
			s.log.Warn("router advertisements: update", "bridge", b.bridge, "error", err)
		}
		if b.dhcp != nil {
			if err := b.dhcp.Update(dhCfg); err != nil {
				s.log.Warn("DHCPv6: update", "bridge", b.bridge, "error", err)
			}
		}
		return
	}
	srv, err := ra.New(raCfg, s.log.With("component", "ra", "bridge", b.bridge))
	if err != nil {
		b.startErr = fmt.Errorf("router advertisements: %w", err)
		s.log.Error("router advertisements", "bridge", b.bridge, "error", err)
		return
	}
	b.startErr = nil
	ctx, cancel := context.WithCancel(s.root)
	b.ra, b.cancel = srv, cancel
	b.done.Add(1)
	go func() {
		defer b.done.Done()
		if err := srv.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("router advertisements stopped", "bridge", b.bridge, "error", err)
		}
	}()
	if b.mode == ra.ModeDHCPv6Stateless || b.mode == ra.ModeDHCPv6Stateful {
		dh, err := dhcp6server.New(dhCfg, s.log.With("component", "dhcp6", "bridge", b.bridge))
		if err != nil {
			b.startErr = fmt.Errorf("DHCPv6 server: %w", err)
			s.log.Error("DHCPv6 server", "bridge", b.bridge, "error", err)
		} else {
			b.dhcp = dh
			b.done.Add(1)
			go func() {
				defer b.done.Done()
				if err := dh.Run(ctx); err != nil && ctx.Err() == nil {
					s.log.Error("DHCPv6 server stopped", "bridge", b.bridge, "error", err)
				}
			}()
		}
	}
	s.log.Info("serving router advertisements", "bridge", b.bridge, "mode", b.mode, "prefixes", blocks)
}

// lookup is the DHCPv6 server's question: which addresses did IPAM record
// for the attachment behind this bridge port? The port is the attachment's
// host veth (link.HostVethName of its container ID and interface), which
// the container cannot choose; the frame's source must also be the MAC
// IPAM recorded. Only what IPAM recorded is ever handed out. An address of
// a delegated block goes with min(default, time left) lifetimes, preferred
// 0 once the block is deprecated (the old address of a renumbering).
func (s *Services) lookup(bridge string, from dhcp6server.Origin) ([]dhcp6server.Lease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bridges[bridge]
	if b == nil {
		return nil, false
	}
	now := time.Now()
	for id, m := range b.members {
		if link.HostVethName(id.ContainerID, id.IfName) != from.Port || m.mac == nil || m.mac.String() != from.MAC.String() {
			continue
		}
		var leases []dhcp6server.Lease
		for _, a := range m.addrs {
			l := dhcp6server.Lease{Addr: a.addr}
			if lt, ok := s.lifetimeOf(a.block, now); ok {
				if lt.expired(now) {
					continue
				}
				l.Preferred, l.Valid, l.Deprecated = lt.left(now, dhcp6server.DefaultPreferred, dhcp6server.DefaultValid)
			}
			leases = append(leases, l)
		}
		return leases, len(leases) > 0
	}
	return nil, false
}

// Stop ends every server at ipamd's stop, bounded. No final RA with
// router lifetime 0: the containers keep their default route while ipamd
// restarts (their RA state outlives the gap), unlike when a bridge's last
// attachment goes.
func (s *Services) Stop() {
	s.mu.Lock()
	var all []*bridgeService
	for _, b := range s.bridges {
		if b.ra != nil {
			cfg := b.raCfg
			cfg.NoFinalRA = true
			_ = b.ra.Update(cfg)
		}
		if b.cancel != nil {
			b.cancel()
		}
		all = append(all, b)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for _, b := range all {
			b.done.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// configMTU is the network config's top-level "mtu" (bridge-v6's MTU of
// the bridge and the veths), which the RAs advertise; 0 when absent. Only
// attachments of bridge-v6 networks reach Attached, and ipamserver has
// validated their whole config by then (MTU type and range), so reading
// the one key is enough: the daemon does not link the plugin's parser.
func configMTU(config []byte) int {
	var c struct {
		MTU int `json:"mtu"`
	}
	if json.Unmarshal(config, &c) != nil {
		return 0
	}
	return c.MTU
}

func sameService(a, b store.NetService) bool {
	return a.Network == b.Network && a.MTU == b.MTU && slices.Equal(a.DNS, b.DNS) && slices.Equal(a.Search, b.Search)
}

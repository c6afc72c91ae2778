// Package bgpnet keeps the node's BGP announcements (pkg/daemon/bgpspeaker)
// equal to the node's blocks in the allocator, and gives STATUS its
// routing check, `ipamd bgp` its view and the metrics their BGP figures.
package bgpnet

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/bgpspeaker"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// Announcer keeps the BGP speaker's routes equal to the node's blocks: pool
// blocks and the /64s in use from delegated prefixes. The set is derived
// from the allocator (itself loaded from etcd), so it is right after a
// restart too.
type Announcer struct {
	cfg   bgpspeaker.Config
	sp    *bgpspeaker.Speaker
	alloc *allocator.Allocator
	log   *slog.Logger
}

// Start starts the speaker cfg describes with the node's current blocks,
// and follows their changes until ctx ends.
func Start(ctx context.Context, cfg bgpspeaker.Config, alloc *allocator.Allocator, log *slog.Logger) (*Announcer, error) {
	sp, err := bgpspeaker.New(cfg, log.With("component", "bgp"))
	if err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	a := &Announcer{cfg: cfg, sp: sp, alloc: alloc, log: log}
	if err := sp.Start(ctx, a.routes()); err != nil {
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	go a.follow(ctx)
	return a, nil
}

// routes is the node's blocks of the families the speaker negotiates (an
// IPv4 block is announced only with ipv4-unicast configured).
func (a *Announcer) routes() []bgpspeaker.Route {
	fam := map[bool]bool{}
	for _, f := range a.cfg.Families {
		switch f {
		case bgpspeaker.IPv6Unicast:
			fam[true] = true
		case bgpspeaker.IPv4Unicast:
			fam[false] = true
		}
	}
	blocks := a.alloc.Blocks()
	out := make([]bgpspeaker.Route, 0, len(blocks))
	for _, b := range blocks {
		if fam[b.CIDR.Addr().Is6()] {
			out = append(out, bgpspeaker.Route{Prefix: b.CIDR, Communities: a.alloc.Communities(b.Network)})
		}
	}
	return out
}

func (a *Announcer) follow(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.alloc.BlocksChanged():
		}
		if err := a.sp.SetRoutes(ctx, a.routes()); err != nil && ctx.Err() == nil {
			a.log.Warn("bgp: announce the node's blocks", "error", err)
		}
	}
}

// Stop ends the speaker the planned way: no Cease, so peers keep the routes
// as stale until this node is back (graceful restart).
func (a *Announcer) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.sp.Stop(ctx); err != nil {
		a.log.Warn("bgp: stop", "error", err)
	}
}

// Health is STATUS's routing check (ipamserver.Server.Routing): 51 when
// prefixes need announcing and no peer session is up, so existing
// containers are unreachable from outside.
func (a *Announcer) Health(ctx context.Context) error {
	routes := a.sp.Routes()
	if len(routes) == 0 {
		return nil
	}
	peers, err := a.sp.Peers(ctx)
	if err != nil {
		return types.NewError(types.ErrLimitedConnectivity, fmt.Sprintf("bgp: %v", err), "")
	}
	for _, p := range peers {
		if p.Established {
			return nil
		}
	}
	return types.NewError(types.ErrLimitedConnectivity,
		fmt.Sprintf("bgp: no peer session established while %d prefixes need announcing", len(routes)),
		"containers of this node are not reachable from outside it")
}

// State is `ipamd bgp`'s view (ipamserver.Server.BGP).
func (a *Announcer) State(ctx context.Context) (ipamapi.BGPState, error) {
	st := ipamapi.BGPState{Enabled: true, Peers: []ipamapi.BGPPeer{}, Announced: []string{}}
	peers, err := a.sp.Peers(ctx)
	if err != nil {
		return st, err
	}
	for _, p := range peers {
		bp := ipamapi.BGPPeer{
			Address: p.Address.String(), ASN: p.ASN, State: p.State, Established: p.Established,
			PrefixesSent: p.PrefixesSent, PrefixesReceived: p.PrefixesReceived, Message: p.Message,
		}
		if p.Established {
			bp.Uptime = p.Uptime.Round(time.Second).String()
		}
		st.Peers = append(st.Peers, bp)
	}
	for _, r := range a.sp.Routes() {
		st.Announced = append(st.Announced, r.Prefix.String())
	}
	return st, nil
}

// Metrics reports sessions up and prefixes announced, at scrape time
// (ipammetrics.Metrics.SetBGP).
func (a *Announcer) Metrics() (up map[string]bool, announced int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	up = map[string]bool{}
	if peers, err := a.sp.Peers(ctx); err == nil {
		for _, p := range peers {
			up[p.Address.String()] = p.Established
		}
	}
	return up, len(a.sp.Routes())
}

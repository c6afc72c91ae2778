package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

// gobgpAPI talks to gobgpd over its unix API socket and mirrors its best
// paths into the router's kernel table. gobgpd installs routes only
// through zebra, which Debian does not package; this mirror is the lab's
// stand-in: every table event (and every second, in case one is missed)
// it lists the global RIB and makes the kernel's "proto bgp" routes equal
// to it, stale graceful-restart paths included (as zebra would).
type gobgpAPI struct {
	ns, sock string
	conn     *grpc.ClientConn
	cli      api.GobgpApiClient
	cancel   context.CancelFunc
	done     sync.WaitGroup

	mu        sync.Mutex
	installed map[netip.Prefix]netip.Addr
	lastErr   error
}

func startFIB(ns, sock string) (*gobgpAPI, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("gobgpd API %s: %w", sock, err)
	}
	g := &gobgpAPI{ns: ns, sock: sock, conn: conn, cli: api.NewGobgpApiClient(conn), installed: map[netip.Prefix]netip.Addr{}}
	// The API may take a moment after the socket appears.
	if !Poll(10*time.Second, 50*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := g.cli.GetBgp(ctx, &api.GetBgpRequest{})
		return err == nil
	}) {
		conn.Close()
		return nil, fmt.Errorf("gobgpd API %s not answering", sock)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	kick := make(chan struct{}, 1)
	g.done.Add(2)
	go func() {
		defer g.done.Done()
		g.watch(ctx, kick)
	}()
	go func() {
		defer g.done.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			g.reconcile(ctx)
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-tick.C:
			}
		}
	}()
	return g, nil
}

// watch turns gobgpd's best-path events into kicks of the reconciler,
// re-subscribing when the stream breaks.
func (g *gobgpAPI) watch(ctx context.Context, kick chan struct{}) {
	for ctx.Err() == nil {
		stream, err := g.cli.WatchEvent(ctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
			Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST}},
		}})
		if err == nil {
			for {
				if _, err = stream.Recv(); err != nil {
					break
				}
				select {
				case kick <- struct{}{}:
				default:
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// reconcile makes the kernel's proto bgp routes equal to gobgpd's best
// paths.
func (g *gobgpAPI) reconcile(ctx context.Context) {
	want := map[netip.Prefix]netip.Addr{}
	for _, afi := range []api.Family_Afi{api.Family_AFI_IP6, api.Family_AFI_IP} {
		if err := g.bestPaths(ctx, afi, want); err != nil {
			g.setErr(err)
			return
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, nh := range want {
		if cur, ok := g.installed[p]; ok && cur == nh {
			continue
		}
		if out, err := exec.Command("ip", "-n", g.ns, "route", "replace", p.String(), "via", nh.String(), "proto", "bgp").CombinedOutput(); err != nil {
			g.lastErr = fmt.Errorf("install %s via %s: %v: %s", p, nh, err, out)
			continue
		}
		g.installed[p] = nh
	}
	for p := range g.installed {
		if _, ok := want[p]; ok {
			continue
		}
		out, err := exec.Command("ip", "-n", g.ns, "route", "del", p.String(), "proto", "bgp").CombinedOutput()
		if err != nil && !strings.Contains(string(out), "No such process") {
			g.lastErr = fmt.Errorf("remove %s: %v: %s", p, err, out)
			continue
		}
		delete(g.installed, p)
	}
}

func (g *gobgpAPI) setErr(err error) {
	g.mu.Lock()
	g.lastErr = err
	g.mu.Unlock()
}

// bestPaths adds the best path of every destination of family afi to m.
func (g *gobgpAPI) bestPaths(ctx context.Context, afi api.Family_Afi, m map[netip.Prefix]netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := g.cli.ListPath(ctx, &api.ListPathRequest{
		TableType: api.TableType_GLOBAL,
		Family:    &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST},
	})
	if err != nil {
		return fmt.Errorf("gobgpd ListPath: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("gobgpd ListPath: %w", err)
		}
		d := resp.GetDestination()
		p, err := netip.ParsePrefix(d.GetPrefix())
		if err != nil {
			continue
		}
		for _, path := range d.GetPaths() {
			if !path.GetBest() || path.GetIsWithdraw() {
				continue
			}
			if nh, ok := nextHop(path.GetPattrs()); ok {
				m[p] = nh
			}
		}
	}
}

// nextHop is a path's next hop: MP_REACH_NLRI's first (IPv6, or IPv4 by
// MP-BGP) or the NEXT_HOP attribute.
func nextHop(attrs []*anypb.Any) (netip.Addr, bool) {
	for _, a := range attrs {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		var s string
		switch v := m.(type) {
		case *api.MpReachNLRIAttribute:
			if len(v.GetNextHops()) > 0 {
				s = v.GetNextHops()[0]
			}
		case *api.NextHopAttribute:
			s = v.GetNextHop()
		}
		if nh, err := netip.ParseAddr(s); err == nil {
			return nh, true
		}
	}
	return netip.Addr{}, false
}

// established is the session state per neighbour address.
func (g *gobgpAPI) established() (map[netip.Addr]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := g.cli.ListPeer(ctx, &api.ListPeerRequest{})
	if err != nil {
		return nil, fmt.Errorf("gobgpd ListPeer: %w", err)
	}
	out := map[netip.Addr]bool{}
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		p := resp.GetPeer()
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		out[a] = p.GetState().GetSessionState() == api.PeerState_ESTABLISHED
	}
	return out, nil
}

func (g *gobgpAPI) close() {
	g.cancel()
	g.done.Wait()
	g.conn.Close()
}

package bgpspeaker

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	apipb "github.com/osrg/gobgp/v3/api"
)

// PeerStatus is the state of one BGP session, for `ipamd bgp` and metrics.
type PeerStatus struct {
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State       string `json:"state"`
	Established bool   `json:"established"`
	// Since is when the session was established (zero when it is not).
	Since time.Time `json:"since,omitzero"`
	// Uptime is how long the session has been established.
	Uptime           time.Duration `json:"uptime,omitempty"`
	PrefixesSent     uint64        `json:"prefixesSent"`
	PrefixesReceived uint64        `json:"prefixesReceived"`
	// Message explains a session that has been down for a while.
	Message string `json:"message,omitempty"`
}

// Peers returns the state of every configured peer, sorted by address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st != running {
		return nil, ErrNotRunning
	}
	var out []PeerStatus
	err := s.srv.ListPeer(ctx, &apipb.ListPeerRequest{EnableAdvertised: true}, func(p *apipb.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		ps := PeerStatus{
			Address: addr.Unmap(),
			ASN:     p.GetConf().GetPeerAsn(),
			State:   sessionState(p.GetState().GetSessionState()),
		}
		ps.Established = p.GetState().GetSessionState() == apipb.PeerState_ESTABLISHED
		if ps.Established {
			if up := p.GetTimers().GetState().GetUptime(); up != nil && up.GetSeconds() > 0 {
				ps.Since = up.AsTime()
				ps.Uptime = time.Since(ps.Since).Round(time.Second)
			}
		}
		for _, a := range p.GetAfiSafis() {
			sent := a.GetState().GetAdvertised()
			if s.cfg.GracefulRestart.IsEnabled() && sent > 0 {
				sent-- // GoBGP counts the End-of-RIB marker it would send
			}
			ps.PrefixesSent += sent
			ps.PrefixesReceived += a.GetState().GetReceived()
		}
		out = append(out, ps)
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	s.peerMu.Lock()
	for i := range out {
		w := s.peers[out[i].Address]
		if w != nil && !out[i].Established && time.Since(w.downSince) >= notEstablishedWarning {
			for _, pc := range s.cfg.Peers {
				if pc.Address.Unmap() == out[i].Address {
					out[i].Message = fmt.Sprintf("not established for %s: %s",
						time.Since(w.downSince).Round(time.Second), downHint(pc))
				}
			}
		}
	}
	s.peerMu.Unlock()
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, nil
}

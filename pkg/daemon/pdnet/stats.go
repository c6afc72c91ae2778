package pdnet

import (
	"maps"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// fillState fills st's binding part from b (Delegation.State's fields).
func fillState(st *ipamapi.PDState, b dhcp6pd.Binding, iface string, now time.Time) {
	st.Enabled, st.Interface, st.ClientDUID, st.IAID = true, iface, b.ClientDUID.String(), b.IAID
	st.Prefixes = []ipamapi.PDPrefix{}
	if b.Server.IsValid() {
		st.Server = b.Server.String()
	}
	if len(b.ServerDUID) > 0 {
		st.ServerDUID = b.ServerDUID.String()
	}
	if len(b.Prefixes) > 0 {
		st.RenewIn, st.RebindIn = left(b.RenewAt(), now), left(b.RebindAt(), now)
	}
	cur, haveCur := allocator.Current(delegatedOf(b), now)
	for _, p := range b.Prefixes {
		state := "deprecated"
		switch {
		case haveCur && p.Prefix == cur.Prefix:
			state = "current"
		case !p.ValidUntil().After(now):
			state = "expired"
		}
		st.Prefixes = append(st.Prefixes, ipamapi.PDPrefix{
			Prefix: p.Prefix.String(), PreferredLeft: left(p.PreferredUntil(), now), ValidLeft: left(p.ValidUntil(), now),
			State: state,
		})
	}
}

// lifetimesLeft gives the valid and preferred lifetime left per prefix in
// seconds (-1: infinite; a deprecated prefix's preferred is 0).
func lifetimesLeft(b dhcp6pd.Binding, now time.Time) (valid, preferred map[string]float64) {
	valid, preferred = map[string]float64{}, map[string]float64{}
	for _, p := range b.Prefixes {
		v, pr := p.ValidUntil().Sub(now).Seconds(), max(p.PreferredUntil().Sub(now).Seconds(), 0)
		if p.Valid == dhcp6pd.Infinity {
			v = -1
		}
		if p.Preferred == dhcp6pd.Infinity {
			pr = -1
		}
		valid[p.Prefix.String()], preferred[p.Prefix.String()] = v, pr
	}
	return valid, preferred
}

func exchanges(st dhcp6pd.Stats) map[[2]string]uint64 {
	out := map[[2]string]uint64{}
	for ex, n := range st.Exchanges {
		out[[2]string{ex.Message, ex.Result}] += n
	}
	return out
}

// PDStats are the node-mode figures for the metrics
// (ipammetrics.Metrics.SetPDStats).
func (d *Delegation) PDStats() ipammetrics.PDStats {
	valid, preferred := lifetimesLeft(d.client.Binding(), time.Now())
	return ipammetrics.PDStats{ValidLeft: valid, PreferredLeft: preferred, Exchanges: exchanges(d.client.Stats())}
}

// PDStats are the cluster-mode figures for the metrics: lifetimes from the
// followed binding (every node), exchanges of this node's own terms as
// leader, and the election's counters.
func (c *Cluster) PDStats() ipammetrics.PDStats {
	c.mu.Lock()
	b := c.binding.Clone()
	st := dhcp6pd.Stats{Exchanges: maps.Clone(c.past.Exchanges)}
	if st.Exchanges == nil {
		st.Exchanges = map[dhcp6pd.Exchange]uint64{}
	}
	if c.client != nil {
		for k, v := range c.client.Stats().Exchanges {
			st.Exchanges[k] += v
		}
	}
	cs := &ipammetrics.PDClusterStats{
		Segment: c.seg, Leader: c.client != nil, Takeovers: maps.Clone(c.takeovers),
		TakeoverSeconds: c.takeoverSec, Fenced: c.fenced,
	}
	c.mu.Unlock()
	valid, preferred := lifetimesLeft(b, time.Now())
	return ipammetrics.PDStats{ValidLeft: valid, PreferredLeft: preferred, Exchanges: exchanges(st), Cluster: cs}
}

// Package ipammetrics holds ipamd's Prometheus metrics. Counters and
// histograms are updated on the request path; gauges of addresses, blocks
// and pool sizes are read from the allocator's cache at scrape time, so a
// scrape never waits on etcd.
package ipammetrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "v6cni_ipamd"

// Usage is one block of this node as the allocator sees it.
type Usage struct {
	Network string
	Block   string
	InUse   int
}

// PoolSize is the number of addresses of a network's pool.
type PoolSize struct {
	Network string
	Size    float64
}

// Source gives the gauges their values at scrape time.
type Source interface {
	Node() string
	Usage() []Usage
	PoolSizes() []PoolSize
}

// Metrics are ipamd's metrics, on their own registry.
type Metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	failures  *prometheus.CounterVec
	reclaimed prometheus.Counter
	etcdErrs  prometheus.Counter
	// quarantined counts duplicates quarantined (a DEL naming them).
	quarantined prometheus.Counter
}

// New registers ipamd's metrics; src feeds the gauges.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "CNI requests served, by verb and CNI result code (0 = success).",
		}, []string{"verb", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Time ipamd took to answer a CNI request, by verb.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"verb"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "allocation_failures_total",
			Help: "ADDs that got no address, by reason (pool_exhausted, address_in_use, invalid_config, etcd_unavailable, other).",
		}, []string{"reason"}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "gc_released_total",
			Help: "Attachments released by GC or reclaim (stale: netns gone or not in the runtime's valid list).",
		}),
	}
	m.etcdErrs = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "etcd_errors_total",
		Help: "Requests that failed because etcd did not answer or refused (unreachable, no quorum, timeout).",
	})
	m.quarantined = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "duplicates_quarantined_total",
		Help: "Addresses quarantined because duplicate address detection found another host holding them (a DEL naming them as duplicates).",
	})
	m.reg.MustRegister(m.requests, m.duration, m.failures, m.reclaimed, m.etcdErrs, m.quarantined,
		&gauges{src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetBGP makes the metrics report the BGP speaker: src gives, per peer
// address, whether its session is up, and the number of prefixes announced.
func (m *Metrics) SetBGP(src func() (up map[string]bool, announced int)) {
	m.reg.MustRegister(&bgpGauges{src: src})
}

var (
	bgpUpDesc = prometheus.NewDesc(namespace+"_bgp_session_up",
		"1 when the BGP session with the peer is established.", []string{"peer"}, nil)
	bgpAnnDesc = prometheus.NewDesc(namespace+"_bgp_prefixes_announced",
		"Prefixes (blocks) this node announces by BGP.", nil, nil)
)

type bgpGauges struct {
	src func() (map[string]bool, int)
}

func (g *bgpGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- bgpUpDesc
	ch <- bgpAnnDesc
}

func (g *bgpGauges) Collect(ch chan<- prometheus.Metric) {
	up, n := g.src()
	for peer, ok := range up {
		v := 0.0
		if ok {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(bgpUpDesc, prometheus.GaugeValue, v, peer)
	}
	ch <- prometheus.MustNewConstMetric(bgpAnnDesc, prometheus.GaugeValue, float64(n))
}

// SetPD makes the metrics report the DHCPv6-PD client: src gives the valid
// lifetime left per prefix (seconds, -1 for infinite) and the exchanges by
// (message, result).
func (m *Metrics) SetPD(src func() (map[string]float64, map[[2]string]uint64)) {
	m.SetPDStats(func() PDStats {
		left, ex := src()
		return PDStats{ValidLeft: left, Exchanges: ex}
	})
}

// PDStats are the figures of ipamd's prefix delegation at one scrape.
type PDStats struct {
	// ValidLeft and PreferredLeft are the lifetimes left per prefix
	// (seconds, -1 for infinite); PreferredLeft may be nil.
	ValidLeft, PreferredLeft map[string]float64
	// Exchanges counts the client's exchanges by (message, result).
	Exchanges map[[2]string]uint64
	// Cluster is set in cluster mode.
	Cluster *PDClusterStats
}

// PDClusterStats are the figures of cluster-mode delegation.
type PDClusterStats struct {
	Segment string
	// Leader is true while this node runs the segment's client.
	Leader bool
	// Takeovers counts this node's terms by the exchange that renewed the
	// binding first (renew, rebind, solicit).
	Takeovers map[string]uint64
	// TakeoverSeconds is the last take-over's time from Campaign won to
	// the first saved Reply; negative: none yet.
	TakeoverSeconds float64
	// Fenced counts binding writes the leader guard refused.
	Fenced uint64
}

// SetPDStats makes the metrics report prefix delegation from src.
func (m *Metrics) SetPDStats(src func() PDStats) {
	m.reg.MustRegister(&pdGauges{src: src})
}

var (
	pdLeftDesc = prometheus.NewDesc(namespace+"_pd_valid_lifetime_seconds",
		"Valid lifetime left of each delegated prefix (-1: infinite).", []string{"prefix"}, nil)
	pdPrefDesc = prometheus.NewDesc(namespace+"_pd_preferred_lifetime_seconds",
		"Preferred lifetime left of each delegated prefix (0: deprecated, -1: infinite).", []string{"prefix"}, nil)
	pdExDesc = prometheus.NewDesc(namespace+"_pd_exchanges_total",
		"DHCPv6-PD exchanges by message and result (success, advertise, timeout, NoBinding, NoPrefixAvail, ...).", []string{"message", "result"}, nil)
	pdLeaderDesc = prometheus.NewDesc(namespace+"_pd_leader",
		"1 while this node leads its segment's delegation (runs the segment's DHCPv6-PD client).", []string{"segment"}, nil)
	pdTakeoverDesc = prometheus.NewDesc(namespace+"_pd_takeovers_total",
		"Terms this node began as the segment's leader, by the exchange that renewed the binding first (renew, rebind, solicit).", []string{"segment", "exchange"}, nil)
	pdTakeoverSecDesc = prometheus.NewDesc(namespace+"_pd_takeover_seconds",
		"Last take-over by this node: election won to the first Reply saved.", []string{"segment"}, nil)
	pdFencedDesc = prometheus.NewDesc(namespace+"_pd_leader_fenced_total",
		"Binding writes by this node refused by the leader guard (it was no longer the segment's leader).", []string{"segment"}, nil)
)

type pdGauges struct {
	src func() PDStats
}

func (g *pdGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pdLeftDesc, pdPrefDesc, pdExDesc, pdLeaderDesc, pdTakeoverDesc, pdTakeoverSecDesc, pdFencedDesc} {
		ch <- d
	}
}

func (g *pdGauges) Collect(ch chan<- prometheus.Metric) {
	st := g.src()
	for p, v := range st.ValidLeft {
		ch <- prometheus.MustNewConstMetric(pdLeftDesc, prometheus.GaugeValue, v, p)
	}
	for p, v := range st.PreferredLeft {
		ch <- prometheus.MustNewConstMetric(pdPrefDesc, prometheus.GaugeValue, v, p)
	}
	for k, n := range st.Exchanges {
		ch <- prometheus.MustNewConstMetric(pdExDesc, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	c := st.Cluster
	if c == nil {
		return
	}
	leader := 0.0
	if c.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(pdLeaderDesc, prometheus.GaugeValue, leader, c.Segment)
	for _, ex := range []string{"renew", "rebind", "solicit"} {
		ch <- prometheus.MustNewConstMetric(pdTakeoverDesc, prometheus.CounterValue, float64(c.Takeovers[ex]), c.Segment, ex)
	}
	if c.TakeoverSeconds >= 0 {
		ch <- prometheus.MustNewConstMetric(pdTakeoverSecDesc, prometheus.GaugeValue, c.TakeoverSeconds, c.Segment)
	}
	ch <- prometheus.MustNewConstMetric(pdFencedDesc, prometheus.CounterValue, float64(c.Fenced), c.Segment)
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Observe records one request: its verb, how long it took, and its error
// (nil for success).
func (m *Metrics) Observe(verb string, took time.Duration, err *types.Error) {
	code := "0"
	if err != nil {
		code = strconv.FormatUint(uint64(err.Code), 10)
	}
	m.requests.WithLabelValues(verb, code).Inc()
	m.duration.WithLabelValues(verb).Observe(took.Seconds())
	if verb == "add" && err != nil {
		m.failures.WithLabelValues(reason(err)).Inc()
	}
}

// EtcdError counts a request that failed in etcd.
func (m *Metrics) EtcdError() { m.etcdErrs.Inc() }

// Reclaimed counts released stale attachments.
func (m *Metrics) Reclaimed(n int) { m.reclaimed.Add(float64(n)) }

// Quarantined counts addresses quarantined as duplicates.
func (m *Metrics) Quarantined(n int) { m.quarantined.Add(float64(n)) }

func reason(err *types.Error) string {
	switch {
	case strings.Contains(err.Msg, "no address available"):
		return "pool_exhausted"
	case strings.Contains(err.Msg, "in use") || strings.Contains(err.Msg, "is taken"):
		return "address_in_use"
	case err.Code == types.ErrInvalidNetworkConfig || err.Code == types.ErrDecodingFailure || err.Code == types.ErrInvalidEnvironmentVariables:
		return "invalid_config"
	case strings.HasPrefix(err.Msg, "etcd"):
		return "etcd_unavailable"
	default:
		return "other"
	}
}

var (
	inUseDesc = prometheus.NewDesc(namespace+"_addresses_in_use",
		"Addresses allocated in this node's blocks, per network.", []string{"network", "node"}, nil)
	blocksDesc = prometheus.NewDesc(namespace+"_blocks",
		"Blocks this node owns, per network.", []string{"network", "node"}, nil)
	poolDesc = prometheus.NewDesc(namespace+"_pool_size",
		"Addresses in the network's pool (all ranges; float: IPv6 pools are huge).", []string{"network"}, nil)
)

// gauges reads the allocator's cache at scrape time.
type gauges struct{ src Source }

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- inUseDesc
	ch <- blocksDesc
	ch <- poolDesc
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	node := g.src.Node()
	inUse, blocks := map[string]int{}, map[string]int{}
	for _, u := range g.src.Usage() {
		inUse[u.Network] += u.InUse
		blocks[u.Network]++
	}
	for n, v := range inUse {
		ch <- prometheus.MustNewConstMetric(inUseDesc, prometheus.GaugeValue, float64(v), n, node)
		ch <- prometheus.MustNewConstMetric(blocksDesc, prometheus.GaugeValue, float64(blocks[n]), n, node)
	}
	for _, p := range g.src.PoolSizes() {
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, p.Size, p.Network)
	}
}

// ServiceState is one bridge's RA/DHCPv6 service.
type ServiceState struct {
	Bridge string
	// Up is, per service ("ra", "dhcpv6"), whether it is serving.
	Up map[string]bool
	// Unservable counts the bridge's stateful attachments DHCPv6 cannot
	// serve (their stored MAC does not parse).
	Unservable int
}

// SetServices makes the metrics report the bridges' RA/DHCPv6 service.
func (m *Metrics) SetServices(src func() []ServiceState) {
	m.reg.MustRegister(&serviceGauges{src: src})
}

var (
	unservableDesc = prometheus.NewDesc(namespace+"_dhcpv6_unservable_attachments",
		"Self-configuring attachments on the bridge that stateful DHCPv6 cannot serve (stored MAC unparsable).", []string{"bridge"}, nil)
	serviceUpDesc = prometheus.NewDesc(namespace+"_service_up",
		"1 while the bridge's router advertisements (service=ra) or DHCPv6 server (service=dhcpv6) is serving, 0 while it fails and retries.", []string{"bridge", "service"}, nil)
)

type serviceGauges struct {
	src func() []ServiceState
}

func (g *serviceGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- unservableDesc
	ch <- serviceUpDesc
}

func (g *serviceGauges) Collect(ch chan<- prometheus.Metric) {
	for _, st := range g.src() {
		ch <- prometheus.MustNewConstMetric(unservableDesc, prometheus.GaugeValue, float64(st.Unservable), st.Bridge)
		for svc, up := range st.Up {
			v := 0.0
			if up {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(serviceUpDesc, prometheus.GaugeValue, v, st.Bridge, svc)
		}
	}
}

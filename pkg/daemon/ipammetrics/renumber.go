package ipammetrics

import "github.com/prometheus/client_golang/prometheus"

// RenumberStats are the figures of renumbering (a delegated prefix
// replaced by another) at one scrape.
type RenumberStats struct {
	// Renumberings counts renumberings by kind (graceful, rebind, abrupt,
	// expiry).
	Renumberings map[string]uint64
	// Errors counts failed netns jobs by reason (netns_gone,
	// netns_mismatch, netlink, invalid).
	Errors map[string]uint64
	// Pending is the jobs submitted to the netns workers and not yet done.
	Pending int
	// LastSeconds is the last renumbering's time from its first job
	// submitted to its last job done; negative: none yet.
	LastSeconds float64
}

var (
	renumberingsDesc = prometheus.NewDesc(namespace+"_pd_renumberings_total",
		"Renumberings of this node's attachments from one delegated prefix to another, by kind (graceful, rebind, abrupt, expiry).", []string{"kind"}, nil)
	renumberErrDesc = prometheus.NewDesc(namespace+"_pd_renumber_errors_total",
		"Renumbering jobs in containers that failed, by reason (netns_gone, netns_mismatch, netlink, invalid).", []string{"reason"}, nil)
	renumberPendingDesc = prometheus.NewDesc(namespace+"_pd_renumber_pending_attachments",
		"Attachments whose renumbering job is submitted and not yet done.", nil, nil)
	renumberSecDesc = prometheus.NewDesc(namespace+"_pd_renumber_seconds",
		"Last renumbering: first container job submitted to the last one done.", nil, nil)
)

// SetRenumber makes the metrics report renumbering from src.
func (m *Metrics) SetRenumber(src func() RenumberStats) {
	m.reg.MustRegister(&renumberGauges{src: src})
}

type renumberGauges struct {
	src func() RenumberStats
}

func (g *renumberGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{renumberingsDesc, renumberErrDesc, renumberPendingDesc, renumberSecDesc} {
		ch <- d
	}
}

func (g *renumberGauges) Collect(ch chan<- prometheus.Metric) {
	st := g.src()
	for _, k := range []string{"graceful", "rebind", "abrupt", "expiry"} {
		ch <- prometheus.MustNewConstMetric(renumberingsDesc, prometheus.CounterValue, float64(st.Renumberings[k]), k)
	}
	for _, r := range []string{"netns_gone", "netns_mismatch", "netlink", "invalid"} {
		ch <- prometheus.MustNewConstMetric(renumberErrDesc, prometheus.CounterValue, float64(st.Errors[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(renumberPendingDesc, prometheus.GaugeValue, float64(st.Pending))
	if st.LastSeconds >= 0 {
		ch <- prometheus.MustNewConstMetric(renumberSecDesc, prometheus.GaugeValue, st.LastSeconds)
	}
}

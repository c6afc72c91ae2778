package ipammetrics

import "github.com/prometheus/client_golang/prometheus"

// NodeState is the node's life in the cluster as package nodes keeps it,
// read at scrape time.
type NodeState struct {
	Node string
	// Registered is true while the node's registration and liveness
	// record exist as far as this ipamd knows (false while it registers
	// again after losing its lease or its registration).
	Registered bool
	// Epoch is the registration's epoch (its etcd CreateRevision).
	Epoch int64
	// Reregistrations counts the registrations after the first: lease
	// lost (etcd outage longer than the TTL, session expiry) or removal.
	Reregistrations uint64
	// Fenced counts the removals of the node's registration this ipamd
	// survived (its blocks dropped, a new epoch taken).
	Fenced uint64
	// Orphans are the attachments that lost their addresses with such a
	// removal and have not been deleted since.
	Orphans int
	// DeadNodesRemoved counts the dead nodes this ipamd removed
	// (--dead-node-grace, while it led the release).
	DeadNodesRemoved uint64
}

// SetNode makes the metrics report the node's registration.
func (m *Metrics) SetNode(src func() NodeState) {
	m.reg.MustRegister(&nodeGauges{src: src})
}

var (
	nodeRegisteredDesc = prometheus.NewDesc(namespace+"_node_registered",
		"1 while this node is registered and alive in etcd, 0 while it registers again.", []string{"node"}, nil)
	nodeEpochDesc = prometheus.NewDesc(namespace+"_node_epoch",
		"Epoch (etcd CreateRevision) of this node's registration; it changes only when the node was removed and registered again.", []string{"node"}, nil)
	nodeReregDesc = prometheus.NewDesc(namespace+"_node_reregistrations_total",
		"Times this ipamd registered its node again after losing its etcd lease or its registration.", []string{"node"}, nil)
	nodeFencedDesc = prometheus.NewDesc(namespace+"_node_fenced_total",
		"Times this ipamd found its node's registration removed (its blocks dropped, a new epoch taken).", []string{"node"}, nil)
	nodeOrphansDesc = prometheus.NewDesc(namespace+"_node_orphaned_attachments",
		"Attachments that lost their addresses when this node was removed and were not deleted since (STATUS says 50 while any remain).", []string{"node"}, nil)
	deadRemovedDesc = prometheus.NewDesc(namespace+"_dead_nodes_removed_total",
		"Dead nodes this ipamd removed after --dead-node-grace.", nil, nil)
)

type nodeGauges struct {
	src func() NodeState
}

func (g *nodeGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeRegisteredDesc, nodeEpochDesc, nodeReregDesc, nodeFencedDesc, nodeOrphansDesc, deadRemovedDesc} {
		ch <- d
	}
}

func (g *nodeGauges) Collect(ch chan<- prometheus.Metric) {
	st := g.src()
	reg := 0.0
	if st.Registered {
		reg = 1
	}
	ch <- prometheus.MustNewConstMetric(nodeRegisteredDesc, prometheus.GaugeValue, reg, st.Node)
	ch <- prometheus.MustNewConstMetric(nodeEpochDesc, prometheus.GaugeValue, float64(st.Epoch), st.Node)
	ch <- prometheus.MustNewConstMetric(nodeReregDesc, prometheus.CounterValue, float64(st.Reregistrations), st.Node)
	ch <- prometheus.MustNewConstMetric(nodeFencedDesc, prometheus.CounterValue, float64(st.Fenced), st.Node)
	ch <- prometheus.MustNewConstMetric(nodeOrphansDesc, prometheus.GaugeValue, float64(st.Orphans), st.Node)
	ch <- prometheus.MustNewConstMetric(deadRemovedDesc, prometheus.CounterValue, float64(st.DeadNodesRemoved))
}

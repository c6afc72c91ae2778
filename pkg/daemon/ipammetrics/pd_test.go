package ipammetrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// TestPDMetrics: the PD figures in the exposition, node mode (no cluster
// series) and cluster mode.
func TestPDMetrics(t *testing.T) {
	for _, tc := range []struct {
		name      string
		st        PDStats
		want, not []string
	}{
		{"node", PDStats{
			ValidLeft: map[string]float64{"2001:db8::/56": 60}, PreferredLeft: map[string]float64{"2001:db8::/56": 30},
			Exchanges: map[[2]string]uint64{{"renew", "success"}: 2},
		}, []string{
			`v6cni_ipamd_pd_valid_lifetime_seconds{prefix="2001:db8::/56"} 60`,
			`v6cni_ipamd_pd_preferred_lifetime_seconds{prefix="2001:db8::/56"} 30`,
			`v6cni_ipamd_pd_exchanges_total{message="renew",result="success"} 2`,
		}, []string{"pd_leader", "pd_takeover"}},
		{"cluster", PDStats{Cluster: &PDClusterStats{
			Segment: "r1", Leader: true, Takeovers: map[string]uint64{"renew": 3}, TakeoverSeconds: 0.25, Fenced: 1,
		}}, []string{
			`v6cni_ipamd_pd_leader{segment="r1"} 1`,
			`v6cni_ipamd_pd_takeovers_total{exchange="renew",segment="r1"} 3`,
			`v6cni_ipamd_pd_takeovers_total{exchange="solicit",segment="r1"} 0`,
			`v6cni_ipamd_pd_takeover_seconds{segment="r1"} 0.25`,
			`v6cni_ipamd_pd_leader_fenced_total{segment="r1"} 1`,
		}, nil},
		{"cluster, no take-over yet", PDStats{Cluster: &PDClusterStats{Segment: "r1", TakeoverSeconds: -1}},
			[]string{`v6cni_ipamd_pd_leader{segment="r1"} 0`}, []string{"pd_takeover_seconds{"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(&pdGauges{src: func() PDStats { return tc.st }})
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, mf := range mfs {
				expfmt.MetricFamilyToText(&b, mf)
			}
			out := b.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %s in\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("unexpected %s in\n%s", n, out)
				}
			}
		})
	}
}

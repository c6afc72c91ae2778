package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
)

// TestSmallCluster runs the bench's whole code path at a small size
// against a real etcd (Debian's etcd-server, started by the bench on
// loopback ports it picks): two scales, churn, probes, the check and a
// node's removal, and the report. It keeps the bench from rotting as the
// store and the allocator change; it asserts what the run did, never how
// fast.
func TestSmallCluster(t *testing.T) {
	var out bytes.Buffer
	c := &config{
		scales: []int{2, 5}, pods: 10, rounds: 1, churn: 0.2, par: 8, block: 122,
		etcd: "etcd", seed: 1, heartbeat: 100 * time.Millisecond, probe: 20, probePar: 2, out: &out,
	}
	r := &benchutil.Run{ID: "b7e5", Prefix: "v6bb7e5", Dir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results, err := run(ctx, r, c)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(c.scales) {
		t.Fatalf("%d results, want %d", len(results), len(c.scales))
	}
	for i, res := range results {
		n := c.scales[i]
		if res.nodes != n || res.attachments != n*c.pods {
			t.Errorf("scale %d: %d nodes, %d attachments; want %d, %d", n, res.nodes, res.attachments, n, n*c.pods)
		}
		if want := 2 * int(float64(n*c.pods)*c.churn); res.churnOps != want || len(res.churnAdd) != want/2 {
			t.Errorf("scale %d: %d churn ops (%d ADDs), want %d", n, res.churnOps, len(res.churnAdd), want)
		}
		if len(res.probeAdd) != c.probe || len(res.probeDel) != c.probe {
			t.Errorf("scale %d: %d probe ADDs, %d DELs; want %d", n, len(res.probeAdd), len(res.probeDel), c.probe)
		}
		if len(res.problems) != 0 || len(res.problemsAfter) != 0 {
			t.Errorf("scale %d: Check found %v before and %v after the removal", n, res.problems, res.problemsAfter)
		}
		if rm := res.removal.rm; rm.Node != "node-0000" || rm.Attachments != c.pods || rm.Blocks < 1 {
			t.Errorf("scale %d: removal released %+v, want node-0000 with %d attachments and its blocks", n, rm, c.pods)
		}
		// The fence, at least one sweep transaction, the tombstone.
		if res.removal.writes < 3 {
			t.Errorf("scale %d: removal made %d etcd writes, want ≥ 3", n, res.removal.writes)
		}
		// Pool, blocks, one address and one handle per pod, the nodes'
		// registrations and liveness records.
		if res.keys.total < 2*res.attachments+n {
			t.Errorf("scale %d: %d keys, want ≥ %d", n, res.keys.total, 2*res.attachments+n)
		}
		if res.afterCompact.inUse <= 0 {
			t.Errorf("scale %d: etcd DB in use %d after compaction", n, res.afterCompact.inUse)
		}
	}
	for _, want := range []string{"== summary", "block claims/s", "keys per attachment", "remove 1 node", "5/2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestScales(t *testing.T) {
	for _, tc := range []struct {
		list     string
		nodes    int
		nodesSet bool
		want     []int
		err      string
	}{
		{list: "10,1000", nodes: 1000, want: []int{10, 1000}},
		{list: "10,1000", nodes: 200, nodesSet: true, want: []int{10, 200}},
		{list: "10,1000", nodes: 1000, nodesSet: true, want: []int{10, 1000}},
		{list: "10", nodes: 5, err: "no node count"},
		{list: "10,x", nodes: 1000, err: `bad node count "x"`},
		{list: "0", nodes: 1000, err: `bad node count "0"`},
	} {
		got, err := scales(tc.list, tc.nodes, tc.nodesSet)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("scales(%q, %d): err %v, want %q", tc.list, tc.nodes, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("scales(%q, %d, %v) = %v, %v; want %v", tc.list, tc.nodes, tc.nodesSet, got, err, tc.want)
		}
	}
}

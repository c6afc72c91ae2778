package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// keyStats counts v6cni's keys by kind and their bytes (key + value).
type keyStats struct {
	total     int
	bytes     int64
	respBytes int64
	byKind    map[string][2]int64 // kind → keys, bytes
}

// kinds are the sub-prefixes of store.Prefix, in report order.
var kinds = []string{"pools", "blocks", "addrs", "handles", "nodes", "alive", "removed", "sticky", "pd"}

// countKeys reads the whole key space once (the read `ipamd check` makes)
// and sizes it.
func countKeys(ctx context.Context, cli *clientv3.Client) (keyStats, error) {
	resp, err := cli.Get(ctx, store.Prefix, clientv3.WithPrefix())
	if err != nil {
		return keyStats{}, fmt.Errorf("read %s: %w", store.Prefix, err)
	}
	ks := keyStats{byKind: map[string][2]int64{}}
	for _, kv := range resp.Kvs {
		kind, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), store.Prefix), "/")
		n := int64(len(kv.Key) + len(kv.Value))
		c := ks.byKind[kind]
		ks.byKind[kind] = [2]int64{c[0] + 1, c[1] + n}
		ks.total++
		ks.bytes += n
		// The message as it goes over gRPC: each key-value with its
		// revisions, plus a few bytes of framing per entry.
		ks.respBytes += int64(proto.Size(kv)) + 3
	}
	return ks, nil
}

func report(rs []*result) {
	fmt.Printf("\n== ADD and DEL across the cluster (%d in flight, %d pods per node, one shared pool) ==\n", *flagPar, *flagPods)
	var t benchutil.Table
	t.Row("nodes", "pods", "blocks", "claims/s", "claim ADD p50", "p99", "fill ADD/s", "ADD p50 ms", "p99 ms",
		"churn ops/s", "churn ADD p50", "p99", "DEL p50", "p99")
	for _, r := range rs {
		t.Row(fmt.Sprint(r.nodes), fmt.Sprint(r.attachments), fmt.Sprint(r.blocks),
			fmt.Sprintf("%.0f", r.boot.rate()), benchutil.Ms(r.boot.lat.Median()), benchutil.Ms(r.boot.lat.Pct(99)),
			fmt.Sprintf("%.0f", r.fill.rate()), benchutil.Ms(r.fill.lat.Median()), benchutil.Ms(r.fill.lat.Pct(99)),
			rate(r.churnOps, r.churnWall), benchutil.Ms(r.churnAdd.Median()), benchutil.Ms(r.churnAdd.Pct(99)),
			benchutil.Ms(r.churnDel.Median()), benchutil.Ms(r.churnDel.Pct(99)))
	}
	t.Print(os.Stdout)
	fmt.Printf("(claims/s: the first ADD of every node at once, each claiming a block; fill: the other pods in random\n"+
		" order; churn: DEL then ADD of a random %.0f%% of all pods per round, %d rounds; latencies in ms)\n", 100**flagChurn, *flagRounds)

	fmt.Printf("\n== etcd (one member, --quota-backend-bytes %d GiB; default quota 2 GiB) ==\n", etcdQuota>>30)
	var e benchutil.Table
	e.Row("nodes", "keys", "keys/pod", "bytes/pod", "addrs+handles B/pod", "DB after fill", "after churn", "in use", "in use compacted", "revision")
	for _, r := range rs {
		a, h := r.keys.byKind["addrs"], r.keys.byKind["handles"]
		e.Row(fmt.Sprint(r.nodes), fmt.Sprint(r.keys.total),
			fmt.Sprintf("%.2f", float64(r.keys.total)/float64(r.attachments)),
			fmt.Sprintf("%.0f", float64(r.keys.bytes)/float64(r.attachments)),
			fmt.Sprintf("%.0f", float64(a[1]+h[1])/float64(r.attachments)),
			mibs(r.afterFill.size), mibs(r.afterChurn.size), mibs(r.afterChurn.inUse), mibs(r.afterCompact.inUse),
			fmt.Sprint(r.afterCompact.revision))
	}
	e.Print(os.Stdout)
	last := rs[len(rs)-1]
	var parts []string
	for _, k := range kinds {
		if c := last.keys.byKind[k]; c[0] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d keys %.0f B avg", k, c[0], float64(c[1])/float64(c[0])))
		}
	}
	fmt.Printf("(at %d nodes: %s; DB sizes in MiB: bbolt file, DbSizeInUse before and after compacting all history)\n",
		last.nodes, strings.Join(parts, ", "))

	fmt.Printf("\n== whole-cluster check and node removal ==\n")
	var c benchutil.Table
	c.Row("nodes", "Snapshot", "Check", "response", "problems", "remove 1 node", "released", "txns", "problems after")
	for _, r := range rs {
		c.Row(fmt.Sprint(r.nodes), dur(r.snapTime), dur(r.chkTime), fmt.Sprintf("%.1f MiB", mib(r.keys.respBytes)),
			fmt.Sprint(len(r.problems)), dur(r.remove),
			fmt.Sprintf("%d pods, %d blocks", r.released.attachments, r.released.blocks),
			fmt.Sprint(r.released.txns), fmt.Sprint(len(r.problemsAfter)))
	}
	c.Print(os.Stdout)
	fmt.Printf("(Snapshot: one range read of %s; removal: fence txn + one Release per pod + one ReleaseBlock per block,\n"+
		" until store.RemoveNode batches them)\n", store.Prefix)

	fmt.Printf("\n== targets (issue 12) ==\n")
	var tt benchutil.Table
	tt.Row("target", "where", "value", "goal", "verdict")
	lo, hi := rs[0], rs[len(rs)-1]
	full := hi.nodes >= 1000 && *flagPods >= 110
	where := fmt.Sprintf("%d vs %d nodes", hi.nodes, lo.nodes)
	if !full {
		where += " (not 1,000 × 110)"
	}
	if len(rs) > 1 {
		for _, g := range []struct {
			name   string
			lo, hi time.Duration
		}{
			{"ADD p50 growth (fill)", lo.fill.lat.Median(), hi.fill.lat.Median()},
			{"ADD p99 growth (fill)", lo.fill.lat.Pct(99), hi.fill.lat.Pct(99)},
			{"ADD p50 growth (churn)", lo.churnAdd.Median(), hi.churnAdd.Median()},
			{"ADD p99 growth (churn)", lo.churnAdd.Pct(99), hi.churnAdd.Pct(99)},
		} {
			ok := g.lo > 0 && g.hi > 0
			v := "-"
			if ok {
				v = fmt.Sprintf("%.2f×", float64(g.hi)/float64(g.lo))
			}
			tt.Row(g.name, where, v, "≤ 1.20×", benchutil.Verdict(ok, ok && float64(g.hi) <= 1.2*float64(g.lo)))
		}
		g := float64(lo.boot.lat.Median())
		tt.Row("(claim ADD p50 growth, first ADD per node)", where, fmt.Sprintf("%.2f×", float64(hi.boot.lat.Median())/g), "", "")
	}
	clean := true
	for _, r := range rs {
		clean = clean && len(r.problems) == 0 && len(r.problemsAfter) == 0
	}
	tt.Row("Check clean (before and after the removal)", "every scale", fmt.Sprintf("%d problems", len(hi.problems)+len(hi.problemsAfter)), "0", benchutil.Verdict(true, clean))
	tt.Print(os.Stdout)
}

func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(n)/d.Seconds())
}

func mibs(b int64) string { return fmt.Sprintf("%.1f", mib(b)) }

func dur(d time.Duration) string {
	if d < time.Second {
		return benchutil.Ms(d) + " ms"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

package main

import (
	"context"
	"fmt"
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

func report(c *config, rs []*result) {
	w := c.out
	lo, hi := rs[0], rs[len(rs)-1]
	cols := func(f func(r *result) string) []string {
		var out []string
		for _, r := range rs {
			out = append(out, f(r))
		}
		return out
	}
	ratio := func(f func(r *result) time.Duration) string {
		if len(rs) < 2 || f(lo) <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", float64(f(hi))/float64(f(lo)))
	}

	fmt.Fprintf(w, "\n== summary (%d pods per node, one shared pool, %d ops in flight, %d churn rounds of %.0f%%) ==\n",
		c.pods, c.par, c.rounds, 100*c.churn)
	var t benchutil.Table
	head := []string{"metric"}
	for _, r := range rs {
		head = append(head, fmt.Sprintf("%d nodes", r.nodes))
	}
	head = append(head, fmt.Sprintf("%d/%d", hi.nodes, lo.nodes), "target")
	t.Row(head...)
	row := func(name string, vals []string, rat, target string) {
		t.Row(append(append([]string{name}, vals...), rat, target)...)
	}
	ms := func(f func(r *result) time.Duration) []string {
		return cols(func(r *result) string { return benchutil.Ms(f(r)) })
	}
	row("block claims/s (first ADD of every node at once)", cols(func(r *result) string { return fmt.Sprintf("%.0f", r.boot.rate()) }), "", "")
	row(fmt.Sprintf("ADDs and DELs over %v (failed; done again)", opTimeout), cols(func(r *result) string {
		return fmt.Sprintf("%d + %d + %d", r.boot.timeouts, r.fill.timeouts, r.churnTimeouts)
	}), "", "0 + 0 + 0")
	row("ADD/s (fill)", cols(func(r *result) string { return fmt.Sprintf("%.0f", r.fill.rate()) }), "", "")
	probeP50 := func(r *result) time.Duration { return r.probeAdd.Median() }
	probeP99 := func(r *result) time.Duration { return r.probeAdd.Pct(99) }
	fillP50 := func(r *result) time.Duration { return r.fill.lat.Median() }
	fillP99 := func(r *result) time.Duration { return r.fill.lat.Pct(99) }
	churnP50 := func(r *result) time.Duration { return r.churnAdd.Median() }
	churnP99 := func(r *result) time.Duration { return r.churnAdd.Pct(99) }
	probeName := fmt.Sprintf("(probe, %d in flight)", c.probePar)
	row("ADD p50 ms "+probeName, ms(probeP50), ratio(probeP50), "≤ 1.20×")
	row("ADD p99 ms "+probeName, ms(probeP99), ratio(probeP99), "≤ 1.20×")
	row("DEL p50 ms "+probeName, ms(func(r *result) time.Duration { return r.probeDel.Median() }), ratio(func(r *result) time.Duration { return r.probeDel.Median() }), "")
	row(fmt.Sprintf("ADD p50 ms (fill, %d in flight)", c.par), ms(fillP50), ratio(fillP50), "")
	row(fmt.Sprintf("ADD p99 ms (fill, %d in flight)", c.par), ms(fillP99), ratio(fillP99), "")
	row(fmt.Sprintf("ADD p50 ms (churn, %d in flight)", c.par), ms(churnP50), ratio(churnP50), "")
	row(fmt.Sprintf("ADD p99 ms (churn, %d in flight)", c.par), ms(churnP99), ratio(churnP99), "")
	row("etcd keys (v6cni)", cols(func(r *result) string { return fmt.Sprint(r.keys.total) }), "", "")
	row("keys per attachment", cols(func(r *result) string { return fmt.Sprintf("%.2f", float64(r.keys.total)/float64(r.attachments)) }), "", "")
	row("key+value bytes per attachment", cols(func(r *result) string { return fmt.Sprintf("%.0f", float64(r.keys.bytes)/float64(r.attachments)) }), "", "")
	row("etcd DB MiB after churn (file / in use)", cols(func(r *result) string {
		return fmt.Sprintf("%.1f / %.1f", mib(r.afterChurn.size), mib(r.afterChurn.inUse))
	}), "", "quota 2048")
	row("etcd DB MiB in use, compacted", cols(func(r *result) string { return mibs(r.afterCompact.inUse) }), "", "")
	row("whole-cluster check ms (Snapshot + Check)", cols(func(r *result) string {
		return benchutil.Ms(r.snapTime) + " + " + benchutil.Ms(r.chkTime)
	}), ratio(func(r *result) time.Duration { return r.snapTime + r.chkTime }), "")
	row(fmt.Sprintf("remove 1 node ms (%d attachments)", c.pods), ms(func(r *result) time.Duration { return r.removal.took }),
		ratio(func(r *result) time.Duration { return r.removal.took }), "")
	row("liveness writes/s (keepalives + heartbeats)", cols(func(r *result) string {
		return fmt.Sprintf("%.1f + %.1f", float64(r.keepalives)/r.wall.Seconds(), float64(r.heartbeats)/r.wall.Seconds())
	}), "", "")
	t.Print(w)
	full := hi.nodes >= 1000 && c.pods >= 110
	if !full {
		fmt.Fprintf(w, "(not the full 1,000 × 110 scale)\n")
	}
	fmt.Fprintf(w, "(claims/s: the first ADD of every node at once, each claiming a block; fill: the other pods in random\n"+
		" order; churn: DEL then ADD of a random %.0f%% of all pods per round; probe: %d DEL+ADD at the same load at\n"+
		" every scale, one in flight per node — the target's figure; fill and churn keep %d in flight, which at few\n"+
		" nodes queue on the node locks; the ratio is the largest scale over the smallest)\n", 100*c.churn, c.probe, c.par)

	fmt.Fprintf(w, "\n== etcd (one member, --quota-backend-bytes %d GiB; default quota 2 GiB) ==\n", etcdQuota>>30)
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
	e.Print(w)
	var parts []string
	for _, k := range kinds {
		if c := hi.keys.byKind[k]; c[0] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d keys %.0f B avg", k, c[0], float64(c[1])/float64(c[0])))
		}
	}
	fmt.Fprintf(w, "(at %d nodes: %s; DB sizes in MiB: bbolt file, DbSizeInUse before and after compacting all history)\n",
		hi.nodes, strings.Join(parts, ", "))

	fmt.Fprintf(w, "\n== whole-cluster check, node removal, liveness ==\n")
	var k benchutil.Table
	k.Row("nodes", "Snapshot", "Check", "response", "problems", "remove 1 node", "released", "etcd writes", "problems after",
		"keepalives", "heartbeats", "heartbeat errors")
	for _, r := range rs {
		k.Row(fmt.Sprint(r.nodes), dur(r.snapTime), dur(r.chkTime), fmt.Sprintf("%.1f MiB", mib(r.keys.respBytes)),
			fmt.Sprint(len(r.problems)), dur(r.removal.took),
			fmt.Sprintf("%d pods, %d blocks", r.removal.rm.Attachments, r.removal.rm.Blocks),
			fmt.Sprint(r.removal.writes), fmt.Sprint(len(r.problemsAfter)),
			fmt.Sprint(r.keepalives), fmt.Sprint(r.heartbeats), fmt.Sprint(r.heartbeatErrs))
	}
	k.Print(w)
	fmt.Fprintf(w, "(Snapshot: one range read of %s; removal: store.RemoveNode, one fencing txn then batches of ≤ 100 ops;\n"+
		" keepalives and heartbeats over the scale's whole run)\n", store.Prefix)

	fmt.Fprintf(w, "\n== targets (issue 12) ==\n")
	var tt benchutil.Table
	tt.Row("target", "where", "value", "goal", "verdict")
	where := fmt.Sprintf("%d vs %d nodes", hi.nodes, lo.nodes)
	if !full {
		where += " (not 1,000 × 110)"
	}
	if len(rs) > 1 {
		for _, g := range []struct {
			name string
			f    func(r *result) time.Duration
		}{
			{"ADD p50 growth (probe, equal load)", probeP50}, {"ADD p99 growth (probe, equal load)", probeP99},
		} {
			ok := g.f(lo) > 0 && g.f(hi) > 0
			tt.Row(g.name, where, ratio(g.f), "≤ 1.20×", benchutil.Verdict(ok, ok && float64(g.f(hi)) <= 1.2*float64(g.f(lo))))
		}
	}
	clean := true
	for _, r := range rs {
		clean = clean && len(r.problems) == 0 && len(r.problemsAfter) == 0
	}
	to := 0
	for _, r := range rs {
		to += r.boot.timeouts + r.fill.timeouts + r.churnTimeouts
	}
	tt.Row(fmt.Sprintf("no ADD/DEL over %v", opTimeout), "every scale", fmt.Sprintf("%d timed out", to), "0", benchutil.Verdict(true, to == 0))
	tt.Row("Check clean (before and after the removal)", "every scale", fmt.Sprintf("%d problems", len(hi.problems)+len(hi.problemsAfter)), "0", benchutil.Verdict(true, clean))
	tt.Print(w)
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

// Command clusterbench measures v6cni's IPAM at cluster scale: many
// simulated nodes in one process, each with its own etcd client, lease and
// allocator (allocator.New with its node name), sharing ONE real etcd
// (Debian's etcd-server, started here on loopback with a fresh data dir).
// Every node gets -pods pods (110, Kubernetes' per-node default) from one
// pool shared by all, ADDed concurrently across the cluster; then churn
// rounds delete and re-add a fraction of the pods. It prints block claims/s,
// ADD p50/p99 and ADD/s per scale and their growth from the smallest to the
// largest scale, etcd's database size and keys per attachment, the time of
// a full Snapshot+Check, and the time to remove one node.
//
//	go run ./bench/clusterbench                      # 10 and 1,000 nodes
//	go run ./bench/clusterbench -scales 10,100       # a cheap run
//
// Like the other benches it runs in a private network namespace with
// everything in a temporary directory, removed at the end (also on Ctrl-C).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

var (
	flagNodes   = flag.Int("nodes", 1000, "largest number of nodes (scales above it are dropped; added to -scales when set)")
	flagScales  = flag.String("scales", "10,1000", "node counts to measure, each on a fresh etcd")
	flagPods    = flag.Int("pods", 110, "pods per node")
	flagRounds  = flag.Int("rounds", 3, "churn rounds")
	flagChurn   = flag.Float64("churn", 0.10, "fraction of all pods deleted and re-added per churn round")
	flagPar     = flag.Int("par", 64, "ADDs/DELs in flight across the cluster")
	flagClients = flag.Int("clients", 0, "etcd clients (connections) shared by the nodes; 0: one per node, as in a real cluster")
	flagBlock   = flag.Int("block", 122, "IPv6 block size (prefix length) of the pool")
	flagDual    = flag.Bool("dual", false, "dual-stack: also an IPv4 range (10.0.0.0/8, /26 blocks)")
	flagEtcd    = flag.String("etcd", "etcd", "etcd-server binary (Debian's etcd-server package)")
	flagSeed    = flag.Uint64("seed", 1, "seed of the pod order and the churn picks")
	flagTimeout = flag.Duration("timeout", 60*time.Minute, "bound on the whole run")
)

// opTimeout bounds one ADD or DEL, like the plugins' timeout.
const opTimeout = 30 * time.Second

func main() {
	flag.Parse()
	benchutil.Main("clusterbench", run)
}

func scales() ([]int, error) {
	var out []int
	for _, f := range strings.Split(*flagScales, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-scales: bad node count %q", f)
		}
		if n <= *flagNodes {
			out = append(out, n)
		}
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "nodes" })
	if set && (len(out) == 0 || out[len(out)-1] != *flagNodes) {
		out = append(out, *flagNodes)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-scales %q: no node count ≤ -nodes %d", *flagScales, *flagNodes)
	}
	return out, nil
}

func run(ctx context.Context, r *benchutil.Run) error {
	ctx, cancel := context.WithTimeout(ctx, *flagTimeout)
	defer cancel()
	sc, err := scales()
	if err != nil {
		return err
	}
	switch {
	case *flagPods < 1:
		return fmt.Errorf("-pods %d: want ≥ 1", *flagPods)
	case *flagPar < 1:
		return fmt.Errorf("-par %d: want ≥ 1", *flagPar)
	case *flagChurn < 0 || *flagChurn > 1:
		return fmt.Errorf("-churn %v: want 0..1", *flagChurn)
	}
	bin, err := exec.LookPath(*flagEtcd)
	if err != nil {
		return fmt.Errorf("-etcd %s: %w (apt-get install etcd-server)", *flagEtcd, err)
	}
	conf, err := netConf(r.ID)
	if err != nil {
		return err
	}
	ver, _ := exec.Command(bin, "--version").Output()
	verLine, _, _ := strings.Cut(string(ver), "\n")
	fmt.Printf("clusterbench: run %s, %d CPUs, temp dir %s\n", r.ID, runtime.NumCPU(), r.Dir)
	fmt.Printf("  %s (%s); scales %v nodes × %d pods; pool %s; %d in flight; %d churn rounds of %.0f%%\n",
		bin, strings.TrimSpace(verLine), sc, *flagPods, poolText(conf), *flagPar, *flagRounds, 100**flagChurn)
	t0 := time.Now()
	var results []*result
	for i, n := range sc {
		res, err := runScale(ctx, r, bin, conf, n, i)
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		results = append(results, res)
	}
	report(results)
	fmt.Printf("\ntotal %v; cleaning up\n", time.Since(t0).Round(time.Second))
	return nil
}

// netConf is the one network of every node: a /48 of 2001:db8::/32 cut
// into -block blocks (and, with -dual, 10.0.0.0/8 in /26 blocks).
func netConf(runID string) (*ipamconf.NetConf, error) {
	ranges := []any{[]any{map[string]any{"subnet": fmt.Sprintf("2001:db8:%s::/48", runID), "blockSize": *flagBlock}}}
	if *flagDual {
		ranges = append(ranges, []any{map[string]any{"subnet": "10.0.0.0/8", "blockSize": 26}})
	}
	raw, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "cluster",
		"ipam": map[string]any{"type": "ipam-v6", "ranges": ranges},
	})
	if err != nil {
		return nil, err
	}
	conf, err := ipamconf.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("-block %d / -dual: %w", *flagBlock, err)
	}
	return conf, nil
}

func poolText(conf *ipamconf.NetConf) string {
	var parts []string
	for _, set := range conf.IPAM.Ranges {
		for _, r := range set {
			parts = append(parts, fmt.Sprintf("%s in /%d blocks", r.Subnet, r.BlockSize))
		}
	}
	return strings.Join(parts, " + ")
}

// sample is a set of timed operations and their wall time.
type sample struct {
	lat  benchutil.Durs
	wall time.Duration
}

func (s *sample) rate() float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(len(s.lat)) / s.wall.Seconds()
}

// result is what one scale measured.
type result struct {
	nodes, attachments int
	startWall          time.Duration
	boot, fill         sample // the first ADD on every node (claims), the rest
	blocks             int
	churnAdd, churnDel benchutil.Durs
	churnWall          time.Duration
	churnOps           int
	afterFill          dbStatus
	afterChurn         dbStatus
	afterCompact       dbStatus
	keys               keyStats
	snapTime, chkTime  time.Duration
	problems           []store.Problem
	remove             time.Duration
	released           removed
	problemsAfter      []store.Problem
}

func runScale(ctx context.Context, r *benchutil.Run, bin string, conf *ipamconf.NetConf, nodes, idx int) (*result, error) {
	res := &result{nodes: nodes}
	fmt.Printf("\n== %d nodes × %d pods ==\n", nodes, *flagPods)
	if idx > 0 {
		benchutil.Settle(ctx, 20*time.Second)
	}
	etcd, err := startEtcd(ctx, r, bin, fmt.Sprintf("etcd-%d", nodes))
	if err != nil {
		return nil, err
	}
	defer etcd.stop()
	if idx == 0 {
		fmt.Printf("  etcd %s\n", strings.Join(etcd.args, " "))
	}
	admin, err := etcd.client()
	if err != nil {
		return nil, err
	}
	defer admin.Close()

	// Clients: one per node (a real cluster: every ipamd its own
	// connection, lease and keepalive stream), or -clients shared ones.
	nclients := nodes
	if *flagClients > 0 {
		nclients = min(*flagClients, nodes)
	}
	clients := make([]*clientv3.Client, nclients)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		if clients[i], err = etcd.client(); err != nil {
			return nil, err
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sim := make([]*simNode, nodes)
	defer func() {
		for _, n := range sim {
			if n != nil {
				n.stop()
			}
		}
	}()
	res.startWall, err = benchutil.Parallel(ctx, nodes, *flagPar, func(i int) error {
		n, err := startNode(ctx, clients[i%nclients], fmt.Sprintf("node-%04d", i), *flagPods, log)
		sim[i] = n
		return err
	})
	if err != nil {
		return nil, err
	}
	fmt.Printf("  %d nodes registered (lease %v each) with their allocators in %v over %d etcd connections\n",
		nodes, leaseTTL, res.startWall.Round(time.Millisecond), nclients)

	rng := rand.New(rand.NewPCG(*flagSeed, uint64(nodes)))
	type slot struct{ node, pod int }
	timed := func(tasks []slot, f func(context.Context, slot) (time.Duration, error)) (sample, error) {
		s := sample{lat: make(benchutil.Durs, len(tasks))}
		var err error
		s.wall, err = benchutil.Parallel(ctx, len(tasks), *flagPar, func(i int) error {
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			d, err := f(octx, tasks[i])
			s.lat[i] = d
			return err
		})
		return s, err
	}
	add := func(ctx context.Context, s slot) (time.Duration, error) { return sim[s.node].add(ctx, conf, s.pod) }

	// Bootstrap: the first pod of every node, in a random node order; each
	// of these ADDs claims the node's first block, racing the others.
	boot := make([]slot, nodes)
	for i := range boot {
		boot[i] = slot{i, 0}
	}
	rng.Shuffle(len(boot), func(i, j int) { boot[i], boot[j] = boot[j], boot[i] })
	if res.boot, err = timed(boot, add); err != nil {
		return nil, fmt.Errorf("first ADD of each node: %w", err)
	}
	fmt.Printf("  first ADD on every node (claims a block): %.0f claims/s, p50 %s ms, p99 %s ms\n",
		res.boot.rate(), benchutil.Ms(res.boot.lat.Median()), benchutil.Ms(res.boot.lat.Pct(99)))

	// Fill: the other pods, every node's in random order across the cluster.
	var fill []slot
	for i := range nodes {
		for p := 1; p < *flagPods; p++ {
			fill = append(fill, slot{i, p})
		}
	}
	rng.Shuffle(len(fill), func(i, j int) { fill[i], fill[j] = fill[j], fill[i] })
	if res.fill, err = timed(fill, add); err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	res.attachments = nodes * *flagPods
	blocks, err := store.New(admin).Blocks(ctx)
	if err != nil {
		return nil, err
	}
	res.blocks = len(blocks)
	fmt.Printf("  fill to %d pods: %.0f ADD/s, p50 %s ms, p99 %s ms; %d blocks claimed in all\n",
		res.attachments, res.fill.rate(), benchutil.Ms(res.fill.lat.Median()), benchutil.Ms(res.fill.lat.Pct(99)), res.blocks)
	if res.afterFill, err = etcd.status(ctx, admin); err != nil {
		return nil, err
	}

	// Churn: each round deletes a random -churn of all pods and adds each
	// back (a new container, as a restarted pod): DEL then ADD per pod, the
	// pods of a round in flight -par at a time across the cluster.
	per := int(float64(res.attachments) * *flagChurn)
	for round := range *flagRounds {
		picks := rng.Perm(res.attachments)[:per]
		dels := make(benchutil.Durs, per)
		adds := make(benchutil.Durs, per)
		wall, err := benchutil.Parallel(ctx, per, *flagPar, func(i int) error {
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			n, pod := sim[picks[i] / *flagPods], picks[i]%*flagPods
			var err error
			if dels[i], err = n.del(octx, pod); err != nil {
				return err
			}
			adds[i], err = n.add(octx, conf, pod)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("churn round %d: %w", round+1, err)
		}
		res.churnDel = append(res.churnDel, dels...)
		res.churnAdd = append(res.churnAdd, adds...)
		res.churnWall += wall
		res.churnOps += 2 * per
		fmt.Printf("  churn round %d: %d DEL + %d ADD in %v (%.0f ops/s); ADD p50 %s ms p99 %s ms, DEL p50 %s ms p99 %s ms\n",
			round+1, per, per, wall.Round(time.Millisecond), float64(2*per)/wall.Seconds(),
			benchutil.Ms(adds.Median()), benchutil.Ms(adds.Pct(99)), benchutil.Ms(dels.Median()), benchutil.Ms(dels.Pct(99)))
	}
	if res.afterChurn, err = etcd.status(ctx, admin); err != nil {
		return nil, err
	}
	if res.keys, err = countKeys(ctx, admin); err != nil {
		return nil, err
	}

	// The whole cluster's consistency check, as `ipamd check` reads it.
	st := store.New(admin)
	if res.snapTime, res.chkTime, res.problems, err = snapshotCheck(ctx, st); err != nil {
		return nil, err
	}
	fmt.Printf("  Snapshot %v (%d keys, %.1f MiB response) + Check %v: %d problems\n",
		res.snapTime.Round(time.Millisecond), res.keys.total, mib(res.keys.respBytes), res.chkTime.Round(time.Millisecond), len(res.problems))
	printProblems(res.problems)

	// Remove one node with its pods: its ipamd stops (no more keepalive),
	// then the removal.
	victim := sim[0]
	victim.stop()
	t := time.Now()
	res.released, err = removeNode(ctx, victim.cli, st, victim.name, "clusterbench: ipamd node remove --force")
	res.remove = time.Since(t)
	if err != nil {
		return nil, err
	}
	if _, _, res.problemsAfter, err = snapshotCheck(ctx, st); err != nil {
		return nil, err
	}
	fmt.Printf("  removed %s in %v: %d attachments, %d blocks, %d txns; Check after: %d problems\n",
		victim.name, res.remove.Round(time.Millisecond), res.released.attachments, res.released.blocks, res.released.txns, len(res.problemsAfter))
	printProblems(res.problemsAfter)

	// What stays once history is compacted (kube-apiserver compacts every
	// 5 minutes): DbSizeInUse after a physical compaction.
	cur, err := etcd.status(ctx, admin)
	if err != nil {
		return nil, err
	}
	if _, err := admin.Compact(ctx, cur.revision, clientv3.WithCompactPhysical()); err != nil {
		return nil, fmt.Errorf("etcd compact: %w", err)
	}
	if res.afterCompact, err = etcd.status(ctx, admin); err != nil {
		return nil, err
	}
	fmt.Printf("  etcd DB: %.1f MiB after fill, %.1f MiB after churn (in use %.1f MiB), in use %.1f MiB after compaction at revision %d\n",
		mib(res.afterFill.size), mib(res.afterChurn.size), mib(res.afterChurn.inUse), mib(res.afterCompact.inUse), cur.revision)
	return res, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func snapshotCheck(ctx context.Context, st *store.Store) (snap, chk time.Duration, problems []store.Problem, err error) {
	t := time.Now()
	s, err := st.Snapshot(ctx)
	snap = time.Since(t)
	if err != nil {
		return 0, 0, nil, err
	}
	t = time.Now()
	problems = store.Check(s)
	return snap, time.Since(t), problems, nil
}

func printProblems(ps []store.Problem) {
	for i, p := range ps {
		if i == 5 {
			fmt.Printf("    … %d more\n", len(ps)-i)
			break
		}
		fmt.Printf("    %s\n", p)
	}
}

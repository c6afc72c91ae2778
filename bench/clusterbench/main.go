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
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// config is one run's parameters (the flags).
type config struct {
	scales            []int
	pods, rounds, par int
	clients, block    int
	churn             float64
	dual              bool
	etcd              string
	etcdGOGC          string // GOGC of the etcd processes ("": etcd's default)
	seed              uint64
	heartbeat         time.Duration
	// probe ADD latency probes (each a DEL then an ADD) run probePar at a
	// time, each worker on nodes of its own: the same offered load at
	// every scale, so the latencies compare cluster sizes, not loads.
	probe, probePar int
	// settle is the longest wait for an idle machine before each scale
	// after the first.
	settle time.Duration
	out    io.Writer
}

func parseFlags() (*config, time.Duration, error) {
	nodes := flag.Int("nodes", 1000, "largest number of nodes (scales above it are dropped; added to -scales when set)")
	scalesF := flag.String("scales", "10,1000", "node counts to measure, each on a fresh etcd")
	c := &config{out: os.Stdout, settle: 20 * time.Second}
	flag.IntVar(&c.pods, "pods", 110, "pods per node")
	flag.IntVar(&c.rounds, "rounds", 3, "churn rounds")
	flag.Float64Var(&c.churn, "churn", 0.10, "fraction of all pods deleted and re-added per churn round")
	flag.IntVar(&c.par, "par", 64, "ADDs/DELs in flight across the cluster")
	flag.IntVar(&c.clients, "clients", 0, "etcd clients (connections) shared by the nodes; 0: one per node, as in a real cluster")
	flag.IntVar(&c.block, "block", 122, "IPv6 block size (prefix length) of the pool")
	flag.BoolVar(&c.dual, "dual", false, "dual-stack: also an IPv4 range (10.0.0.0/8, /26 blocks)")
	flag.StringVar(&c.etcd, "etcd", "etcd", "etcd-server binary (Debian's etcd-server package)")
	flag.StringVar(&c.etcdGOGC, "etcd-gogc", "", "GOGC of the etcd processes (empty: the Go default, 100)")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the pod order and the churn picks")
	flag.IntVar(&c.probe, "probe", 2000, "latency probes (DEL then ADD of a random pod) at equal load at every scale")
	flag.IntVar(&c.probePar, "probe-par", 8, "probes in flight, each on nodes of its own (the smallest scale should have at least this many nodes)")
	flag.DurationVar(&c.heartbeat, "heartbeat", leaseTTL, "interval of each node's registration heartbeat (LastSeen write); 0: none")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole run")
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "nodes" })
	var err error
	c.scales, err = scales(*scalesF, *nodes, set)
	if err != nil {
		return nil, 0, err
	}
	return c, *timeout, c.validate()
}

func (c *config) validate() error {
	switch {
	case c.pods < 1:
		return fmt.Errorf("-pods %d: want ≥ 1", c.pods)
	case c.rounds < 0:
		return fmt.Errorf("-rounds %d: want ≥ 0", c.rounds)
	case c.par < 1:
		return fmt.Errorf("-par %d: want ≥ 1", c.par)
	case c.churn < 0 || c.churn > 1:
		return fmt.Errorf("-churn %v: want 0..1", c.churn)
	case c.probe < 0 || c.probePar < 1:
		return fmt.Errorf("-probe %d -probe-par %d: want ≥ 0 and ≥ 1", c.probe, c.probePar)
	case c.heartbeat < 0:
		return fmt.Errorf("-heartbeat %v: want ≥ 0", c.heartbeat)
	}
	return nil
}

// opTimeout bounds one ADD or DEL, like the plugins' timeout. Past it
// (or on etcd's own "request timed out") the operation counts as failed.
const opTimeout = 30 * time.Second

func main() {
	c, timeout, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(2)
	}
	benchutil.Main("clusterbench", func(ctx context.Context, r *benchutil.Run) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := run(ctx, r, c)
		return err
	})
}

// scales parses -scales, drops counts above -nodes and appends -nodes
// when it was given.
func scales(list string, nodes int, nodesSet bool) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-scales: bad node count %q", f)
		}
		if n <= nodes {
			out = append(out, n)
		}
	}
	if nodesSet && (len(out) == 0 || out[len(out)-1] != nodes) {
		out = append(out, nodes)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-scales %q: no node count ≤ -nodes %d", list, nodes)
	}
	return out, nil
}

// run measures every scale and prints the report; it returns the results.
func run(ctx context.Context, r *benchutil.Run, c *config) ([]*result, error) {
	bin, err := exec.LookPath(c.etcd)
	if err != nil {
		return nil, fmt.Errorf("-etcd %s: %w (apt-get install etcd-server)", c.etcd, err)
	}
	conf, err := netConf(r.ID, c.block, c.dual)
	if err != nil {
		return nil, err
	}
	ver, _ := exec.Command(bin, "--version").Output()
	verLine, _, _ := strings.Cut(string(ver), "\n")
	fmt.Fprintf(c.out, "clusterbench: run %s, %d CPUs, temp dir %s\n", r.ID, runtime.NumCPU(), r.Dir)
	fmt.Fprintf(c.out, "  %s (%s); scales %v nodes × %d pods; pool %s; %d in flight; %d churn rounds of %.0f%%; heartbeat %v\n",
		bin, strings.TrimSpace(verLine), c.scales, c.pods, poolText(conf), c.par, c.rounds, 100*c.churn, c.heartbeat)
	t0 := time.Now()
	var results []*result
	var clusters []*cluster
	defer func() {
		for _, cl := range clusters {
			cl.close()
		}
	}()
	for i, n := range c.scales {
		cl, err := runScale(ctx, r, c, bin, conf, n, i)
		if err != nil {
			return nil, fmt.Errorf("%d nodes: %w", n, err)
		}
		results = append(results, cl.res)
		clusters = append(clusters, cl)
	}
	if err := probes(ctx, c, clusters); err != nil {
		return nil, err
	}
	report(c, results)
	if c.probe > 0 {
		reportTail(c.out, results)
	}
	fmt.Fprintf(c.out, "\ntotal %v\n", time.Since(t0).Round(time.Second))
	return results, nil
}

// netConf is the one network of every node: a /48 of 2001:db8::/32 cut
// into -block blocks (and, with -dual, 10.0.0.0/8 in /26 blocks).
func netConf(runID string, block int, dual bool) (*ipamconf.NetConf, error) {
	ranges := []any{[]any{map[string]any{"subnet": fmt.Sprintf("2001:db8:%s::/48", runID), "blockSize": block}}}
	if dual {
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
		return nil, fmt.Errorf("-block %d / -dual: %w", block, err)
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
	// timeouts counts operations that hit opTimeout (their latency is in
	// lat); each was DELeted and done again after the phase.
	timeouts int
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
	churnTimeouts      int
	probeAdd, probeDel benchutil.Durs
	probeWall          time.Duration
	probePar           int
	tail               tailStats // where the probes' time went
	afterFill          dbStatus
	afterChurn         dbStatus
	afterCompact       dbStatus
	keys               keyStats
	snapTime, chkTime  time.Duration
	problems           []store.Problem
	removal            removal
	problemsAfter      []store.Problem
	// wall is the scale's whole time, with the liveness counts over it.
	wall                                  time.Duration
	keepalives, heartbeats, heartbeatErrs int64
}

// cluster is one scale's running cluster, kept until the probes at the
// end of the run.
type cluster struct {
	res     *result
	sim     []*simNode
	conf    *ipamconf.NetConf
	rng     *rand.Rand
	etcd    *etcdServer
	closers []func()
}

// close stops the nodes, the clients and etcd (removing its data).
func (cl *cluster) close() {
	for i := len(cl.closers) - 1; i >= 0; i-- {
		cl.closers[i]()
	}
	cl.closers = nil
}

// runScale builds and measures one scale. The cluster it returns stays up
// for the probes; on error it is closed already.
func runScale(ctx context.Context, r *benchutil.Run, c *config, bin string, conf *ipamconf.NetConf, nodes, idx int) (_ *cluster, err error) {
	res := &result{nodes: nodes}
	cl := &cluster{res: res, conf: conf}
	defer func() {
		if err != nil {
			cl.close()
		}
	}()
	w := c.out
	fmt.Fprintf(w, "\n== %d nodes × %d pods ==\n", nodes, c.pods)
	if idx > 0 && c.settle > 0 {
		benchutil.Settle(ctx, c.settle)
	}
	etcd, err := startEtcd(ctx, r, bin, fmt.Sprintf("etcd-%d", nodes), c.etcdGOGC)
	if err != nil {
		return nil, err
	}
	cl.etcd = etcd
	cl.closers = append(cl.closers, func() {
		etcd.stop()
		// The data directory can be GiBs.
		os.RemoveAll(etcd.dataDir)
	})
	if idx == 0 {
		fmt.Fprintf(w, "  etcd %s\n", strings.Join(etcd.args, " "))
	}
	admin, err := etcd.client()
	if err != nil {
		return nil, err
	}
	cl.closers = append(cl.closers, func() { admin.Close() })
	t0 := time.Now()

	// Clients: one per node (a real cluster: every ipamd its own
	// connection, lease and keepalive stream), or -clients shared ones.
	nclients := nodes
	if c.clients > 0 {
		nclients = min(c.clients, nodes)
	}
	clients := make([]*clientv3.Client, nclients)
	cl.closers = append(cl.closers, func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	})
	for i := range clients {
		if clients[i], err = etcd.client(); err != nil {
			return nil, err
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var lv liveness
	sim := make([]*simNode, nodes)
	cl.sim = sim
	cl.closers = append(cl.closers, func() {
		for _, n := range sim {
			if n != nil {
				n.stop()
			}
		}
	})
	res.startWall, err = benchutil.Parallel(ctx, nodes, c.par, func(i int) error {
		n, err := startNode(ctx, clients[i%nclients], fmt.Sprintf("node-%04d", i), c.pods, c.heartbeat, &lv, log)
		sim[i] = n
		return err
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "  %d nodes registered (liveness lease %v each, kept alive; heartbeat %v) with their allocators in %v over %d etcd connections\n",
		nodes, leaseTTL, c.heartbeat, res.startWall.Round(time.Millisecond), nclients)

	rng := rand.New(rand.NewPCG(c.seed, uint64(nodes)))
	cl.rng = rng
	type slot struct{ node, pod int }
	// An operation that hits opTimeout failed, as the plugin's would: it
	// is counted and done again after its phase (redo), so one slow claim
	// does not end the run; other errors do.
	var retryMu sync.Mutex
	var retry []slot
	timedOut := func(err error, s slot) bool {
		// etcd's own "request timed out" (its apply fell behind) counts too.
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, rpctypes.ErrTimeout) || ctx.Err() != nil {
			return false
		}
		retryMu.Lock()
		defer retryMu.Unlock()
		retry = append(retry, s)
		return true
	}
	redo := func() (int, error) {
		failed := retry
		retry = nil
		_, err := benchutil.Parallel(ctx, len(failed), c.probePar, func(i int) error {
			return sim[failed[i].node].redo(ctx, conf, failed[i].pod)
		})
		if err != nil {
			return 0, fmt.Errorf("again after a timeout: %w", err)
		}
		if len(failed) > 0 {
			fmt.Fprintf(w, "  %d operations timed out (> %v) and were done again\n", len(failed), opTimeout)
		}
		return len(failed), nil
	}
	timed := func(tasks []slot, f func(context.Context, slot) (time.Duration, error)) (sample, error) {
		s := sample{lat: make(benchutil.Durs, len(tasks))}
		var err error
		s.wall, err = benchutil.Parallel(ctx, len(tasks), c.par, func(i int) error {
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			d, err := f(octx, tasks[i])
			s.lat[i] = d
			if err != nil && timedOut(err, tasks[i]) {
				return nil
			}
			return err
		})
		if err != nil {
			return s, err
		}
		s.timeouts, err = redo()
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
	fmt.Fprintf(w, "  first ADD on every node (claims a block): %.0f claims/s, p50 %s ms, p99 %s ms\n",
		res.boot.rate(), benchutil.Ms(res.boot.lat.Median()), benchutil.Ms(res.boot.lat.Pct(99)))

	// Fill: the other pods, every node's in random order across the cluster.
	var fill []slot
	for i := range nodes {
		for p := 1; p < c.pods; p++ {
			fill = append(fill, slot{i, p})
		}
	}
	rng.Shuffle(len(fill), func(i, j int) { fill[i], fill[j] = fill[j], fill[i] })
	if res.fill, err = timed(fill, add); err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	res.attachments = nodes * c.pods
	blocks, err := store.New(admin).Blocks(ctx)
	if err != nil {
		return nil, err
	}
	res.blocks = len(blocks)
	fmt.Fprintf(w, "  fill to %d pods: %.0f ADD/s, p50 %s ms, p99 %s ms; %d blocks claimed in all\n",
		res.attachments, res.fill.rate(), benchutil.Ms(res.fill.lat.Median()), benchutil.Ms(res.fill.lat.Pct(99)), res.blocks)
	if res.afterFill, err = etcd.status(ctx, admin); err != nil {
		return nil, err
	}

	// Churn: each round deletes a random -churn of all pods and adds each
	// back (a new container, as a restarted pod): DEL then ADD per pod, the
	// pods of a round in flight -par at a time across the cluster.
	per := int(float64(res.attachments) * c.churn)
	for round := range c.rounds {
		picks := rng.Perm(res.attachments)[:per]
		dels := make(benchutil.Durs, per)
		adds := make(benchutil.Durs, per)
		wall, err := benchutil.Parallel(ctx, per, c.par, func(i int) error {
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			sl := slot{picks[i] / c.pods, picks[i] % c.pods}
			n := sim[sl.node]
			var err error
			if dels[i], err = n.del(octx, sl.pod); err == nil {
				adds[i], err = n.add(octx, conf, sl.pod)
			}
			if err != nil && timedOut(err, sl) {
				return nil
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("churn round %d: %w", round+1, err)
		}
		t, err := redo()
		if err != nil {
			return nil, fmt.Errorf("churn round %d: %w", round+1, err)
		}
		res.churnTimeouts += t
		res.churnDel = append(res.churnDel, dels...)
		res.churnAdd = append(res.churnAdd, adds...)
		res.churnWall += wall
		res.churnOps += 2 * per
		fmt.Fprintf(w, "  churn round %d: %d DEL + %d ADD in %v (%.0f ops/s); ADD p50 %s ms p99 %s ms, DEL p50 %s ms p99 %s ms\n",
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
	fmt.Fprintf(w, "  Snapshot %v (%d keys, %.1f MiB response) + Check %v: %d problems\n",
		res.snapTime.Round(time.Millisecond), res.keys.total, mib(res.keys.respBytes), res.chkTime.Round(time.Millisecond), len(res.problems))
	printProblems(w, res.problems)

	// Remove one node with its pods: its ipamd stops (no more keepalive
	// or heartbeat), then `ipamd node remove --force`'s store.RemoveNode.
	victim := sim[0]
	victim.stop()
	lv.paused.Store(true)
	res.removal, err = removeNode(ctx, admin, st, victim.name, "clusterbench: ipamd node remove --force")
	lv.paused.Store(false)
	if err != nil {
		return nil, err
	}
	if _, _, res.problemsAfter, err = snapshotCheck(ctx, st); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "  removed %s in %v: %d attachments, %d blocks, %d etcd writes; Check after: %d problems\n",
		victim.name, res.removal.took.Round(time.Millisecond), res.removal.rm.Attachments, res.removal.rm.Blocks,
		res.removal.writes, len(res.problemsAfter))
	printProblems(w, res.problemsAfter)
	res.wall = time.Since(t0)
	res.keepalives, res.heartbeats, res.heartbeatErrs = lv.keepalives.Load(), lv.heartbeats.Load(), lv.heartbeatErrs.Load()

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
	fmt.Fprintf(w, "  etcd DB: %.1f MiB after fill, %.1f MiB after churn (in use %.1f MiB), in use %.1f MiB after compaction at revision %d\n",
		mib(res.afterFill.size), mib(res.afterChurn.size), mib(res.afterChurn.inUse), mib(res.afterCompact.inUse), cur.revision)
	return cl, nil
}

// probeChunks is how many turns the scales take in the probes.
const probeChunks = 10

// probes measures ADD latency at the same offered load at every scale,
// with every scale's cluster up (each compacted, its node-0000 removed):
// the scales take turns, c.probe/probeChunks probes each, so a machine
// shared with other work loads them alike. The fill and churn phases run
// c.par operations in flight whatever the number of nodes, so at 10 nodes
// most of them queue on node locks while at 1,000 they all reach etcd:
// their latencies compare loads, these compare cluster sizes.
func probes(ctx context.Context, c *config, clusters []*cluster) error {
	if c.probe == 0 {
		return nil
	}
	per := max(1, c.probe/probeChunks)
	for done := 0; done < c.probe; done += per {
		for _, cl := range clusters {
			// etcd's /metrics and this process's runtime/metrics around
			// the chunk: a failed scrape leaves the etcd figures out.
			eb, _ := cl.etcd.scrape(ctx)
			gb, tb := readGo(), time.Now()
			if err := probe(ctx, c, cl, min(per, c.probe-done)); err != nil {
				return fmt.Errorf("%d nodes: %w", len(cl.sim), err)
			}
			ga, ta := readGo(), time.Now()
			ea, _ := cl.etcd.scrape(ctx)
			cl.res.tail.chunk(eb, ea, gb, ga, tb, ta)
		}
	}
	for _, cl := range clusters {
		res := cl.res
		fmt.Fprintf(c.out, "  probe at %d nodes: %d DEL + ADD, %d in flight on nodes of their own, in %v; ADD p50 %s ms p99 %s ms, DEL p50 %s ms p99 %s ms\n",
			res.nodes, len(res.probeAdd), res.probePar, res.probeWall.Round(time.Millisecond),
			benchutil.Ms(res.probeAdd.Median()), benchutil.Ms(res.probeAdd.Pct(99)),
			benchutil.Ms(res.probeDel.Median()), benchutil.Ms(res.probeDel.Pct(99)))
	}
	return nil
}

// probe runs n probes on one cluster: probePar workers, worker w on the
// nodes 1+w, 1+w+probePar, … (so no probe waits for another's node lock;
// node-0000 was removed), each DELs a random pod of one of its nodes and
// ADDs it back.
func probe(ctx context.Context, c *config, cl *cluster, n int) error {
	res, live := cl.res, len(cl.sim)-1
	if live < 1 {
		return nil
	}
	par := min(c.probePar, live, n)
	// The picks are drawn up front: rng is not safe for concurrent use.
	type pick struct{ node, pod int }
	picks := make([][]pick, par)
	for i := range n {
		w := i % par
		mine := (live - w + par - 1) / par
		picks[w] = append(picks[w], pick{1 + w + par*cl.rng.IntN(mine), cl.rng.IntN(c.pods)})
	}
	adds := make([]benchutil.Durs, par)
	dels := make([]benchutil.Durs, par)
	gcs := make([][]bool, par)
	wall, err := benchutil.Parallel(ctx, par, par, func(w int) error {
		for _, p := range picks[w] {
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			nd := cl.sim[p.node]
			d, err := nd.del(octx, p.pod)
			if err == nil {
				dels[w] = append(dels[w], d)
				g := gcCycles()
				d, err = nd.add(octx, cl.conf, p.pod)
				adds[w] = append(adds[w], d)
				gcs[w] = append(gcs[w], gcCycles() != g)
			}
			cancel()
			if err != nil {
				return fmt.Errorf("probe: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for w := range par {
		res.probeAdd = append(res.probeAdd, adds[w]...)
		res.tail.addGC = append(res.tail.addGC, gcs[w]...)
		res.probeDel = append(res.probeDel, dels[w]...)
	}
	res.probeWall += wall
	res.probePar = max(res.probePar, par)
	return nil
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

func printProblems(w io.Writer, ps []store.Problem) {
	for i, p := range ps {
		if i == 5 {
			fmt.Fprintf(w, "    … %d more\n", len(ps)-i)
			break
		}
		fmt.Fprintf(w, "    %s\n", p)
	}
}

// Command cnibench measures v6cni (bridge-v6 + ipam-v6 + ipamd on an
// embedded etcd) against the reference plugins (bridge + host-local from
// containernetworking-plugins) side by side in one run, plus the floor no
// plugin can go below, and prints the table with the targets of issue 4.
//
// It runs as root inside a private network namespace (see
// bench/internal/benchutil): nothing it does reaches the host's interfaces,
// routes or sysctls, and everything is removed at the end, on error and on
// Ctrl-C.
//
//	go run ./bench/cnibench -n 50
//	go run ./bench/cnibench -n 1000     # + ADD median of containers 901–1000 vs 1–100
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

var (
	flagN       = flag.Int("n", 50, "containers per scenario; ≥ 200 also compares the ADD median of the last 100 with the first 100 on one bridge (sequential IPv6 scenario only, the others keep -matrix-n)")
	flagMatrixN = flag.Int("matrix-n", 50, "containers of the other scenarios when -n ≥ 200")
	flagPar     = flag.Int("par", 8, "concurrency of the parallel scenarios")
	flagBin     = flag.String("bin-dir", "bin", "directory of bridge-v6, ipam-v6 and ipamd (make build)")
	flagRef     = flag.String("ref-dir", "/usr/lib/cni", "directory of the reference plugins (bridge, host-local)")
	flagLibcni  = flag.Bool("libcni", true, "also run the sequential IPv6 scenario through libcni")
	flagTrials  = flag.Int("ping-trials", 3, "brand-new bridges per stack for the first-ping measurement")
	flagTimeout = flag.Duration("timeout", 30*time.Minute, "bound on the whole run")
)

func main() {
	flag.Parse()
	if *flagN < 1 || *flagPar < 1 || *flagMatrixN < 1 || *flagTrials < 1 {
		fmt.Fprintln(os.Stderr, "cnibench: -n, -matrix-n, -par and -ping-trials must be ≥ 1")
		os.Exit(2)
	}
	benchutil.Main("cnibench", run)
}

// scaleK is how many containers the first/last comparison takes.
const scaleK = 100

type scenario struct {
	title  string
	tag    string
	n, par int
	dual   bool
	libcni bool
	res    map[string]*batch
}

func run(ctx context.Context, r *benchutil.Run) error {
	ctx, cancel := context.WithTimeout(ctx, *flagTimeout)
	defer cancel()
	defer namespaces.removeAll()

	binDir, err := filepath.Abs(*flagBin)
	if err != nil {
		return err
	}
	for _, f := range []string{filepath.Join(binDir, "bridge-v6"), filepath.Join(binDir, "ipam-v6"), filepath.Join(binDir, "ipamd"),
		filepath.Join(*flagRef, "bridge"), filepath.Join(*flagRef, "host-local")} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%v (make build; apt-get install containernetworking-plugins)", err)
		}
	}
	fmt.Printf("cnibench: run %s, %d CPUs, private netns %s, temp dir %s\n", r.ID, runtime.NumCPU(), r.HostNetns(), r.Dir)

	tStart := time.Now()
	ipamd, err := benchutil.StartIpamd(ctx, r, filepath.Join(binDir, "ipamd"))
	if err != nil {
		return err
	}
	defer ipamd.Stop()
	fmt.Printf("ipamd pid %d serving on %s after %v (embedded etcd, fresh data dir)\n",
		ipamd.Pid(), ipamd.Socket, time.Since(tStart).Round(time.Millisecond))

	ours := v6cniSet(binDir, *flagRef, ipamd.Socket)
	ref := referenceSet(*flagRef, filepath.Join(r.Dir, "host-local"))
	sets := []*pluginSet{ref, ours}

	k := 0
	nextNet := func(set *pluginSet, dual bool) (map[string]any, string) {
		k++
		v6 := netip.MustParsePrefix(fmt.Sprintf("2001:db8:%s:%x::/64", r.ID, k))
		var v4 netip.Prefix
		if dual {
			v4 = netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/20", k%256))
		}
		br := r.Name(fmt.Sprintf("%c%d", set.name[0], k))
		return set.conf(fmt.Sprintf("bench-%s-%d", set.name, k), br, v6, v4), br
	}

	// Warm-up: page cache, first pool in ipamd; not counted.
	for _, s := range sets {
		conf, _ := nextNet(s, false)
		if _, err := runBatch(ctx, r, newExecDriver(s, conf), "w"+s.name[:1], 2, 1); err != nil {
			return fmt.Errorf("warm-up %s: %w", s.name, err)
		}
	}

	// First ping to the gateway on a brand-new bridge.
	pings := map[string][]*pingResult{}
	for t := 0; t < *flagTrials; t++ {
		for _, s := range sets {
			conf, _ := nextNet(s, false)
			pr, err := pingTrial(ctx, r, newExecDriver(s, conf), fmt.Sprintf("p%s%d", s.name[:1], t), 5*time.Second)
			if err != nil {
				return err
			}
			pings[s.name] = append(pings[s.name], pr)
		}
	}

	m := *flagN
	if *flagN >= 2*scaleK {
		m = *flagMatrixN
	}
	scens := []*scenario{
		{title: "IPv6 /64, sequential", tag: "s6", n: *flagN, par: 1},
		{title: fmt.Sprintf("IPv6 /64, %d at a time", *flagPar), tag: "q6", n: m, par: *flagPar},
		{title: "dual-stack, sequential", tag: "sd", n: m, par: 1, dual: true},
		{title: fmt.Sprintf("dual-stack, %d at a time", *flagPar), tag: "qd", n: m, par: *flagPar, dual: true},
	}
	if *flagLibcni {
		scens = append(scens, &scenario{title: "IPv6 /64, libcni, sequential", tag: "l6", n: m, par: 1, libcni: true})
	}
	for si, sc := range scens {
		if w := benchutil.Settle(ctx, 30*time.Second); w > time.Second {
			fmt.Printf("  (waited %v for the kernel to finish removing the last scenario's namespaces)\n", w.Round(100*time.Millisecond))
		}
		sc.res = map[string]*batch{}
		var ds []driver
		var tags []string
		for _, s := range sets {
			conf, _ := nextNet(s, sc.dual)
			var d driver = newExecDriver(s, conf)
			if sc.libcni {
				if d, err = newLibcniDriver(s, conf, filepath.Join(r.Dir, "cni-cache")); err != nil {
					return err
				}
			}
			ds = append(ds, d)
			tags = append(tags, sc.tag+s.name[:1])
		}
		if sc.par == 1 {
			// Interleaved, container by container: same load for both.
			t := time.Now()
			bs, err := runPairSeq(ctx, r, ds, tags, sc.n)
			if err != nil {
				return fmt.Errorf("%s: %w", sc.title, err)
			}
			for j, s := range sets {
				sc.res[s.name] = bs[j]
			}
			fmt.Printf("  %-30s both, interleaved, done in %v\n", sc.title, time.Since(t).Round(time.Millisecond))
			continue
		}
		for jj := range sets {
			// Alternate which stack goes first from one scenario to the next.
			j := jj
			if si%2 == 1 {
				j = len(sets) - 1 - jj
			}
			s, d := sets[j], ds[j]
			t := time.Now()
			b, err := runBatch(ctx, r, d, tags[j], sc.n, sc.par)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", sc.title, s.name, err)
			}
			sc.res[s.name] = b
			fmt.Printf("  %-30s %-9s done in %v\n", sc.title, s.name, time.Since(t).Round(time.Millisecond))
		}
	}

	// The floor.
	benchutil.Settle(ctx, 30*time.Second)
	fl, err := measureFloor(ctx, r, ipamd, m)
	if err != nil {
		return err
	}
	// Where ADD's time goes, piece by piece.
	bd, err := measureBreakdown(ctx, r, ours, ref, ipamd, nextNet, min(m, 30))
	if err != nil {
		return err
	}

	report(scens, pings, fl, bd, ours, ref)
	fmt.Printf("\ntotal %v; cleaning up\n", time.Since(tStart).Round(time.Second))
	return nil
}

type floor struct {
	exec         benchutil.Durs
	nlSeq, nlPar *batch
	nlScale      *batch // -n ≥ 200: n bare attachments on one bridge
	etcd         benchutil.Durs
	minimalSize  int64
}

// add is the floor of one ADD: one exec, the bare netlink work, one etcd txn.
func (f *floor) add() time.Duration {
	return f.exec.Median() + f.nlSeq.add.Median() + f.etcd.Median()
}

func measureFloor(ctx context.Context, r *benchutil.Run, ipamd *benchutil.Ipamd, n int) (*floor, error) {
	f := &floor{}
	bin, err := buildMinimal(ctx, r.Dir)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(bin); err == nil {
		f.minimalSize = st.Size()
	}
	c := newContainer("floor", "/nonexistent")
	if f.exec, err = execTimes(ctx, bin, c.env("ADD", ""), []byte(`{"cniVersion":"1.0.0"}`), n); err != nil {
		return nil, err
	}
	b, err := newBareNetlink(r.Name("f1"), fmt.Sprintf("2001:db8:%s:f1::1/64", r.ID))
	if err != nil {
		return nil, err
	}
	if f.nlSeq, err = floorNetlink(ctx, r, b, "fs", n, 1); err != nil {
		return nil, err
	}
	b, err = newBareNetlink(r.Name("f2"), fmt.Sprintf("2001:db8:%s:f2::1/64", r.ID))
	if err != nil {
		return nil, err
	}
	if f.nlPar, err = floorNetlink(ctx, r, b, "fq", n, *flagPar); err != nil {
		return nil, err
	}
	if *flagN >= 2*scaleK {
		// How much of an ADD's growth with the node's size is the kernel's
		// own: the same bare attachment, n times on one bridge.
		b, err = newBareNetlink(r.Name("f3"), fmt.Sprintf("2001:db8:%s:f3::1/64", r.ID))
		if err != nil {
			return nil, err
		}
		t := time.Now()
		if f.nlScale, err = floorNetlink(ctx, r, b, "fS", *flagN, 1); err != nil {
			return nil, err
		}
		fmt.Printf("  %-30s done in %v\n", fmt.Sprintf("floor, %d on one bridge", *flagN), time.Since(t).Round(time.Millisecond))
	}
	if f.etcd, err = etcdTxns(ctx, ipamd.EtcdEndpoint(), "/v6cni-bench/floor-"+r.ID, n); err != nil {
		return nil, fmt.Errorf("etcd floor: %w", err)
	}
	return f, nil
}

type breakdown struct {
	version    map[string]benchutil.Durs // binary → VERSION exec
	sizes      map[string]int64
	sockAdd    benchutil.Durs // ipamd ADD through the socket, in process
	sockDel    benchutil.Durs
	ipamExec   map[string]benchutil.Durs // IPAM plugin ADD, exec'd alone
	ipamDel    map[string]benchutil.Durs
	binaries   []string
	ipamOrders []string
}

func measureBreakdown(ctx context.Context, r *benchutil.Run, ours, ref *pluginSet, ipamd *benchutil.Ipamd,
	nextNet func(*pluginSet, bool) (map[string]any, string), n int) (*breakdown, error) {
	bd := &breakdown{version: map[string]benchutil.Durs{}, sizes: map[string]int64{},
		ipamExec: map[string]benchutil.Durs{}, ipamDel: map[string]benchutil.Durs{}}
	c := newContainer("version", "")
	for _, bin := range []string{ours.mainBin, ours.ipamBin, ref.mainBin, ref.ipamBin} {
		ds, err := execTimes(ctx, bin, c.env("VERSION", ""), []byte(`{"cniVersion":"1.0.0"}`), n)
		if err != nil {
			return nil, err
		}
		bd.version[bin] = ds
		bd.binaries = append(bd.binaries, bin)
		if st, err := os.Stat(bin); err == nil {
			bd.sizes[bin] = st.Size()
		}
	}
	// ipamd through its socket, in process: socket round trip + ipamd + etcd.
	conf, _ := nextNet(ours, false)
	raw := newExecDriver(ours, conf).raw
	cli := ipamapi.NewClient(ipamd.Socket)
	var cs []*container
	for i := 0; i < n; i++ {
		c := newContainer(fmt.Sprintf("sock-%d", i), "/run/netns/none")
		cs = append(cs, c)
		req := &ipamapi.Request{Network: conf["name"].(string), ContainerID: c.id, IfName: "eth0", Netns: c.netns,
			Args: "IgnoreUnknown=1;K8S_POD_NAME=" + c.pod, Config: raw}
		t := time.Now()
		if _, err := cli.Add(ctx, req); err != nil {
			return nil, fmt.Errorf("ipamd ADD via socket: %w", err)
		}
		bd.sockAdd = append(bd.sockAdd, time.Since(t))
	}
	for _, c := range cs {
		req := &ipamapi.Request{Network: conf["name"].(string), ContainerID: c.id, IfName: "eth0", Netns: c.netns, Config: raw}
		t := time.Now()
		if err := cli.Del(ctx, req); err != nil {
			return nil, fmt.Errorf("ipamd DEL via socket: %w", err)
		}
		bd.sockDel = append(bd.sockDel, time.Since(t))
	}
	// Each IPAM plugin exec'd alone, as its main plugin execs it.
	for _, s := range []*pluginSet{ours, ref} {
		conf, _ := nextNet(s, false)
		d := newExecDriver(s, conf)
		var cs []*container
		for i := 0; i < n; i++ {
			c := newContainer(fmt.Sprintf("ipam-%d", i), "/run/netns/none")
			cs = append(cs, c)
			_, t, err := execPlugin(ctx, s.ipamBin, c.env("ADD", s.cniPath), d.raw)
			if err != nil {
				return nil, err
			}
			bd.ipamExec[s.name] = append(bd.ipamExec[s.name], t)
		}
		for _, c := range cs {
			_, t, err := execPlugin(ctx, s.ipamBin, c.env("DEL", s.cniPath), d.raw)
			if err != nil {
				return nil, err
			}
			bd.ipamDel[s.name] = append(bd.ipamDel[s.name], t)
		}
		bd.ipamOrders = append(bd.ipamOrders, s.name)
	}
	return bd, nil
}

func report(scens []*scenario, pings map[string][]*pingResult, fl *floor, bd *breakdown, ours, ref *pluginSet) {
	o, rf := ours.name, ref.name
	fmt.Printf("\n== ADD/DEL per container (ms) and throughput: %s (bridge-v6 + ipam-v6 + ipamd/etcd) vs %s (bridge + host-local v1.1.1) ==\n", o, rf)
	var t benchutil.Table
	t.Row("scenario", "stack", "N", "ADD p50", "ADD p95", "DEL p50", "DEL p95", "ADD/s", "DEL/s")
	for _, sc := range scens {
		for _, name := range []string{rf, o} {
			b := sc.res[name]
			t.Row(sc.title, name, fmt.Sprint(len(b.add)), benchutil.Ms(b.add.Median()), benchutil.Ms(b.add.Pct(95)),
				benchutil.Ms(b.del.Median()), benchutil.Ms(b.del.Pct(95)), fmt.Sprintf("%.0f", b.addRate()), fmt.Sprintf("%.0f", b.delRate()))
		}
		a, b := sc.res[o], sc.res[rf]
		t.Row("", "ours/ref", "", ratioD(a.add.Median(), b.add.Median()), ratioD(a.add.Pct(95), b.add.Pct(95)),
			ratioD(a.del.Median(), b.del.Median()), ratioD(a.del.Pct(95), b.del.Pct(95)),
			benchutil.Ratio(a.addRate(), b.addRate()), benchutil.Ratio(a.delRate(), b.delRate()))
	}
	t.Print(os.Stdout)

	seq := scens[0]
	var scaleRatio = map[string]float64{}
	if n := len(seq.res[o].add); n >= 2*scaleK {
		fmt.Printf("\n== scale: %d sequential ADDs on one bridge (ms) ==\n", n)
		var t benchutil.Table
		var note string
		t.Row("stack", fmt.Sprintf("ADD p50 of 1–%d", scaleK), fmt.Sprintf("ADD p50 of %d–%d", n-scaleK+1, n), "last/first", "ADD p50 all", "ADD p95 all", "ADD/s", "DEL p50")
		for _, name := range []string{rf, o} {
			b := seq.res[name]
			first, last := b.add[:scaleK].Median(), b.add[n-scaleK:].Median()
			scaleRatio[name] = float64(last) / float64(first)
			t.Row(name, benchutil.Ms(first), benchutil.Ms(last), ratioD(last, first), benchutil.Ms(b.add.Median()),
				benchutil.Ms(b.add.Pct(95)), fmt.Sprintf("%.0f", b.addRate()), benchutil.Ms(b.del.Median()))
		}
		if b := fl.nlScale; b != nil && len(b.add) >= 2*scaleK {
			m := len(b.add)
			first, last := b.add[:scaleK].Median(), b.add[m-scaleK:].Median()
			t.Row("floor (bare netlink)", benchutil.Ms(first), benchutil.Ms(last), ratioD(last, first), benchutil.Ms(b.add.Median()),
				benchutil.Ms(b.add.Pct(95)), fmt.Sprintf("%.0f", b.addRate()), benchutil.Ms(b.del.Median()))
			note = fmt.Sprintf("(the stacks ran interleaved, %d network namespaces in all; the floor alone after them, with %d)\n", 2*n, m)
		}
		t.Print(os.Stdout)
		fmt.Print(note)
	}

	fmt.Printf("\n== first successful ping6 to the gateway after ADD, brand-new bridge each (ms; 1 probe/ms from ADD return) ==\n")
	var tp benchutil.Table
	tp.Row("stack", "trials", "median", "max", "probe # answered", "ADD of that container")
	pingMax := map[string]time.Duration{}
	for _, name := range []string{rf, o} {
		var ds, adds benchutil.Durs
		var seqs []int
		for _, p := range pings[name] {
			ds = append(ds, p.first)
			adds = append(adds, p.add)
			seqs = append(seqs, p.seq)
		}
		pingMax[name] = ds.Pct(100)
		tp.Row(name, fmt.Sprint(len(ds)), benchutil.Ms(ds.Median()), benchutil.Ms(ds.Pct(100)), fmt.Sprint(seqs), benchutil.Ms(adds.Median()))
	}
	tp.Print(os.Stdout)

	fmt.Printf("\n== the floor (ms, N=%d) ==\n", len(fl.exec))
	var tf benchutil.Table
	tf.Row("what", "p50", "p95", "note")
	tf.Row("exec of a minimal static Go binary", benchutil.Ms(fl.exec.Median()), benchutil.Ms(fl.exec.Pct(95)), fmt.Sprintf("fmt only, stripped, %.1f MB", float64(fl.minimalSize)/1e6))
	tf.Row("bare netlink attachment, sequential", benchutil.Ms(fl.nlSeq.add.Median()), benchutil.Ms(fl.nlSeq.add.Pct(95)), "veth peer created in the netns, bridge port, NODAD address, lo+eth0 up, default route")
	tf.Row(fmt.Sprintf("bare netlink attachment, %d at a time", *flagPar), benchutil.Ms(fl.nlPar.add.Median()), benchutil.Ms(fl.nlPar.add.Pct(95)), fmt.Sprintf("%.0f/s", fl.nlPar.addRate()))
	tf.Row("bare veth delete, sequential", benchutil.Ms(fl.nlSeq.del.Median()), benchutil.Ms(fl.nlSeq.del.Pct(95)), "")
	tf.Row(fmt.Sprintf("bare veth delete, %d at a time", *flagPar), benchutil.Ms(fl.nlPar.del.Median()), benchutil.Ms(fl.nlPar.del.Pct(95)), "")
	tf.Row("etcd create-if-absent txn (embedded etcd)", benchutil.Ms(fl.etcd.Median()), benchutil.Ms(fl.etcd.Pct(95)), "same etcd as ipamd, unix socket")
	tf.Row("floor of one ADD = exec + netlink + txn", benchutil.Ms(fl.add()), "", "")
	tf.Print(os.Stdout)

	fmt.Printf("\n== where ADD's time goes (ms, p50, N=%d each) ==\n", len(bd.sockAdd))
	var tb benchutil.Table
	tb.Row("piece", "p50", "p95", "note")
	for _, bin := range bd.binaries {
		ds := bd.version[bin]
		tb.Row("exec "+filepath.Base(bin)+" VERSION", benchutil.Ms(ds.Median()), benchutil.Ms(ds.Pct(95)), fmt.Sprintf("%.1f MB binary", float64(bd.sizes[bin])/1e6))
	}
	tb.Row("ipamd ADD via socket (in process)", benchutil.Ms(bd.sockAdd.Median()), benchutil.Ms(bd.sockAdd.Pct(95)), "HTTP over unix socket + ipamd + etcd")
	tb.Row("ipamd DEL via socket (in process)", benchutil.Ms(bd.sockDel.Median()), benchutil.Ms(bd.sockDel.Pct(95)), "")
	for _, name := range bd.ipamOrders {
		tb.Row("exec IPAM ADD alone: "+name, benchutil.Ms(bd.ipamExec[name].Median()), benchutil.Ms(bd.ipamExec[name].Pct(95)), "")
		tb.Row("exec IPAM DEL alone: "+name, benchutil.Ms(bd.ipamDel[name].Median()), benchutil.Ms(bd.ipamDel[name].Pct(95)), "")
	}
	for _, name := range []string{rf, o} {
		b := seq.res[name]
		tb.Row("main plugin ADD, IPv6 sequential: "+name, benchutil.Ms(b.add.Median()), benchutil.Ms(b.add.Pct(95)), "")
	}
	oAdd := seq.res[o].add.Median()
	// bridge-v6 asks ipamd itself (no ipam-v6 exec), beside its netlink
	// work: its ADD is one exec plus the longer of the two, plus the rest.
	tb.Row("  v6cni ADD − exec bridge-v6", benchutil.Ms(oAdd-bd.version[ours.mainBin].Median()), "",
		"in bridge-v6: config, netlink, sysctls, ipamd round trip (beside the netlink work), oper-up wait, NA")
	tb.Row("  … of which bare netlink work", benchutil.Ms(fl.nlSeq.add.Median()), "", "the floor's, for scale")
	tb.Row("  … of which ipamd round trip", benchutil.Ms(bd.sockAdd.Median()), "", "overlapped with the netlink work")
	tb.Row("  socket ADD − etcd txn", benchutil.Ms(bd.sockAdd.Median()-fl.etcd.Median()), "", "HTTP, ipamd logic (ipamd calls etcd in process; the txn here goes over its socket)")
	tb.Print(os.Stdout)

	fmt.Printf("\n== targets (issue 4) ==\n")
	var tt benchutil.Table
	tt.Row("target", "scenario", "v6cni", "vs", "ratio", "goal", "verdict")
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	for _, sc := range scens {
		a, b := sc.res[o], sc.res[rf]
		r := ratio(a.add.Median(), b.add.Median())
		tt.Row("ADD median ≤ 0.8× reference", sc.title, benchutil.Ms(a.add.Median()), benchutil.Ms(b.add.Median()), fmt.Sprintf("%.2f×", r), "≤ 0.80×", benchutil.Verdict(true, r <= 0.8))
	}
	for _, sc := range scens {
		a, b := sc.res[o], sc.res[rf]
		r := ratio(a.add.Pct(95), b.add.Pct(95))
		tt.Row("ADD p95 ≤ 0.25× reference", sc.title, benchutil.Ms(a.add.Pct(95)), benchutil.Ms(b.add.Pct(95)), fmt.Sprintf("%.2f×", r), "≤ 0.25×", benchutil.Verdict(true, r <= 0.25))
	}
	for _, sc := range scens {
		a, b := sc.res[o], sc.res[rf]
		r := ratio(a.del.Median(), b.del.Median())
		tt.Row("DEL median ≤ 1.0× reference", sc.title, benchutil.Ms(a.del.Median()), benchutil.Ms(b.del.Median()), fmt.Sprintf("%.2f×", r), "≤ 1.00×", benchutil.Verdict(true, r <= 1.0))
	}
	for _, sc := range scens {
		if sc.par == 1 {
			continue
		}
		a, b := sc.res[o], sc.res[rf]
		r := a.addRate() / b.addRate()
		tt.Row(fmt.Sprintf("%d-way throughput ≥ 2× reference", sc.par), sc.title, fmt.Sprintf("%.0f/s", a.addRate()), fmt.Sprintf("%.0f/s", b.addRate()), fmt.Sprintf("%.2f×", r), "≥ 2.00×", benchutil.Verdict(true, r >= 2))
	}
	pm := pingMax[o]
	tt.Row("first gateway ping ≤ 10 ms (worst trial)", "new bridge, IPv6", benchutil.Ms(pm), benchutil.Ms(pingMax[rf]), ratioD(pm, pingMax[rf]), "≤ 10 ms", benchutil.Verdict(true, pm <= 10*time.Millisecond))
	if sr, ok := scaleRatio[o]; ok {
		tt.Row(fmt.Sprintf("ADD p50 last %d ≤ 1.1× first %d", scaleK, scaleK), seq.title, fmt.Sprintf("%.2f×", sr), fmt.Sprintf("%.2f×", scaleRatio[rf]), "", "≤ 1.10×", benchutil.Verdict(true, sr <= 1.1))
	} else {
		tt.Row(fmt.Sprintf("ADD p50 last %d ≤ 1.1× first %d", scaleK, scaleK), "needs -n 1000", "", "", "", "≤ 1.10×", "n/a")
	}
	r := ratio(oAdd, fl.add())
	tt.Row("ADD median ≤ 2× floor", seq.title, benchutil.Ms(oAdd), benchutil.Ms(fl.add())+" floor", fmt.Sprintf("%.2f×", r), "≤ 2.00×", benchutil.Verdict(true, r <= 2))
	tt.Print(os.Stdout)

	// Keep the reference's own floor ratio in view too.
	rr := ratio(seq.res[rf].add.Median(), fl.add())
	fmt.Printf("\n(reference ADD median / floor: %.2f×; DEL ours/bare veth delete: %s)\n", rr,
		ratioD(seq.res[o].del.Median(), fl.nlSeq.del.Median()))
}

func ratioD(a, b time.Duration) string { return benchutil.Ratio(float64(a), float64(b)) }

// Command ipambench measures ipamd's allocation rate and latency through its
// unix socket, with the embedded etcd, at 1k, 10k and 100k existing leases,
// sequentially and 32 at a time; ipamd's resident memory; and, in the same
// run against the same etcd, the raw create-if-absent txn rate as the floor.
// It prints the ratios and the targets of issue 3.
//
//	go run ./bench/ipambench               # up to 100k leases
//	go run ./bench/ipambench -max 10000    # a shorter run
//
// Like cnibench it runs in a private network namespace with everything in a
// temporary directory, removed at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

var (
	flagMax     = flag.Int("max", 100000, "largest lease count measured (levels: 1000, 10000, 100000, up to -max)")
	flagLevels  = flag.String("levels", "1000,10000,100000", "lease counts to measure at")
	flagSeq     = flag.Int("seq", 500, "sequential allocations measured per level")
	flagConc    = flag.Int("conc", 32, "concurrent clients")
	flagConcOps = flag.Int("conc-ops", 3000, "concurrent allocations measured per level")
	flagFillPar = flag.Int("fill-par", 64, "concurrent ADDs that pre-fill the leases")
	flagBin     = flag.String("bin-dir", "bin", "directory of ipamd (make build)")
	flagTimeout = flag.Duration("timeout", 60*time.Minute, "bound on the whole run")
)

func main() {
	flag.Parse()
	benchutil.Main("ipambench", run)
}

type sample struct {
	lat  benchutil.Durs
	wall time.Duration
}

func (s *sample) rate() float64 { return float64(len(s.lat)) / s.wall.Seconds() }

type level struct {
	leases              int
	fillRate            float64
	seq, conc           *sample
	floorSeq, floorConc *sample
	rssKiB              int
}

func run(ctx context.Context, r *benchutil.Run) error {
	ctx, cancel := context.WithTimeout(ctx, *flagTimeout)
	defer cancel()
	var levels []int
	for _, f := range strings.Split(*flagLevels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return fmt.Errorf("-levels: bad %q", f)
		}
		if n <= *flagMax {
			levels = append(levels, n)
		}
	}
	if len(levels) == 0 {
		return fmt.Errorf("no level ≤ -max %d", *flagMax)
	}
	binDir, err := filepath.Abs(*flagBin)
	if err != nil {
		return err
	}
	fmt.Printf("ipambench: run %s, %d CPUs, temp dir %s, levels %v\n", r.ID, runtime.NumCPU(), r.Dir, levels)
	t0 := time.Now()
	ipamd, err := benchutil.StartIpamd(ctx, r, filepath.Join(binDir, "ipamd"))
	if err != nil {
		return err
	}
	defer ipamd.Stop()
	fmt.Printf("ipamd pid %d serving after %v (embedded etcd, fresh data dir)\n", ipamd.Pid(), time.Since(t0).Round(time.Millisecond))

	network := "ipbench"
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": network, "type": "bridge-v6",
		"ipam": map[string]any{"type": "ipam-v6", "socket": ipamd.Socket,
			"ranges": []any{[]any{map[string]any{"subnet": fmt.Sprintf("2001:db8:%s::/48", r.ID), "blockSize": 64}}}},
	})
	cli := ipamapi.NewClient(ipamd.Socket)
	var seqNo atomic.Int64
	add := func(ctx context.Context) (time.Duration, error) {
		i := seqNo.Add(1)
		b := make([]byte, 32)
		rand.Read(b)
		req := &ipamapi.Request{Network: network, ContainerID: hex.EncodeToString(b), IfName: "eth0",
			Netns: fmt.Sprintf("/run/netns/ipbench-%d", i), Args: fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAME=p%d", i), Config: conf}
		t := time.Now()
		_, err := cli.Add(ctx, req)
		return time.Since(t), err
	}

	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{ipamd.EtcdEndpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer etcd.Close()
	var floorNo atomic.Int64
	floorPrefix := "/v6cni-bench/floor/"
	txn := func(ctx context.Context) (time.Duration, error) {
		key := fmt.Sprintf("%s%d", floorPrefix, floorNo.Add(1))
		t := time.Now()
		resp, err := etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, `{"network":"ipbench","containerID":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","ifName":"eth0"}`)).Commit()
		d := time.Since(t)
		if err == nil && !resp.Succeeded {
			err = fmt.Errorf("floor key %s exists", key)
		}
		return d, err
	}

	var results []*level
	leases := 0
	for _, target := range levels {
		lv := &level{leases: target}
		if fill := target - leases; fill > 0 {
			s, err := measure(ctx, fill, *flagFillPar, add)
			if err != nil {
				return fmt.Errorf("pre-fill to %d: %w", target, err)
			}
			leases += fill
			lv.fillRate = s.rate()
			fmt.Printf("  pre-filled to %d leases at %.0f ADD/s (%d concurrent)\n", leases, s.rate(), *flagFillPar)
		}
		lv.leases = leases
		// Floor first, then ours, at the same store size.
		if lv.floorSeq, err = measure(ctx, *flagSeq, 1, txn); err != nil {
			return fmt.Errorf("etcd floor: %w", err)
		}
		if lv.floorConc, err = measure(ctx, *flagConcOps, *flagConc, txn); err != nil {
			return fmt.Errorf("etcd floor: %w", err)
		}
		if _, err := etcd.Delete(ctx, floorPrefix, clientv3.WithPrefix()); err != nil {
			return err
		}
		if lv.seq, err = measure(ctx, *flagSeq, 1, add); err != nil {
			return fmt.Errorf("sequential at %d: %w", leases, err)
		}
		if lv.conc, err = measure(ctx, *flagConcOps, *flagConc, add); err != nil {
			return fmt.Errorf("concurrent at %d: %w", leases, err)
		}
		leases += *flagSeq + *flagConcOps
		runtime.GC()
		if lv.rssKiB, err = benchutil.RSSKiB(ipamd.Pid()); err != nil {
			return err
		}
		fmt.Printf("  measured at %d leases: %.0f/s sequential, %.0f/s %d-way; ipamd RSS %.1f MB (%s)\n",
			lv.leases, lv.seq.rate(), lv.conc.rate(), *flagConc, float64(lv.rssKiB)/1024, benchutil.MemDetail(ipamd.Pid()))
		results = append(results, lv)
	}
	report(results, leases)
	fmt.Printf("\ntotal %v; cleaning up\n", time.Since(t0).Round(time.Second))
	return nil
}

// measure runs n calls of f, par at a time, each bounded by the plugins'
// timeout.
func measure(ctx context.Context, n, par int, f func(context.Context) (time.Duration, error)) (*sample, error) {
	s := &sample{lat: make(benchutil.Durs, n)}
	var err error
	s.wall, err = benchutil.Parallel(ctx, n, par, func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, ipamapi.DefaultTimeout)
		defer cancel()
		d, err := f(cctx)
		s.lat[i] = d
		return err
	})
	return s, err
}

func report(levels []*level, total int) {
	fmt.Printf("\n== ipamd ADD through its socket (embedded etcd) vs the floor: raw etcd create-if-absent txn, same etcd ==\n")
	var t benchutil.Table
	t.Row("leases", "mode", "ipamd ADD/s", "p50 ms", "p99 ms", "etcd txn/s", "p50 ms", "p99 ms", "ours/floor (rate)", "ipamd RSS")
	for _, lv := range levels {
		for _, m := range []struct {
			name      string
			our, floo *sample
		}{{"sequential", lv.seq, lv.floorSeq}, {fmt.Sprintf("%d concurrent", *flagConc), lv.conc, lv.floorConc}} {
			t.Row(fmt.Sprint(lv.leases), m.name,
				fmt.Sprintf("%.0f", m.our.rate()), benchutil.Ms(m.our.lat.Median()), benchutil.Ms(m.our.lat.Pct(99)),
				fmt.Sprintf("%.0f", m.floo.rate()), benchutil.Ms(m.floo.lat.Median()), benchutil.Ms(m.floo.lat.Pct(99)),
				benchutil.Ratio(m.our.rate(), m.floo.rate()), fmt.Sprintf("%.1f MB", float64(lv.rssKiB)/1024))
		}
	}
	t.Print(os.Stdout)
	fmt.Printf("(pre-fill: concurrent ADDs through the socket, %d at a time; %d leases at the end)\n", *flagFillPar, total)

	fmt.Printf("\n== targets (issue 3) ==\n")
	var tt benchutil.Table
	tt.Row("target", "where", "value", "goal", "verdict")
	for _, lv := range levels {
		r := lv.seq.rate() / lv.floorSeq.rate()
		tt.Row("rate ≥ 50% of the etcd floor", fmt.Sprintf("%d leases, sequential", lv.leases), fmt.Sprintf("%.0f%%", 100*r), "≥ 50%", benchutil.Verdict(true, r >= 0.5))
		r = lv.conc.rate() / lv.floorConc.rate()
		tt.Row("rate ≥ 50% of the etcd floor", fmt.Sprintf("%d leases, %d concurrent", lv.leases, *flagConc), fmt.Sprintf("%.0f%%", 100*r), "≥ 50%", benchutil.Verdict(true, r >= 0.5))
	}
	lo, hi := levels[0], levels[len(levels)-1]
	full := hi.leases >= 100000
	where := fmt.Sprintf("%d vs %d leases", hi.leases, lo.leases)
	if !full {
		where += " (run without -max for 100k)"
	}
	if len(levels) > 1 {
		g := float64(hi.seq.lat.Median()) / float64(lo.seq.lat.Median())
		tt.Row("cost growth ≤ 1.2× (p50, sequential)", where, fmt.Sprintf("%.2f×", g), "≤ 1.20×", benchutil.Verdict(true, g <= 1.2))
		g = float64(hi.seq.lat.Pct(99)) / float64(lo.seq.lat.Pct(99))
		tt.Row("cost growth ≤ 1.2× (p99, sequential)", where, fmt.Sprintf("%.2f×", g), "≤ 1.20×", benchutil.Verdict(true, g <= 1.2))
		g = lo.conc.rate() / hi.conc.rate()
		tt.Row(fmt.Sprintf("cost growth ≤ 1.2× (1/rate, %d concurrent)", *flagConc), where, fmt.Sprintf("%.2f×", g), "≤ 1.20×", benchutil.Verdict(true, g <= 1.2))
		// The floor's own growth, to tell ipamd's from etcd's.
		g = float64(hi.floorSeq.lat.Median()) / float64(lo.floorSeq.lat.Median())
		tt.Row("(etcd floor's own growth, p50 seq)", where, fmt.Sprintf("%.2f×", g), "", "")
	}
	mb := float64(hi.rssKiB) / 1024
	rssWhere := fmt.Sprintf("at %d leases", hi.leases)
	if !full {
		rssWhere += " (not 100k)"
	}
	tt.Row("ipamd RSS < 150 MB at 100k leases", rssWhere, fmt.Sprintf("%.1f MB", mb), "< 150 MB", benchutil.Verdict(full, mb < 150))
	tt.Print(os.Stdout)
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
)

// Where the probes' tail comes from: etcd's own histograms (its /metrics,
// scraped before and after every probe chunk, the deltas summed per
// scale) and the bench process's Go runtime (runtime/metrics, read around
// every chunk and every probe ADD). Both etcds run with --metrics
// extensive, so grpc_server_handling_seconds gives the server's time per
// Txn: the ADD's latency minus it is the client's side (gRPC, the Go
// scheduler and GC of this process, the allocator's own work).

// promHist is a Prometheus histogram: cumulative bucket counts by upper
// bound (le), sum and count.
type promHist struct {
	les, cum   []float64
	sum, count float64
}

// promSnap is one scrape: histograms and plain values (counters, gauges)
// by name (with the kept label for the gRPC histogram).
type promSnap struct {
	hists map[string]*promHist
	vals  map[string]float64
}

// promHists are the histograms kept from etcd's /metrics; grpc ones keep
// the method in the name (grpc Txn, grpc Range).
var promHists = []string{"etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds", "grpc_server_handling_seconds"}

var promVals = []string{"process_cpu_seconds_total", "go_gc_duration_seconds_sum", "go_gc_duration_seconds_count", "go_memstats_heap_alloc_bytes", "etcd_server_slow_apply_total", "go_goroutines"}

func (e *etcdServer) scrape(ctx context.Context) (*promSnap, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.endpoint+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	return parseProm(resp.Body)
}

// parseProm reads the text exposition format, keeping promHists (the gRPC
// one for the unary KV methods only) and promVals.
func parseProm(r io.Reader) (*promSnap, error) {
	s := &promSnap{hists: map[string]*promHist{}, vals: map[string]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name, labels := line[:sp], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labels = name[:i], name[i:]
		}
		for _, p := range promVals {
			if name == p {
				s.vals[name] = v
			}
		}
		for _, h := range promHists {
			suffix, ok := strings.CutPrefix(name, h)
			if !ok || (suffix != "_bucket" && suffix != "_sum" && suffix != "_count") {
				continue
			}
			key := h
			if h == "grpc_server_handling_seconds" {
				m := label(labels, "grpc_method")
				if m != "Txn" && m != "Range" {
					continue
				}
				key = "grpc " + m
			}
			ph := s.hists[key]
			if ph == nil {
				ph = &promHist{}
				s.hists[key] = ph
			}
			switch suffix {
			case "_sum":
				ph.sum = v
			case "_count":
				ph.count = v
			default:
				le, err := strconv.ParseFloat(label(labels, "le"), 64)
				if err != nil {
					continue
				}
				ph.les = append(ph.les, le)
				ph.cum = append(ph.cum, v)
			}
		}
	}
	return s, sc.Err()
}

func label(labels, name string) string {
	_, rest, ok := strings.Cut(labels, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// add adds after-before to h (h empty: takes the buckets).
func (h *promHist) add(before, after *promHist) {
	if after == nil {
		return
	}
	if h.les == nil {
		h.les = append([]float64(nil), after.les...)
		h.cum = make([]float64, len(after.cum))
	}
	for i := range h.cum {
		if i < len(after.cum) {
			h.cum[i] += after.cum[i]
			if before != nil && i < len(before.cum) {
				h.cum[i] -= before.cum[i]
			}
		}
	}
	h.sum += after.sum
	h.count += after.count
	if before != nil {
		h.sum -= before.sum
		h.count -= before.count
	}
}

// pct is the upper bound of the bucket holding the p-th percentile (an
// upper estimate: the buckets are coarse).
func (h *promHist) pct(p float64) float64 {
	if h == nil || h.count == 0 {
		return math.NaN()
	}
	for i, c := range h.cum {
		if c >= p/100*h.count {
			return h.les[i]
		}
	}
	return math.Inf(1)
}

// over is the fraction of observations above le (a bucket bound).
func (h *promHist) over(le float64) float64 {
	if h == nil || h.count == 0 {
		return math.NaN()
	}
	for i, b := range h.les {
		if b == le {
			return 1 - h.cum[i]/h.count
		}
	}
	return math.NaN()
}

// goSnap is the bench process's runtime/metrics at one moment.
type goSnap struct {
	pauses, sched *metrics.Float64Histogram
	cycles        uint64
	gcCPU, allCPU float64
	heap          uint64
}

var goNames = []string{"/gc/pauses:seconds", "/sched/latencies:seconds", "/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds", "/gc/heap/live:bytes"}

func readGo() goSnap {
	s := make([]metrics.Sample, len(goNames))
	for i, n := range goNames {
		s[i].Name = n
	}
	metrics.Read(s)
	var g goSnap
	if s[0].Value.Kind() == metrics.KindFloat64Histogram {
		g.pauses = s[0].Value.Float64Histogram()
	}
	if s[1].Value.Kind() == metrics.KindFloat64Histogram {
		g.sched = s[1].Value.Float64Histogram()
	}
	if s[2].Value.Kind() == metrics.KindUint64 {
		g.cycles = s[2].Value.Uint64()
	}
	if s[3].Value.Kind() == metrics.KindFloat64 {
		g.gcCPU = s[3].Value.Float64()
	}
	if s[4].Value.Kind() == metrics.KindUint64 {
		g.heap = s[4].Value.Uint64()
	}
	// The process's CPU from the kernel: runtime/metrics' CPU classes
	// are only brought up to date at a GC.
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		g.allCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	return g
}

// gcCycles is the number of GC cycles so far (cheap: read around each ADD).
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// goHist is a delta of a runtime/metrics histogram, summed over chunks.
type goHist struct {
	buckets []float64
	counts  []uint64
}

func (h *goHist) add(before, after *metrics.Float64Histogram) {
	if after == nil {
		return
	}
	if h.counts == nil {
		h.buckets = after.Buckets
		h.counts = make([]uint64, len(after.Counts))
	}
	for i := range h.counts {
		h.counts[i] += after.Counts[i]
		if before != nil {
			h.counts[i] -= before.Counts[i]
		}
	}
}

func (h *goHist) total() uint64 {
	var n uint64
	for _, c := range h.counts {
		n += c
	}
	return n
}

// pct is the upper bound of the bucket holding the p-th percentile.
func (h *goHist) pct(p float64) float64 {
	n := h.total()
	if n == 0 {
		return math.NaN()
	}
	var c uint64
	for i, k := range h.counts {
		c += k
		if float64(c) >= p/100*float64(n) {
			return h.buckets[i+1]
		}
	}
	return math.Inf(1)
}

// max is the upper bound of the highest non-empty bucket.
func (h *goHist) max() float64 { return h.pct(100) }

// sumApprox is the sum of the observations, each at its bucket's lower
// bound (a lower estimate).
func (h *goHist) sumApprox() float64 {
	var s float64
	for i, k := range h.counts {
		if k > 0 && !math.IsInf(h.buckets[i], -1) {
			s += float64(k) * h.buckets[i]
		}
	}
	return s
}

// over is the count of observations in buckets starting at or above d.
func (h *goHist) over(d float64) uint64 {
	var n uint64
	for i, k := range h.counts {
		if h.buckets[i] >= d {
			n += k
		}
	}
	return n
}

// tailStats is what one scale's probe chunks saw, summed.
type tailStats struct {
	etcd          map[string]*promHist
	etcdVals      map[string]float64 // deltas (gauges: the last value)
	pauses, sched goHist
	gcCycles      uint64
	gcCPU, allCPU float64
	heap          uint64
	// idleCPU is etcd's CPU between this scale's chunks (while the other
	// scales probe): its background (keepalives, GC, timers) over idle.
	idleCPU  float64
	idle     time.Duration
	last     *promSnap
	lastTime time.Time
	// addGC[i] says a GC cycle ended or started during probe ADD i (same
	// order as result.probeAdd).
	addGC []bool
}

var gauges = map[string]bool{"go_memstats_heap_alloc_bytes": true, "go_goroutines": true}

// chunk adds one probe chunk's deltas.
func (t *tailStats) chunk(eb, ea *promSnap, gb, ga goSnap, tb, ta time.Time) {
	if t.etcd == nil {
		t.etcd = map[string]*promHist{}
		t.etcdVals = map[string]float64{}
	}
	if t.last != nil && eb != nil {
		t.idleCPU += eb.vals["process_cpu_seconds_total"] - t.last.vals["process_cpu_seconds_total"]
		t.idle += tb.Sub(t.lastTime)
	}
	t.last, t.lastTime = ea, ta
	if eb != nil && ea != nil {
		for k, a := range ea.hists {
			h := t.etcd[k]
			if h == nil {
				h = &promHist{}
				t.etcd[k] = h
			}
			h.add(eb.hists[k], a)
		}
		for k, a := range ea.vals {
			if gauges[k] {
				t.etcdVals[k] = a
			} else {
				t.etcdVals[k] += a - eb.vals[k]
			}
		}
	}
	t.pauses.add(gb.pauses, ga.pauses)
	t.sched.add(gb.sched, ga.sched)
	t.gcCycles += ga.cycles - gb.cycles
	t.gcCPU += ga.gcCPU - gb.gcCPU
	t.allCPU += ga.allCPU - gb.allCPU
	t.heap = ga.heap
}

// reportTail prints where the probes' time went at every scale.
func reportTail(w io.Writer, rs []*result) {
	fmt.Fprintf(w, "\n== probe tail: etcd's side and this process's (probe phases only, summed over the chunks) ==\n")
	var t benchutil.Table
	head := []string{"metric"}
	for _, r := range rs {
		head = append(head, fmt.Sprintf("%d nodes", r.nodes))
	}
	t.Row(head...)
	row := func(name string, f func(r *result) string) {
		cells := []string{name}
		for _, r := range rs {
			cells = append(cells, f(r))
		}
		t.Row(cells...)
	}
	ms := func(s float64) string {
		if math.IsNaN(s) {
			return "-"
		}
		if math.IsInf(s, 1) {
			return "inf"
		}
		return benchutil.Ms(time.Duration(s * float64(time.Second)))
	}
	pctf := func(f float64) string {
		if math.IsNaN(f) {
			return "-"
		}
		return fmt.Sprintf("%.2f%%", 100*f)
	}
	clientOver := func(d time.Duration) func(r *result) string {
		return func(r *result) string {
			n := 0
			for _, x := range r.probeAdd {
				if x > d {
					n++
				}
			}
			if len(r.probeAdd) == 0 {
				return "-"
			}
			return pctf(float64(n) / float64(len(r.probeAdd)))
		}
	}
	row("ADD p50 / p99 ms (client, as in the summary)", func(r *result) string {
		return benchutil.Ms(r.probeAdd.Median()) + " / " + benchutil.Ms(r.probeAdd.Pct(99))
	})
	row("ADDs over 10 / 25 / 50 ms (client)", func(r *result) string {
		return clientOver(10*time.Millisecond)(r) + " / " + clientOver(25*time.Millisecond)(r) + " / " + clientOver(50*time.Millisecond)(r)
	})
	for _, m := range []string{"Txn", "Range"} {
		k := "grpc " + m
		row(fmt.Sprintf("etcd %s: count, mean ms, p99 ≤ ms (server)", m), func(r *result) string {
			h := r.tail.etcd[k]
			if h == nil || h.count == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f, %s, %s", h.count, ms(h.sum/h.count), ms(h.pct(99)))
		})
		row(fmt.Sprintf("etcd %s over 10 / 25 / 50 ms (server)", m), func(r *result) string {
			h := r.tail.etcd[k]
			return pctf(h.over(0.01)) + " / " + pctf(h.over(0.025)) + " / " + pctf(h.over(0.05))
		})
	}
	for _, k := range []string{"etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"} {
		name := strings.TrimSuffix(strings.TrimPrefix(k, "etcd_disk_"), "_duration_seconds")
		row(fmt.Sprintf("etcd %s: count, mean ms, p99 ≤ ms, max ≤ ms", name), func(r *result) string {
			h := r.tail.etcd[k]
			if h == nil || h.count == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f, %s, %s, %s", h.count, ms(h.sum/h.count), ms(h.pct(99)), ms(h.pct(100)))
		})
	}
	row("etcd CPU s; its GC pauses: count, total ms", func(r *result) string {
		v := r.tail.etcdVals
		return fmt.Sprintf("%.1f; %.0f, %s", v["process_cpu_seconds_total"], v["go_gc_duration_seconds_count"], ms(v["go_gc_duration_seconds_sum"]))
	})
	row("etcd CPU s per 1,000 probes; background CPU % (between chunks)", func(r *result) string {
		bg := "-"
		if r.tail.idle > 0 {
			bg = fmt.Sprintf("%.0f%%", 100*r.tail.idleCPU/r.tail.idle.Seconds())
		}
		return fmt.Sprintf("%.2f; %s", 1000*r.tail.etcdVals["process_cpu_seconds_total"]/float64(max(1, len(r.probeAdd))), bg)
	})
	row("etcd heap MiB, goroutines (at the end)", func(r *result) string {
		v := r.tail.etcdVals
		return fmt.Sprintf("%.0f, %.0f", v["go_memstats_heap_alloc_bytes"]/(1<<20), v["go_goroutines"])
	})
	row("bench GC cycles; pauses: count, p99 ≤ ms, max ≤ ms", func(r *result) string {
		p := &r.tail.pauses
		return fmt.Sprintf("%d; %d, %s, %s", r.tail.gcCycles, p.total(), ms(p.pct(99)), ms(p.max()))
	})
	row("bench CPU s (GC part, as of the last GC), live heap MiB", func(r *result) string {
		return fmt.Sprintf("%.1f (%.1f), %.0f", r.tail.allCPU, r.tail.gcCPU, float64(r.tail.heap)/(1<<20))
	})
	row("bench goroutine run-queue wait: p99 ≤ ms, waits ≥ 5 ms", func(r *result) string {
		s := &r.tail.sched
		return fmt.Sprintf("%s, %d", ms(s.pct(99)), s.over(0.005))
	})
	row("probe ADDs with a GC cycle in them: all / slowest 1%", func(r *result) string {
		return gcShare(r)
	})
	t.Print(w)
	fmt.Fprintf(w, "(etcd figures: deltas of its /metrics over the probe chunks of that scale, --metrics extensive; \"≤\": the upper\n"+
		" bound of a Prometheus bucket; bench figures: runtime/metrics over the same chunks; the machine's other load shows in both)\n")
}

// gcShare is the share of probe ADDs during which a GC cycle of this
// process ran, over all and over the slowest 1 %.
func gcShare(r *result) string {
	n := len(r.probeAdd)
	if n == 0 || len(r.tail.addGC) != n {
		return "-"
	}
	idx := make([]int, n)
	all := 0
	for i := range idx {
		idx[i] = i
		if r.tail.addGC[i] {
			all++
		}
	}
	sort.Slice(idx, func(a, b int) bool { return r.probeAdd[idx[a]] > r.probeAdd[idx[b]] })
	k := max(1, n/100)
	slow := 0
	for _, i := range idx[:k] {
		if r.tail.addGC[i] {
			slow++
		}
	}
	return fmt.Sprintf("%.0f%% / %.0f%% (%d of %d)", 100*float64(all)/float64(n), 100*float64(slow)/float64(k), slow, k)
}

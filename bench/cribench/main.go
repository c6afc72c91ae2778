// Command cribench measures pod creation through containerd 2's CRI, as the
// kubelet drives it: the wall time of `crictl runp` and the CNI part of it
// (containerd's debug log, "begin cni setup" to "cni result"), v6cni
// (bridge-v6 + ipam-v6 at cniVersion 1.1.0, ipamd with an embedded etcd)
// against the reference bridge + host-local from Debian's
// containernetworking-plugins (cniVersion 1.0.0). Each stack has its own
// containerd (scripts/install-deps.sh builds it); the runs interleave pod by
// pod, alternating which stack goes first, so both see the same load.
//
// Both containerds run in a private network namespace (only that: runc
// needs the host's cgroup mounts, which bench/internal/benchutil's
// `ip netns exec` re-exec would hide), so bridges and veths never touch the
// host's; everything is removed at the end, also on error and on Ctrl-C.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
	"github.com/v6cni/v6cni/internal/testutil/critest"
)

var (
	flagN       = flag.Int("n", 30, "pods per stack and scenario")
	flagBin     = flag.String("bin-dir", "bin", "directory of bridge-v6, ipam-v6 and ipamd (make build)")
	flagRef     = flag.String("ref-dir", "/usr/lib/cni", "directory of the reference plugins (bridge, host-local)")
	flagTimeout = flag.Duration("timeout", 20*time.Minute, "bound on the whole run")
)

func main() {
	flag.Parse()
	os.Exit(mainCode())
}

func mainCode() int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cribench: needs root (containerd, network namespaces)")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		fmt.Fprintln(os.Stderr, "cribench:", err)
		return 1
	}
	r := &benchutil.Run{ID: hex.EncodeToString(b)}
	r.Prefix = "v6c" + r.ID
	// Short: containerd's socket lives under it.
	dir, err := os.MkdirTemp("", "v6crib-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cribench:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	r.Dir = dir
	netns, err := benchutil.NewNetns(r.Prefix + "-host")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cribench:", err)
		return 1
	}
	defer benchutil.DelNetns(netns)
	if err := run(ctx, r, netns); err != nil {
		fmt.Fprintln(os.Stderr, "cribench:", err)
		return 1
	}
	return 0
}

// stack is one CNI stack under its own containerd.
type stack struct {
	name string
	c    *critest.Containerd
	// runp and cni are the samples; ids maps a pod to its sample index.
	runp, cni benchutil.Durs
	ids       []string
}

func run(ctx context.Context, r *benchutil.Run, netns string) error {
	ctx, cancel := context.WithTimeout(ctx, *flagTimeout)
	defer cancel()
	if err := critest.CheckBinaries(); err != nil {
		return err
	}
	binDir, err := filepath.Abs(*flagBin)
	if err != nil {
		return err
	}
	ipamd, err := benchutil.StartIpamd(ctx, r, filepath.Join(binDir, "ipamd"))
	if err != nil {
		return err
	}
	defer ipamd.Stop()
	pause, err := critest.BuildPauseImage(r.Dir)
	if err != nil {
		return err
	}

	scenarios := []struct {
		name         string
		ours, theirs []map[string]any // ranges sets
		oursV, refV  string
	}{
		{"IPv6-only",
			[]map[string]any{{"subnet": "2001:db8:" + r.ID + ":1::/64", "blockSize": 64}},
			[]map[string]any{{"subnet": "2001:db8:" + r.ID + ":2::/64"}}, "1.1.0", "1.0.0"},
		{"dual-stack",
			[]map[string]any{{"subnet": "2001:db8:" + r.ID + ":3::/64", "blockSize": 64}, {"subnet": "10.201.0.0/24", "blockSize": 24}},
			[]map[string]any{{"subnet": "2001:db8:" + r.ID + ":4::/64"}, {"subnet": "10.202.0.0/24"}}, "1.1.0", "1.0.0"},
	}
	t := &benchutil.Table{}
	t.Row("scenario", "stack", "n", "runp p50", "runp p90", "CNI p50", "CNI p90", "CNI share p50")
	var ratios []string
	for k, sc := range scenarios {
		ours := conflist(sc.oursV, r.Name(fmt.Sprintf("o%d", k)), map[string]any{
			"type": "ipam-v6", "socket": ipamd.Socket, "ranges": sets(sc.ours)})
		ref := conflist(sc.refV, r.Name(fmt.Sprintf("r%d", k)), map[string]any{
			"type": "host-local", "dataDir": filepath.Join(r.Dir, fmt.Sprintf("host-local-%d", k)), "ranges": sets(sc.theirs)})
		stacks := []*stack{{name: "v6cni"}, {name: "reference"}}
		for i, cl := range [][]byte{ours, ref} {
			bins := []string{binDir, *flagRef}
			if i == 1 {
				bins = []string{*flagRef}
			}
			dir := filepath.Join(r.Dir, fmt.Sprintf("c%d%d", k, i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			c, err := critest.Launch(dir, critest.Options{CNIBinDirs: bins, ConfList: cl, PauseArchive: pause, Netns: netns})
			if err != nil {
				return fmt.Errorf("%s: %w", stacks[i].name, err)
			}
			defer c.Stop()
			stacks[i].c = c
		}
		// One pod each first, untimed: image unpack, first bridge, first block.
		for _, s := range stacks {
			if _, err := s.c.RunPod(ctx, critest.PodConfig{Name: "warm"}); err != nil {
				return fmt.Errorf("%s: warm-up: %w", s.name, err)
			}
		}
		benchutil.Settle(ctx, 5*time.Second)
		for i := range *flagN {
			order := stacks
			if i%2 == 1 {
				order = []*stack{stacks[1], stacks[0]}
			}
			for _, s := range order {
				start := time.Now()
				id, err := s.c.RunPod(ctx, critest.PodConfig{Name: fmt.Sprintf("p%d", i)})
				if err != nil {
					return fmt.Errorf("%s: pod %d: %w", s.name, i, err)
				}
				s.runp = append(s.runp, time.Since(start))
				s.ids = append(s.ids, id)
			}
		}
		for _, s := range stacks {
			times, err := critest.CNISetupTimes(s.c.LogPath)
			if err != nil {
				return err
			}
			for _, id := range s.ids {
				if d, ok := times[id]; ok {
					s.cni = append(s.cni, d)
				}
			}
			share := "-"
			if p := s.runp.Median(); p > 0 && s.cni.Median() > 0 {
				share = fmt.Sprintf("%.0f%%", 100*float64(s.cni.Median())/float64(p))
			}
			t.Row(sc.name, s.name, fmt.Sprint(len(s.runp)), benchutil.Ms(s.runp.Median()), benchutil.Ms(s.runp.Pct(90)),
				benchutil.Ms(s.cni.Median()), benchutil.Ms(s.cni.Pct(90)), share)
		}
		o, f := stacks[0], stacks[1]
		ratios = append(ratios, fmt.Sprintf("%s: runp p50 %s, p90 %s; CNI p50 %s, p90 %s (v6cni/reference)", sc.name,
			benchutil.Ratio(float64(o.runp.Median()), float64(f.runp.Median())), benchutil.Ratio(float64(o.runp.Pct(90)), float64(f.runp.Pct(90))),
			benchutil.Ratio(float64(o.cni.Median()), float64(f.cni.Median())), benchutil.Ratio(float64(o.cni.Pct(90)), float64(f.cni.Pct(90)))))
		// Pods stay until the stack's containerd stops: Stop removes them
		// (DEL) before containerd goes.
		for _, s := range stacks {
			if err := s.c.Stop(); err != nil {
				return fmt.Errorf("%s: stop containerd: %w", s.name, err)
			}
		}
	}
	fmt.Printf("crictl runp and its CNI part (ms), %d pods per stack, interleaved; containerd %s\n", *flagN, critest.BinDir())
	t.Print(os.Stdout)
	fmt.Println(strings.Join(ratios, "\n"))
	return nil
}

// sets turns ranges into one ranges set per range (one per family).
func sets(rs []map[string]any) []any {
	var out []any
	for _, r := range rs {
		out = append(out, []any{r})
	}
	return out
}

// conflist is a one-plugin bridge conflist: bridge-v6 for ipam-v6, the
// reference bridge for host-local.
func conflist(version, bridge string, ipam map[string]any) []byte {
	typ := "bridge-v6"
	if ipam["type"] == "host-local" {
		typ = "bridge"
	}
	b, _ := json.Marshal(map[string]any{
		"cniVersion": version,
		"name":       bridge,
		"plugins": []any{map[string]any{
			"type": typ, "bridge": bridge, "isGateway": true, "isDefaultGateway": true, "ipam": ipam,
		}},
	})
	return b
}

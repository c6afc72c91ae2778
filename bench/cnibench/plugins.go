package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
)

// pluginSet is one of the two stacks compared: v6cni or the reference.
type pluginSet struct {
	name    string // "v6cni", "reference"
	mainBin string // path of the main plugin
	ipamBin string // path of the IPAM plugin
	cniPath string
	// conf returns the plugin's network configuration (not a conflist).
	conf func(network, bridge string, v6, v4 netip.Prefix) map[string]any
}

func v6cniSet(binDir, refDir, socket string) *pluginSet {
	return &pluginSet{
		name:    "v6cni",
		mainBin: filepath.Join(binDir, "bridge-v6"),
		ipamBin: filepath.Join(binDir, "ipam-v6"),
		cniPath: binDir + ":" + refDir,
		conf: func(network, bridge string, v6, v4 netip.Prefix) map[string]any {
			ranges := []any{[]any{map[string]any{"subnet": v6.String(), "blockSize": v6.Bits()}}}
			if v4.IsValid() {
				ranges = append(ranges, []any{map[string]any{"subnet": v4.String(), "blockSize": v4.Bits()}})
			}
			return map[string]any{
				"cniVersion": cniVersion, "name": network, "type": "bridge-v6",
				"bridge": bridge, "isGateway": true,
				"ipam": map[string]any{"type": "ipam-v6", "socket": socket, "ranges": ranges},
			}
		},
	}
}

func referenceSet(refDir, dataDir string) *pluginSet {
	return &pluginSet{
		name:    "reference",
		mainBin: filepath.Join(refDir, "bridge"),
		ipamBin: filepath.Join(refDir, "host-local"),
		cniPath: refDir,
		conf: func(network, bridge string, v6, v4 netip.Prefix) map[string]any {
			ranges := []any{[]any{map[string]any{"subnet": v6.String()}}}
			if v4.IsValid() {
				ranges = append(ranges, []any{map[string]any{"subnet": v4.String()}})
			}
			return map[string]any{
				"cniVersion": cniVersion, "name": network, "type": "bridge",
				"bridge": bridge, "isGateway": true,
				"ipam": map[string]any{"type": "host-local", "dataDir": dataDir, "ranges": ranges},
			}
		},
	}
}

// cniVersion of every configuration: the newest the reference v1.1.1 knows,
// and what podman 4.3 conflists use.
const cniVersion = "1.0.0"

// container is one attachment of a batch.
type container struct {
	id     string // 64 hex, as runtimes make them
	pod    string
	netns  string
	result []byte // ADD's stdout
}

func newContainer(pod, netns string) *container {
	b := make([]byte, 32)
	rand.Read(b)
	return &container{id: hex.EncodeToString(b), pod: pod, netns: netns}
}

func (c *container) env(command, cniPath string) []string {
	return []string{
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + c.id,
		"CNI_NETNS=" + c.netns,
		"CNI_IFNAME=eth0",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=" + c.pod,
		"CNI_PATH=" + cniPath,
		"PATH=" + os.Getenv("PATH"),
	}
}

// execPlugin runs bin as a runtime does and returns its stdout and the time
// from fork to exit.
func execPlugin(ctx context.Context, bin string, env []string, stdin []byte) ([]byte, time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t := time.Now()
	err := cmd.Run()
	d := time.Since(t)
	if err != nil {
		return nil, d, fmt.Errorf("%s %s: %v: %s %s", filepath.Base(bin), envValue(env, "CNI_COMMAND"),
			err, strings.TrimSpace(out.String()), strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), d, nil
}

func envValue(env []string, k string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, k+"="); ok {
			return v
		}
	}
	return ""
}

// driver attaches and detaches containers one way (exec, libcni).
type driver interface {
	add(ctx context.Context, c *container) (time.Duration, error)
	del(ctx context.Context, c *container) (time.Duration, error)
}

// execDriver execs the main plugin directly with CNI_* and the config on
// stdin; DEL gets prevResult, as runtimes send it.
type execDriver struct {
	set  *pluginSet
	conf map[string]any
	raw  []byte
}

func newExecDriver(set *pluginSet, conf map[string]any) *execDriver {
	raw, _ := json.Marshal(conf)
	return &execDriver{set: set, conf: conf, raw: raw}
}

func (d *execDriver) add(ctx context.Context, c *container) (time.Duration, error) {
	out, t, err := execPlugin(ctx, d.set.mainBin, c.env("ADD", d.set.cniPath), d.raw)
	c.result = out
	return t, err
}

func (d *execDriver) del(ctx context.Context, c *container) (time.Duration, error) {
	stdin := d.raw
	if len(c.result) > 0 {
		m := make(map[string]any, len(d.conf)+1)
		for k, v := range d.conf {
			m[k] = v
		}
		m["prevResult"] = json.RawMessage(c.result)
		stdin, _ = json.Marshal(m)
	}
	_, t, err := execPlugin(ctx, d.set.mainBin, c.env("DEL", d.set.cniPath), stdin)
	return t, err
}

// libcniDriver goes through libcni, as containerd, CRI-O and podman do
// (result cache, prevResult on DEL).
type libcniDriver struct {
	cfg  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

func newLibcniDriver(set *pluginSet, conf map[string]any, cacheDir string) (*libcniDriver, error) {
	plugin := make(map[string]any, len(conf))
	for k, v := range conf {
		if k != "cniVersion" && k != "name" {
			plugin[k] = v
		}
	}
	raw, err := json.Marshal(map[string]any{"cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": []any{plugin}})
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		return nil, err
	}
	return &libcniDriver{
		cfg:  libcni.NewCNIConfigWithCacheDir(filepath.SplitList(set.cniPath), cacheDir, nil),
		list: list,
	}, nil
}

func (d *libcniDriver) rt(c *container) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: c.id, NetNS: c.netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", c.pod}}}
}

func (d *libcniDriver) add(ctx context.Context, c *container) (time.Duration, error) {
	t := time.Now()
	res, err := d.cfg.AddNetworkList(ctx, d.list, d.rt(c))
	el := time.Since(t)
	if err == nil {
		var b bytes.Buffer
		res.PrintTo(&b)
		c.result = b.Bytes()
	}
	return el, err
}

func (d *libcniDriver) del(ctx context.Context, c *container) (time.Duration, error) {
	t := time.Now()
	err := d.cfg.DelNetworkList(ctx, d.list, d.rt(c))
	return time.Since(t), err
}

// batch is the outcome of attaching then detaching n containers.
type batch struct {
	add, del         benchutil.Durs // add[i] is the i-th container attached
	addWall, delWall time.Duration
}

func (b *batch) addRate() float64 { return float64(len(b.add)) / b.addWall.Seconds() }
func (b *batch) delRate() float64 { return float64(len(b.del)) / b.delWall.Seconds() }

// netnsSet tracks the container namespaces alive, so they are removed on
// every exit path.
type netnsSet struct {
	mu    sync.Mutex
	paths map[string]bool
}

func (s *netnsSet) create(name string) (string, error) {
	p, err := benchutil.NewNetns(name)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.paths[p] = true
	s.mu.Unlock()
	return p, nil
}

func (s *netnsSet) remove(p string) {
	benchutil.DelNetns(p)
	s.mu.Lock()
	delete(s.paths, p)
	s.mu.Unlock()
}

func (s *netnsSet) removeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.paths {
		benchutil.DelNetns(p)
		delete(s.paths, p)
	}
}

var namespaces = &netnsSet{paths: map[string]bool{}}

// runBatch creates n namespaces (not timed), attaches them par at a time,
// then detaches them par at a time, and removes the namespaces.
func runBatch(ctx context.Context, r *benchutil.Run, d driver, tag string, n, par int) (*batch, error) {
	cs := make([]*container, n)
	for i := range cs {
		p, err := namespaces.create(r.Name(fmt.Sprintf("-%s-%d", tag, i)))
		if err != nil {
			for _, c := range cs[:i] {
				namespaces.remove(c.netns)
			}
			return nil, err
		}
		cs[i] = newContainer(fmt.Sprintf("%s-%d", tag, i), p)
	}
	defer func() {
		for _, c := range cs {
			namespaces.remove(c.netns)
		}
	}()
	b := &batch{add: make(benchutil.Durs, n), del: make(benchutil.Durs, n)}
	added := make([]bool, n)
	var err error
	b.addWall, err = benchutil.Parallel(ctx, n, par, func(i int) error {
		t, err := d.add(ctx, cs[i])
		b.add[i] = t
		if err == nil {
			added[i] = true
		}
		return err
	})
	if err != nil {
		// Best effort: release what was allocated (not after a Ctrl-C).
		if ctx.Err() == nil {
			for i, c := range cs {
				if added[i] {
					d.del(ctx, c)
				}
			}
		}
		return nil, fmt.Errorf("%s ADD: %w", tag, err)
	}
	b.delWall, err = benchutil.Parallel(ctx, n, par, func(i int) error {
		t, err := d.del(ctx, cs[i])
		b.del[i] = t
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s DEL: %w", tag, err)
	}
	return b, nil
}

// runPairSeq runs the sequential scenario of two stacks interleaved
// container by container (the order alternating), so that both see the same
// load on a shared machine. Each batch's wall time is the sum of its own
// calls.
func runPairSeq(ctx context.Context, r *benchutil.Run, ds []driver, tags []string, n int) ([]*batch, error) {
	cs := make([][]*container, len(ds))
	defer func() {
		for _, l := range cs {
			for _, c := range l {
				namespaces.remove(c.netns)
			}
		}
	}()
	for j := range ds {
		for i := 0; i < n; i++ {
			p, err := namespaces.create(r.Name(fmt.Sprintf("-%s-%d", tags[j], i)))
			if err != nil {
				return nil, err
			}
			cs[j] = append(cs[j], newContainer(fmt.Sprintf("%s-%d", tags[j], i), p))
		}
	}
	bs := make([]*batch, len(ds))
	for j := range bs {
		bs[j] = &batch{add: make(benchutil.Durs, n), del: make(benchutil.Durs, n)}
	}
	added := make([][]bool, len(ds))
	for j := range added {
		added[j] = make([]bool, n)
	}
	order := func(i int) []int {
		if i%2 == 0 {
			return []int{0, 1}
		}
		return []int{1, 0}
	}
	var err error
	for i := 0; i < n && err == nil; i++ {
		for _, j := range order(i) {
			if err = ctx.Err(); err != nil {
				break
			}
			var t time.Duration
			t, err = ds[j].add(ctx, cs[j][i])
			if err != nil {
				err = fmt.Errorf("%s ADD: %w", tags[j], err)
				break
			}
			added[j][i] = true
			bs[j].add[i] = t
			bs[j].addWall += t
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			for j := range ds {
				for i, c := range cs[j] {
					if added[j][i] {
						ds[j].del(ctx, c)
					}
				}
			}
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		for _, j := range order(i) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			t, err := ds[j].del(ctx, cs[j][i])
			if err != nil {
				return nil, fmt.Errorf("%s DEL: %w", tags[j], err)
			}
			bs[j].del[i] = t
			bs[j].delWall += t
		}
	}
	return bs, nil
}

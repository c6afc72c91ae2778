// Package critest starts a private containerd 2 with its CRI plugin for a
// test, driven with crictl as the kubelet drives it: its own root, state,
// socket and CNI configuration under a temporary directory, the runc shim,
// and a locally built pause image as the sandbox image. Everything it made
// (the daemon and its shims, mounts, pods' network namespaces) is removed
// when the test ends, also when it fails.
//
// The binaries are built by scripts/install-deps.sh into DefaultBinDir
// (V6CNI_CRI_BIN_DIR overrides it); runc comes from Debian.
package critest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultBinDir is where scripts/install-deps.sh builds containerd,
// containerd-shim-runc-v2, ctr and crictl.
const DefaultBinDir = "/var/lib/v6cni-test/cri/bin"

// BinDir returns the directory of the containerd and crictl binaries.
func BinDir() string {
	if d := os.Getenv("V6CNI_CRI_BIN_DIR"); d != "" {
		return d
	}
	return DefaultBinDir
}

// CheckBinaries returns an error naming every binary a CRI test needs and
// does not find.
func CheckBinaries() error {
	var missing []string
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "crictl"} {
		if _, err := os.Stat(filepath.Join(BinDir(), b)); err != nil {
			missing = append(missing, filepath.Join(BinDir(), b))
		}
	}
	if _, err := exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc (Debian package runc)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run scripts/install-deps.sh as root (make deps)", strings.Join(missing, ", "))
	}
	return nil
}

// Options configure one containerd.
type Options struct {
	// CNIBinDirs are searched for the plugins, in order.
	CNIBinDirs []string
	// ConfList is the network configuration, written into the CNI conf dir
	// before containerd starts.
	ConfList []byte
	// PauseArchive is the pause image archive (BuildPauseImage); built
	// into the test's directory when empty.
	PauseArchive string
	// Netns, when set, is the path of the network namespace containerd
	// runs in (only that: its mounts and cgroups are the host's). The CNI
	// plugins run there too, so the bridges and the host ends of the veths
	// stay out of the host's own namespace.
	Netns string
}

// NewNetns creates a network namespace (ip netns add) with a unique name for
// a containerd (Options.Netns) and deletes it when the test ends; deleting
// it removes every bridge and veth end the CNI plugins made in it.
func NewNetns(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "v6cri-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	return "/run/netns/" + name
}

// Containerd is one containerd a test started.
type Containerd struct {
	Dir     string // everything of this containerd is under it
	Socket  string // CRI and containerd API
	ConfDir string // CNI configuration
	LogPath string // containerd's log, at debug level

	bin     string
	cmd     *exec.Cmd
	done    chan error
	mu      sync.Mutex
	netnses map[string]bool // every pod network namespace seen
}

// Start starts containerd with opts (Launch in a temporary directory) and
// stops it and removes the directory when the test ends. It fails the test
// if containerd does not start.
func Start(t testing.TB, opts Options) *Containerd {
	t.Helper()
	if err := CheckBinaries(); err != nil {
		t.Fatal(err)
	}
	// Short: the socket path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "v6cri-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Launch(dir, opts)
	t.Cleanup(func() {
		if c != nil {
			if err := c.Stop(); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			t.Logf("containerd log (%s):\n%s", filepath.Join(dir, "containerd.log"), tail(filepath.Join(dir, "containerd.log"), 60))
		}
		os.RemoveAll(dir)
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Launch starts containerd with opts in dir (which must exist; keep its
// path short: the socket lives in it), imports the pause image and waits
// until its CRI answers. The caller calls Stop, then removes dir. On error
// nothing of containerd is left running.
func Launch(dir string, opts Options) (*Containerd, error) {
	c := &Containerd{
		Dir:     dir,
		Socket:  filepath.Join(dir, "c.sock"),
		ConfDir: filepath.Join(dir, "net.d"),
		LogPath: filepath.Join(dir, "containerd.log"),
		bin:     BinDir(),
		netnses: map[string]bool{},
	}
	if err := c.start(opts); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

// Pid is containerd's pid (0 once stopped).
func (c *Containerd) Pid() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *Containerd) start(opts Options) error {
	if err := os.MkdirAll(c.ConfDir, 0o755); err != nil {
		return err
	}
	if len(opts.ConfList) > 0 {
		if err := os.WriteFile(filepath.Join(c.ConfDir, "10-test.conflist"), opts.ConfList, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "config.toml"), []byte(c.config(opts)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "crictl.yaml"), []byte(fmt.Sprintf(
		"runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.Socket, c.Socket)), 0o644); err != nil {
		return err
	}
	archive := opts.PauseArchive
	if archive == "" {
		var err error
		if archive, err = BuildPauseImage(c.Dir); err != nil {
			return err
		}
	}
	logf, err := os.Create(c.LogPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, "containerd"), "--config", filepath.Join(c.Dir, "config.toml"))
	if opts.Netns != "" {
		// The CRI stream server listens on 127.0.0.1.
		if out, err := exec.Command("nsenter", "--net="+opts.Netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return fmt.Errorf("lo up in %s: %v: %s", opts.Netns, err, out)
		}
		// nsenter execs containerd: the pid stays containerd's.
		cmd = exec.Command("nsenter", append([]string{"--net=" + opts.Netns, "--"}, cmd.Args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// The shim is found on PATH; runc is Debian's, in /usr/sbin.
	cmd.Env = append(os.Environ(), "PATH="+c.bin+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	// Its own process group: a Ctrl-C of go test reaches the test, which
	// stops it by pid.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	c.cmd = cmd
	c.done = make(chan error, 1)
	go func() { c.done <- cmd.Wait() }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if conn, err := net.Dial("unix", c.Socket); err == nil {
			conn.Close()
			if _, err := c.Crictl(context.Background(), "version"); err == nil {
				break
			}
		}
		select {
		case err := <-c.done:
			c.done <- err
			return fmt.Errorf("containerd exited while starting: %v\n%s", err, tail(c.LogPath, 30))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not ready on %s after 30s\n%s", c.Socket, tail(c.LogPath, 30))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(c.bin, "ctr"), "--address", c.Socket, "--namespace", "k8s.io",
		"images", "import", "--snapshotter", "overlayfs", "--platform", "linux/amd64", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %v\n%s", archive, err, out)
	}
	return nil
}

// config is containerd's config.toml: version 3, only what the tests need.
func (c *Containerd) config(opts Options) string {
	q := func(s string) string { return strconv.Quote(s) }
	var dirs []string
	for _, d := range opts.CNIBinDirs {
		dirs = append(dirs, q(d))
	}
	return fmt.Sprintf(`version = 3
root = %s
state = %s
# Never the host's plugin dir.
plugin_dir = ""
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri",
]

[grpc]
  address = %s

[ttrpc]
  address = %s

[debug]
  level = "debug"

[metrics]
  address = ""

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %s

[plugins.'io.containerd.cri.v1.runtime']
  # The test sandbox may lack CAP_SYS_RESOURCE: never ask for an OOM score
  # below containerd's own.
  restrict_oom_score_adj = true
  # runc's state under ours, not /run/containerd/runc.
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    Root = %s
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%s]
    conf_dir = %s
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, q(filepath.Join(c.Dir, "root")), q(filepath.Join(c.Dir, "state")), q(c.Socket), q(c.Socket+".ttrpc"),
		q(PauseImage), q(filepath.Join(c.Dir, "state", "runc")), strings.Join(dirs, ", "), q(c.ConfDir))
}

// Crictl runs crictl against this containerd and returns its stdout; the
// error carries stderr.
func (c *Containerd) Crictl(ctx context.Context, args ...string) ([]byte, error) {
	full := append([]string{"--config", filepath.Join(c.Dir, "crictl.yaml")}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "crictl"), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// PodConfig is the part of a CRI PodSandboxConfig the tests set.
type PodConfig struct {
	Name      string
	Namespace string
	UID       string
}

// RunPod runs `crictl runp` for a pod and returns its sandbox ID.
func (c *Containerd) RunPod(ctx context.Context, p PodConfig) (string, error) {
	if p.Namespace == "" {
		p.Namespace = "default"
	}
	if p.UID == "" {
		p.UID = p.Namespace + "-" + p.Name
	}
	cfg, err := json.Marshal(map[string]any{
		"metadata":      map[string]any{"name": p.Name, "namespace": p.Namespace, "uid": p.UID, "attempt": 0},
		"log_directory": filepath.Join(c.Dir, "logs", p.UID),
		// Every pod's cgroups under one parent of this containerd's,
		// removed by Stop (containerd's default, /k8s.io, would stay).
		"linux": map[string]any{"cgroup_parent": c.cgroupParent()},
	})
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(c.Dir, "pod-*.json")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(cfg); err != nil {
		f.Close()
		return "", err
	}
	f.Close()
	out, err := c.Crictl(ctx, "runp", f.Name())
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(out))
	if id == "" {
		return "", errors.New("crictl runp printed no pod ID")
	}
	if pod, err := c.InspectPod(ctx, id); err == nil && pod.Netns != "" {
		c.mu.Lock()
		c.netnses[pod.Netns] = true
		c.mu.Unlock()
	}
	return id, nil
}

// Pod is what the tests read of `crictl inspectp`.
type Pod struct {
	ID    string
	State string
	IPs   []string // .status.network: ip, then additionalIps
	Pid   int      // the pause process
	Netns string   // the pod's network namespace path
}

// InspectPod returns a pod's state, addresses, pid and netns.
func (c *Containerd) InspectPod(ctx context.Context, id string) (*Pod, error) {
	out, err := c.Crictl(ctx, "inspectp", "-o", "json", id)
	if err != nil {
		return nil, err
	}
	var v struct {
		Status struct {
			ID      string `json:"id"`
			State   string `json:"state"`
			Network struct {
				IP            string `json:"ip"`
				AdditionalIPs []struct {
					IP string `json:"ip"`
				} `json:"additionalIps"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			Pid         int `json:"pid"`
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("crictl inspectp %s: %w", id, err)
	}
	p := &Pod{ID: v.Status.ID, State: v.Status.State, Pid: v.Info.Pid}
	if v.Status.Network.IP != "" {
		p.IPs = append(p.IPs, v.Status.Network.IP)
	}
	for _, a := range v.Status.Network.AdditionalIPs {
		p.IPs = append(p.IPs, a.IP)
	}
	for _, n := range v.Info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			p.Netns = n.Path
		}
	}
	return p, nil
}

// RemovePod stops and removes a pod (crictl stopp, rmp).
func (c *Containerd) RemovePod(ctx context.Context, id string) error {
	if _, err := c.Crictl(ctx, "stopp", id); err != nil {
		return err
	}
	_, err := c.Crictl(ctx, "rmp", id)
	return err
}

// Condition is one of the runtime's conditions (crictl info .status.conditions).
type Condition struct {
	Type    string `json:"type"`
	Status  bool   `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// NetworkReady returns the runtime's NetworkReady condition.
func (c *Containerd) NetworkReady(ctx context.Context) (Condition, error) {
	out, err := c.Crictl(ctx, "info")
	if err != nil {
		return Condition{}, err
	}
	var v struct {
		Status struct {
			Conditions []Condition `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return Condition{}, fmt.Errorf("crictl info: %w", err)
	}
	for _, cond := range v.Status.Conditions {
		if cond.Type == "NetworkReady" {
			return cond, nil
		}
	}
	return Condition{}, errors.New("crictl info: no NetworkReady condition")
}

// Stop removes every pod (so that their CNI DEL runs), stops containerd by
// pid, kills the shims it started, unmounts what it mounted and removes the
// pods' network namespaces that are left. It may run more than once.
func (c *Containerd) Stop() error {
	if c.cmd == nil {
		return nil
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := c.Crictl(ctx, "pods", "-q"); err == nil {
		for _, id := range strings.Fields(string(out)) {
			if pod, err := c.InspectPod(ctx, id); err == nil && pod.Netns != "" {
				c.mu.Lock()
				c.netnses[pod.Netns] = true
				c.mu.Unlock()
			}
			if _, err := c.Crictl(ctx, "stopp", id); err != nil {
				errs = append(errs, err)
			}
			if _, err := c.Crictl(ctx, "rmp", "-f", id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	cmd := c.cmd
	c.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-c.done
		errs = append(errs, fmt.Errorf("containerd pid %d still running 15s after SIGTERM: killed", cmd.Process.Pid))
	}
	// Shims outlive containerd by design; ours name our socket.
	for _, pid := range c.shims() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := removeCgroup(c.cgroupParent()); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(c.Dir); err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	for path := range c.netnses {
		if _, err := os.Stat(path); err == nil {
			_ = syscall.Unmount(path, syscall.MNT_DETACH)
			if err := os.Remove(path); err != nil {
				errs = append(errs, fmt.Errorf("remove pod netns %s: %w", path, err))
			}
		}
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// cgroupParent is the cgroup every pod of this containerd is put under.
func (c *Containerd) cgroupParent() string { return "/" + filepath.Base(c.Dir) }

// removeCgroup removes an empty cgroup (children first) from every
// hierarchy: cgroup v1's controllers and v2's unified tree.
func removeCgroup(name string) error {
	roots := []string{"/sys/fs/cgroup"}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		if e.IsDir() {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	var errs []error
	for _, root := range roots {
		dir := filepath.Join(root, name)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		// Deepest first: a cgroup with children cannot go.
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// shims returns the pids of the runc shims of this containerd: their
// command line names its socket.
func (c *Containerd) shims() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "containerd-shim-runc-v2" && slices.Contains(args, c.Socket) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

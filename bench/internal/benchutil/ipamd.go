package benchutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// Ipamd is an ipamd process with an embedded etcd in a fresh data directory.
type Ipamd struct {
	Cmd     *exec.Cmd
	Socket  string
	DataDir string
	Log     string
	exited  chan struct{}
}

// EtcdEndpoint is the embedded etcd's client URL.
func (d *Ipamd) EtcdEndpoint() string {
	return "unix://" + filepath.Join(d.DataDir, "etcd-client.sock")
}

// StartIpamd starts bin serve with its socket and data under r.Dir and
// returns once it answers on its socket.
func StartIpamd(ctx context.Context, r *Run, bin string, extra ...string) (*Ipamd, error) {
	d := &Ipamd{
		Socket:  filepath.Join(r.Dir, "ipamd.sock"),
		DataDir: filepath.Join(r.Dir, "ipamd"),
		Log:     filepath.Join(r.Dir, "ipamd.log"),
		exited:  make(chan struct{}),
	}
	logf, err := os.Create(d.Log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"serve", "--node-name", r.Name("-node"), "--socket", d.Socket,
		"--data-dir", d.DataDir, "--gc-interval", "0"}, extra...)
	d.Cmd = exec.Command(bin, args...)
	d.Cmd.Stdout, d.Cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C reaches us, and we stop ipamd in order.
	d.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ipamd: %w", err)
	}
	r.RecordPID(d.Cmd.Process.Pid)
	go func() { d.Cmd.Wait(); close(d.exited) }()
	cli := ipamapi.NewClient(d.Socket)
	deadline := time.Now().Add(60 * time.Second)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		h, err := cli.Health(hctx)
		cancel()
		if err == nil && h.Etcd == "ok" {
			return d, nil
		}
		select {
		case <-d.exited:
			log, _ := os.ReadFile(d.Log)
			return nil, fmt.Errorf("ipamd exited at start: %s", strings.TrimSpace(string(log)))
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("ipamd not serving on %s after 60 s (last: %v)", d.Socket, err)
		}
	}
}

// Pid is ipamd's process id.
func (d *Ipamd) Pid() int { return d.Cmd.Process.Pid }

// Stop sends SIGTERM, then SIGKILL after 10 s; only to our own pid.
func (d *Ipamd) Stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.Cmd.Process.Kill()
		<-d.exited
	}
}

// RSSKiB is VmRSS from /proc/PID/status, in KiB.
func RSSKiB(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// MemDetail is the split of a process's resident memory: anonymous (Go
// heap, stacks) and file-backed (etcd's bbolt mmap), from /proc/PID/status.
func MemDetail(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	var parts []string
	for _, line := range strings.Split(string(data), "\n") {
		for _, k := range []string{"RssAnon:", "RssFile:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				parts = append(parts, strings.TrimSuffix(k, ":")+" "+strings.TrimSpace(v))
			}
		}
	}
	return strings.Join(parts, ", ")
}

// Package benchutil holds what the v6cni benchmark programs share: running
// inside a private network namespace, container namespaces, an ipamd
// process, statistics and the printed tables.
//
// Every benchmark runs in its own "host" network namespace, entered by
// re-executing itself under `ip netns exec`: bridges, veths, sysctls
// (isGateway turns forwarding on) and routes the plugins create never touch
// the real host, and deleting that namespace removes them all. The outer
// process only supervises: it waits for the inner one and then removes
// whatever is left (processes it recorded, namespace files, the temporary
// directory), even when the inner one was interrupted or crashed.
package benchutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// envChild marks the inner process: "<run id> <run dir>".
const envChild = "V6CNI_BENCH_RUN"

// NetnsDir is where container namespaces are bind-mounted, as runtimes do.
const NetnsDir = "/run/netns"

// Run is one benchmark run.
type Run struct {
	// ID is 4 random hex digits; Prefix ("v6b"+ID) starts the name of every
	// namespace and bridge the run creates.
	ID     string
	Prefix string
	// Dir is the run's temporary directory (ipamd data, host-local leases,
	// sockets, logs); removed at the end.
	Dir string

	mu sync.Mutex
}

// HostNetns is the name of the run's private "host" namespace.
func (r *Run) HostNetns() string { return r.Prefix + "-host" }

// Name returns a name for an object of this run: Prefix + suffix.
func (r *Run) Name(suffix string) string { return r.Prefix + suffix }

// RecordPID notes a process the run started, so the supervisor can kill it
// if the run dies without stopping it.
func (r *Run) RecordPID(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(r.Dir, "pids"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintln(f, pid)
	f.Close()
}

// Main runs body in a private network namespace, supervised (see the package
// comment). It never returns.
func Main(tool string, body func(ctx context.Context, r *Run) error) {
	if v := os.Getenv(envChild); v != "" {
		os.Exit(child(tool, v, body))
	}
	os.Exit(supervise(tool))
}

func supervise(tool string) int {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "%s: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): it creates network namespaces\n", tool)
		return 1
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fmt.Fprintf(os.Stderr, "%s: needs the ip command (iproute2)\n", tool)
		return 1
	}
	b := make([]byte, 2)
	rand.Read(b)
	r := &Run{ID: hex.EncodeToString(b)}
	r.Prefix = "v6b" + r.ID
	dir, err := os.MkdirTemp("", "v6cni-bench-"+r.ID+"-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tool, err)
		return 1
	}
	r.Dir = dir
	defer r.cleanupAll(tool)

	// Signals: the terminal sends SIGINT to the whole process group (the
	// inner process handles it); SIGTERM/SIGHUP sent to us are forwarded.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)

	if out, err := exec.Command("ip", "netns", "add", r.HostNetns()).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: ip netns add %s: %v: %s\n", tool, r.HostNetns(), err, out)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tool, err)
		return 1
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", r.HostNetns(), self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), envChild+"="+r.ID+" "+r.Dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: start inner run: %v\n", tool, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigc:
			if sig != syscall.SIGINT {
				cmd.Process.Signal(sig)
			}
		case err := <-done:
			if err == nil {
				return 0
			}
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() > 0 {
				return ee.ExitCode()
			}
			fmt.Fprintf(os.Stderr, "%s: inner run: %v\n", tool, err)
			return 1
		}
	}
}

// cleanupAll is the supervisor's backstop: kill recorded processes still
// alive, remove the run's namespaces and directory.
func (r *Run) cleanupAll(tool string) {
	if data, err := os.ReadFile(filepath.Join(r.Dir, "pids")); err == nil {
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 1 {
				continue
			}
			// Only a process that is still ours: its command line names
			// the run directory.
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || !strings.Contains(string(cmdline), r.Dir) {
				continue
			}
			fmt.Fprintf(os.Stderr, "%s: killing leftover process %d\n", tool, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(NetnsDir, r.Prefix+"-*"))
	for _, m := range matches {
		if filepath.Base(m) == r.HostNetns() {
			continue
		}
		unix.Unmount(m, unix.MNT_DETACH)
		os.Remove(m)
	}
	if out, err := exec.Command("ip", "netns", "del", r.HostNetns()).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: ip netns del %s: %v: %s\n", tool, r.HostNetns(), err, out)
	}
	os.RemoveAll(r.Dir)
}

func child(tool, v string, body func(ctx context.Context, r *Run) error) int {
	id, dir, ok := strings.Cut(v, " ")
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: bad %s=%q\n", tool, envChild, v)
		return 1
	}
	r := &Run{ID: id, Prefix: "v6b" + id, Dir: dir}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-sigc
		fmt.Fprintf(os.Stderr, "\n%s: interrupted, cleaning up (again to quit at once)\n", tool)
		cancel()
		<-sigc
		os.Exit(130)
	}()
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	if err := body(ctx, r); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "%s: interrupted: %v\n", tool, err)
			return 130
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", tool, err)
		return 1
	}
	return 0
}

// NewNetns creates a network namespace bind-mounted at NetnsDir/name, the
// way `ip netns add` does, without an exec.
func NewNetns(name string) (string, error) {
	path := filepath.Join(NetnsDir, name)
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("netns %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
		if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr == nil {
			runtime.UnlockOSThread()
		} // else: the thread stays locked and exits with the goroutine.
		errc <- err
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", fmt.Errorf("netns %s: %w", name, err)
	}
	return path, nil
}

// DelNetns unmounts and removes a namespace made by NewNetns.
func DelNetns(path string) {
	unix.Unmount(path, unix.MNT_DETACH)
	os.Remove(path)
}

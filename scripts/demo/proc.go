package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// daemon is a process the demo started (BIRD, Kea, etcd, an ipamd), always
// inside one of its network namespaces, with its output in a log file.
type daemon struct {
	name string // for messages: "bird", "ipamd node-a"
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status, once done is closed
}

// startDaemon runs bin with args in netns, output to logPath. The daemon
// gets its own process group, so a Ctrl-C at the terminal reaches only the
// demo, which then stops every daemon in order; and it is killed if the
// demo itself dies without cleaning up.
func (d *demo) startDaemon(name, netns, logPath string, env []string, bin string, args ...string) (*daemon, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// ip execs bin after entering netns: the pid is the daemon's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &daemon{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	d.daemons = append(d.daemons, p)
	return p, nil
}

// running reports whether the process has not exited.
func (p *daemon) running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits; SIGKILL after 10 s. It returns an error when
// the daemon did not exit cleanly on SIGTERM.
func (p *daemon) stop() error {
	if !p.running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		var ee *exec.ExitError
		if p.err != nil && !(errors.As(p.err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM) {
			return fmt.Errorf("%s (pid %d) exited with %v on SIGTERM; its log:\n%s", p.name, p.cmd.Process.Pid, p.err, p.tail(2000))
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s (pid %d) did not stop within 10s of SIGTERM: killed; its log:\n%s", p.name, p.cmd.Process.Pid, p.tail(2000))
	}
}

// waitFor polls ready every 20 ms until it is true, the daemon exits, ctx
// ends or within passes; it returns the time it took.
func (p *daemon) waitFor(ctx context.Context, within time.Duration, what string, ready func() bool) (time.Duration, error) {
	t0 := time.Now()
	for !ready() {
		select {
		case <-p.done:
			return 0, fmt.Errorf("%s exited (%v) before %s; its log:\n%s", p.name, p.err, what, p.tail(3000))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(t0) > within {
			return 0, fmt.Errorf("%s: no %s after %v; its log:\n%s", p.name, what, within, p.tail(3000))
		}
	}
	return time.Since(t0), nil
}

// tail is the end of the daemon's log, indented.
func (p *daemon) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return indent(string(b))
}

// sh runs a short command and returns its error with its output.
func sh(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// shAll runs commands in order and stops at the first error.
func shAll(ctx context.Context, cmds ...[]string) error {
	for _, c := range cmds {
		if err := sh(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

package netlab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one process the lab started; it is only ever signalled by pid.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startIn starts args inside netns ns (`ip netns exec` execs the command,
// so the pid is the command's) in directory dir (empty: the test's),
// output appended to logPath. The process gets SIGKILL if the test binary
// dies.
func startIn(ns, logPath, dir string, args ...string) (*proc, error) {
	return startInEnv(ns, logPath, dir, nil, args...)
}

// startInEnv is startIn with env added to the test's environment.
func startInEnv(ns, logPath, dir string, env []string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "---- started at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = f, f, dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in netns %s: %w", args[0], ns, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop signals the process (by pid) and waits for it; SIGKILL after 10 s.
// It reports whether the process exited by itself after sig.
func (p *proc) stop(sig syscall.Signal) bool {
	if p == nil {
		return true
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.done:
		return true
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binaries builds bridge-v6, ipam-v6, pd-ipam and ipamd once per test binary run
// (CGO_ENABLED=0, as `make build` does) and returns their directory. A
// TestMain removes it with RemoveBinaries.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "nl-bin-"); buildErr != nil {
			return
		}
		_, self, _, _ := runtime.Caller(0)
		// One go build: it links the four in parallel; without debug info (as
		// `make build`), which links faster.
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", buildDir+"/",
			"./plugins/bridge-v6", "./plugins/ipam-v6", "./plugins/pd-ipam", "./ipamd")
		cmd.Dir = filepath.Join(filepath.Dir(self), "..", "..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// RemoveBinaries removes what Binaries built (call it after m.Run).
func RemoveBinaries() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

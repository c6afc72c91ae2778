package vmtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// AccelEnv, when set to "kvm" or "tcg", chooses qemu's accelerator instead
// of KVM whenever /dev/kvm can be opened.
const AccelEnv = "V6CNI_VMTEST_ACCEL"

// Config says what a guest runs.
type Config struct {
	// Run is the -test.run pattern of the tests the guest runs (the
	// test binary is the caller's package, built again).
	Run string
	// Modules are the kernel modules to load (by name, e.g. "8021q");
	// their dependencies are loaded first.
	Modules []string
	// Timeout bounds the whole boot and test run; 0 is 2 minutes with
	// KVM, 10 minutes without (TCG emulates every instruction). It is
	// cut to the test binary's own -timeout.
	Timeout time.Duration
	// MemoryMiB is the guest's memory; 0 is 1024.
	MemoryMiB int
	// Binaries are host commands the guest's tests exec (names looked up
	// in PATH, or absolute paths): each is copied into the guest at its
	// host path, with the shared libraries ldd lists for it (and the
	// dynamic loader) at theirs. The guest's PATH is /usr/local/sbin,
	// /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin. Files they read
	// at run time (configuration, dlopen'ed plugins) are not copied.
	Binaries []string
}

// Timings are what Run measured.
type Timings struct {
	Build    time.Duration // building the guest's test binary
	Boot     time.Duration // qemu start to the guest's init starting the tests
	Tests    time.Duration // the guest's tests
	Total    time.Duration // Run, all in
	KVM      bool          // hardware virtualisation was used
	Finished bool          // the guest printed its exit status
}

// Run boots a guest with the Debian kernel FindKernel returns, in qemu,
// whose init is the calling package's test binary (built with CGO_ENABLED=0,
// so statically, from the test's working directory, which go test makes the
// package directory) running the tests cfg.Run matches with -test.v. The
// guest's console is streamed into t.Log as it comes. The test fails if the
// guest's tests fail, if the guest ends without saying how they ended, or
// at the timeout; qemu is killed (by its pid) when Run returns, however it
// returns. The caller's TestMain must call InitIfGuest first.
//
// It fails (never skips) when not root, or without qemu or the guest
// kernel, naming scripts/install-deps.sh.
func Run(t *testing.T, cfg Config) Timings {
	t.Helper()
	start := time.Now()
	var tm Timings
	if InGuest() {
		t.Fatal("vmtest.Run called inside a guest: the guest's kernel is missing what the caller probed for")
	}
	if os.Geteuid() != 0 {
		t.Fatal("vmtest.Run needs root (/dev/kvm, and the guest's tests create network namespaces); run the tests with sudo")
	}
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found: %v; %s", err, installHint)
	}
	modules, err := resolveModules(k.Modules, cfg.Modules)
	if err != nil {
		t.Fatal(err)
	}
	files, err := binaryFiles(cfg.Binaries)
	if err != nil {
		t.Fatal(err)
	}
	switch accel := os.Getenv(AccelEnv); accel {
	case "":
		tm.KVM = kvmUsable()
	case "kvm", "tcg":
		tm.KVM = accel == "kvm"
	default:
		t.Fatalf("%s=%q: want kvm or tcg", AccelEnv, accel)
	}
	// Go test's own -timeout (t.Deadline) bounds every step.
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-10*time.Second))
		defer cancel()
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "guest.test")
	if err := buildGuestBinary(ctx, bin); err != nil {
		t.Fatal(err)
	}
	tm.Build = time.Since(start)
	initrd := filepath.Join(dir, "initramfs.cpio")

	mem := cfg.MemoryMiB
	if mem == 0 {
		mem = 1024
	}
	qargs := []string{
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(min(runtime.NumCPU(), 2)),
		"-kernel", k.Image, "-initrd", initrd,
		// earlyprintk: the kernel's first line ("Linux version") shows
		// at once, which the KVM watchdog waits for; loglevel=3 keeps
		// the rest of its boot quiet.
		"-append", "console=ttyS0 earlyprintk=ttyS0 loglevel=3 panic=-1 edd=off",
	}
	var b bootResult
	for {
		accel := []string{"-accel", "tcg", "-cpu", "max"}
		if tm.KVM {
			// No arch-capabilities: some nested hypervisors refuse
			// the MSR and qemu aborts.
			accel = []string{"-accel", "kvm", "-cpu", "host,-arch-capabilities"}
		} else {
			t.Logf("vmtest: emulating the guest (TCG): slower than KVM")
		}
		timeout := cfg.Timeout
		if timeout == 0 {
			timeout = 2 * time.Minute
			if !tm.KVM {
				timeout = 10 * time.Minute
			}
		}
		// The guest's tests time out first, so that a hung one shows
		// its goroutines.
		args := []string{"-test.run=" + cfg.Run, "-test.v", "-test.count=1", "-test.timeout=" + (timeout - 15*time.Second).String()}
		if err := writeInitramfs(initrd, bin, modules, files, args); err != nil {
			t.Fatal(err)
		}
		t.Logf("vmtest: booting %s (%s) with %d modules: tests %q", k.Version, map[bool]string{true: "KVM", false: "TCG"}[tm.KVM], len(modules), cfg.Run)
		bootCtx, cancel := context.WithTimeout(ctx, timeout)
		b, err = boot(bootCtx, t, qemu, append(qargs, accel...), tm.KVM)
		timedOut := bootCtx.Err() != nil
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if timedOut && !b.watchdog {
			t.Fatalf("vmtest: guest killed after %v", timeout)
		}
		if !b.watchdog {
			break
		}
		t.Logf("vmtest: the KVM guest's kernel printed nothing in %v (/dev/kvm opens, but runs no Linux guest here: nested virtualization?); booting again with TCG", kvmWatchdog)
		kvmBroken.Store(true)
		tm.KVM = false
	}
	tm.Boot, tm.Tests, tm.Finished = b.boot, b.tests, b.finished
	tm.Total = time.Since(start)
	t.Logf("vmtest: guest binary built in %v, boot to test start %v, guest tests %v, total %v",
		tm.Build.Round(time.Millisecond), tm.Boot.Round(time.Millisecond), tm.Tests.Round(time.Millisecond), tm.Total.Round(time.Millisecond))
	switch {
	case !b.finished:
		t.Fatalf("vmtest: the guest ended without reporting its tests' exit status (qemu: %v); its console is above", b.qemuErr)
	case b.code != 0:
		t.Fatalf("vmtest: the guest's tests failed (exit status %d); their output is above", b.code)
	}
	return tm
}

// kvmWatchdog bounds the wait for the first line of the guest's kernel
// under KVM (well under a second where KVM works).
const kvmWatchdog = 5 * time.Second

// kvmBroken is set once a KVM guest of this process printed nothing: the
// later ones use TCG at once.
var kvmBroken atomic.Bool

// bootResult is what one boot of the guest gave.
type bootResult struct {
	code        int           // the tests' exit status
	finished    bool          // the guest printed it
	watchdog    bool          // killed by the KVM watchdog
	boot, tests time.Duration // qemu start to the tests' start; the tests
	qemuErr     error         // qemu's exit
}

// boot runs qemu once, streaming its console into t.Log. With kvm, a
// kernel that prints nothing within kvmWatchdog has qemu killed and the
// result marked.
func boot(ctx context.Context, t *testing.T, qemu string, args []string, kvm bool) (bootResult, error) {
	var b bootResult
	console, exited, kill, err := startQEMU(ctx, t, qemu, args)
	if err != nil {
		return b, err
	}
	defer console.Close()
	bootStart := time.Now()
	var testsStart time.Time
	var kernelSeen, fired atomic.Bool
	if kvm {
		w := time.AfterFunc(kvmWatchdog, func() {
			if !kernelSeen.Load() {
				fired.Store(true)
				kill()
			}
		})
		defer w.Stop()
	}
	b.code, b.finished = scanConsole(console, func(line string) { t.Log("guest: " + line) }, func(ev consoleEvent) {
		switch ev {
		case kernelStarted:
			kernelSeen.Store(true)
		case testsStarted:
			testsStart = time.Now()
			b.boot = testsStart.Sub(bootStart)
		}
	})
	b.qemuErr = <-exited
	if !testsStart.IsZero() {
		b.tests = time.Since(testsStart)
	}
	b.watchdog = fired.Load()
	return b, nil
}

// kvmUsable reports whether /dev/kvm can be opened for qemu.
func kvmUsable() bool {
	if kvmBroken.Load() {
		return false
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// buildGuestBinary builds the test binary of the package in the working
// directory, statically (no cgo, hence no -race), as out.
func buildGuestBinary(ctx context.Context, out string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("vmtest: build the guest's test binary: the go tool is not in PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, goTool, "test", "-c", "-vet=off", "-ldflags=-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: build the guest's test binary (go test -c, CGO_ENABLED=0): %w\n%s", err, b)
	}
	return nil
}

// writeInitramfs writes the guest's root file system: the test binary as
// /init, the module files, the host files (guest path → host path: the
// binaries and their libraries), the configuration, /dev/console (the
// kernel opens it for init's standard streams) and the mount points.
func writeInitramfs(out, bin string, modules []string, files map[string]string, args []string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := newCPIOWriter(f)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "root"} {
		w.Dir(d, 0o755)
	}
	w.CharDev("dev/console", 0o600, 5, 1)
	w.Symlink("var/run", "../run")
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	w.File("init", 0o755, data)
	guestPaths := make([]string, 0, len(files))
	for g := range files {
		guestPaths = append(guestPaths, g)
	}
	sort.Strings(guestPaths)
	for _, g := range guestPaths {
		data, err := os.ReadFile(files[g])
		if err != nil {
			return err
		}
		w.File(strings.TrimPrefix(g, "/"), 0o755, data)
	}
	cfg := guestConfig{Args: args}
	for _, m := range modules {
		data, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		p := "/vmtest/modules/" + filepath.Base(m)
		w.File(p, 0o644, data)
		cfg.Modules = append(cfg.Modules, p)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	w.File(configPath, 0o644, js)
	if err := w.Close(); err != nil {
		return fmt.Errorf("write initramfs %s: %w", out, err)
	}
	return f.Close()
}

// binaryFiles resolves host commands to the files the guest needs to run
// them: guest path → host path of each binary and of each shared library
// ldd lists for it (the dynamic loader included). Guest paths are the
// paths as the binary and ldd name them; the content is read through
// symbolic links.
func binaryFiles(names []string) (map[string]string, error) {
	files := map[string]string{}
	if len(names) == 0 {
		return files, nil
	}
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		return nil, fmt.Errorf("vmtest: copy binaries into the guest: ldd not found: %w", err)
	}
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("vmtest: binary %s for the guest: %w; %s", name, err, installHint)
		}
		if p, err = filepath.Abs(p); err != nil {
			return nil, err
		}
		files[p] = p
		out, err := exec.Command(ldd, p).Output()
		if err != nil {
			// "not a dynamic executable": a static binary needs nothing more.
			continue
		}
		for _, lib := range parseLdd(string(out)) {
			files[lib] = lib
		}
	}
	return files, nil
}

// parseLdd returns the absolute library paths in ldd's output ("libc.so.6
// => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the loader's
// "/lib64/ld-linux-x86-64.so.2 (0x...)"); the vDSO has no file.
func parseLdd(out string) []string {
	var libs []string
	for _, ln := range strings.Split(out, "\n") {
		f := strings.Fields(ln)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs
}

// startQEMU starts qemu with its console (stdout and stderr) on the
// returned pipe; exited receives Wait's result. qemu is killed when ctx
// ends, when the test ends, and when the thread that started it exits
// (Pdeathsig): that thread is locked until qemu has exited, so a test
// binary killed by go test's own timeout leaves no qemu behind.
func startQEMU(ctx context.Context, t *testing.T, qemu string, args []string) (console io.ReadCloser, exited <-chan error, kill func(), err error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	started := make(chan error, 1)
	exitc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("vmtest: start %s: %w", qemu, err)
			return
		}
		started <- nil
		err := cmd.Wait()
		close(done)
		exitc <- err
	}()
	err = <-started
	pw.Close() // qemu holds the write end now
	if err != nil {
		pr.Close()
		return nil, nil, nil, err
	}
	pid := cmd.Process.Pid
	kill = func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Normally gone already; a guest still running is killed by pid.
	t.Cleanup(kill)
	return pr, exitc, kill, nil
}

// consoleEvent is a milestone scanConsole reports.
type consoleEvent int

const (
	kernelStarted consoleEvent = iota // the kernel's first line
	testsStarted                      // the guest's init started the tests
)

// kernelMarker starts the first line the kernel prints (with earlyprintk).
const kernelMarker = "Linux version "

// ansiEscape matches the terminal control sequences the firmware prints.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[a-zA-Z])`)

// scanConsole reads the guest's console line by line, passing each line
// (without the carriage returns of the serial line and the firmware's
// terminal control sequences) to log and milestones to event; it returns
// the exit status after exitMarker, and whether there was one.
func scanConsole(r io.Reader, log func(string), event func(consoleEvent)) (code int, finished bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := ansiEscape.ReplaceAllString(sc.Text(), "")
		line = strings.Trim(line, "\r")
		if _, rest, ok := strings.Cut(line, exitMarker); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
				code, finished = n, true
			}
		}
		switch {
		case strings.Contains(line, kernelMarker):
			event(kernelStarted)
		case strings.Contains(line, startMarker):
			event(testsStarted)
		}
		log(line)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		log(fmt.Sprintf("vmtest: reading the console: %v", err))
	}
	return code, finished
}

package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMetricsAddrTaken: a --metrics-addr whose port is taken is a start
// error naming the flag and the address, not a daemon serving without
// metrics.
func TestMetricsAddrTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	dir := shortDir(t)
	cmd := exec.Command(ipamdBin, "serve", "--node-name", "test-node", "--socket", filepath.Join(dir, "ipamd.sock"),
		"--data-dir", filepath.Join(dir, "data"), "--metrics-addr", addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second): // the embedded etcd starts first
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("ipamd still running 60s after start with --metrics-addr %s taken\n%s", addr, &stderr)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("ipamd exit: %v, want a non-zero exit\n%s", err, &stderr)
	}
	if !strings.Contains(stderr.String(), "--metrics-addr "+addr) || !strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("stderr = %q, want it to name --metrics-addr %s and say it is in use", &stderr, addr)
	}
}

// TestMetricsServeErrorStopsIpamd: when the metrics server stops serving
// after start (its listening socket broken under it: shut down from
// outside through pidfd_getfd, so accept fails for good), ipamd exits
// non-zero naming --metrics-addr, instead of running on without metrics
// and nobody noticing.
func TestMetricsServeErrorStopsIpamd(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	d := startIpamd(t, shortDir(t), "--metrics-addr", addr)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics before the fault: %v", err)
	}
	resp.Body.Close()

	shutdownListener(t, d.cmd.Process.Pid, port)
	select {
	case err := <-d.done:
		d.done <- err // for Cleanup
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("ipamd exit: %v, want non-zero\n%s", err, d.log)
		}
		if !strings.Contains(d.log.String(), "--metrics-addr "+addr) {
			t.Errorf("ipamd log lacks %q:\n%s", "--metrics-addr "+addr, d.log)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("ipamd still running 20s after its metrics listener broke\n%s", d.log)
	}
}

// shutdownListener takes a copy of the TCP socket of pid listening on
// port (pidfd_getfd) and shuts it down: the process's accept then fails
// with EINVAL.
func shutdownListener(t *testing.T, pid, port int) {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(pidfd)
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		target, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, target, 0)
		if err != nil {
			continue // closed meanwhile
		}
		sa, err := unix.Getsockname(fd)
		listening, lerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if in4, ok := sa.(*unix.SockaddrInet4); err == nil && lerr == nil && ok && in4.Port == port && listening == 1 {
			serr := unix.Shutdown(fd, unix.SHUT_RDWR)
			unix.Close(fd)
			if serr != nil {
				t.Fatalf("shutdown of ipamd's metrics listener: %v", serr)
			}
			return
		}
		unix.Close(fd)
	}
	t.Fatalf("no socket of pid %d listens on port %d", pid, port)
}

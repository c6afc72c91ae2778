package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/internal/testutil/checktest"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

var ipamdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ipamd-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ipamdBin = filepath.Join(dir, "ipamd")
	out, err := exec.Command("go", "build", "-o", ipamdBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build ipamd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one ipamd process started by a test.
type daemon struct {
	cmd    *exec.Cmd
	socket string
	log    *syncBuffer
	done   chan error
}

// syncBuffer is ipamd's stderr as the test reads it while ipamd still
// writes (exec copies the pipe into it from its own goroutine).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startIpamd(t *testing.T, dir string, extra ...string) *daemon {
	t.Helper()
	return startIpamdIn(t, "", dir, extra...)
}

// startIpamdIn starts ipamd inside network namespace netns ("" for the
// test's own); `ip netns exec` execs ipamd, so the pid is ipamd's.
func startIpamdIn(t *testing.T, netns, dir string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{socket: filepath.Join(dir, "ipamd.sock"), log: &syncBuffer{}, done: make(chan error, 1)}
	args := append([]string{"serve", "--node-name", "test-node", "--socket", d.socket, "--data-dir", filepath.Join(dir, "data")}, extra...)
	if netns == "" {
		d.cmd = exec.Command(ipamdBin, args...)
	} else {
		d.cmd = exec.Command("ip", append([]string{"netns", "exec", netns, ipamdBin}, args...)...)
	}
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("ipamd log:\n%s", d.log)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := ipamapi.NewClient(d.socket).State(ctx)
		cancel()
		if err == nil {
			return d
		}
		select {
		case err := <-d.done:
			t.Fatalf("ipamd exited before serving: %v\n%s", err, d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipamd not serving on %s after 30s: %v\n%s", d.socket, err, d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and wants a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		d.done <- err // for Cleanup
		if err != nil {
			t.Fatalf("ipamd exit after SIGTERM: %v\n%s", err, d.log)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("ipamd still running 20s after SIGTERM\n%s", d.log)
	}
}

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ipamd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func addReq(network, cid, subnet string) *ipamapi.Request {
	cfg := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"ipam":{"type":"ipam-v6","ranges":[[{"subnet":%q}]]}}`, network, subnet)
	return &ipamapi.Request{Network: network, ContainerID: cid, IfName: "eth0", Config: []byte(cfg)}
}

// TestSocketStopRestart: the socket is root-only, SIGTERM stops ipamd
// cleanly (socket removed, embedded etcd closed), and a restart on the same
// data dir serves the same addresses.
func TestSocketStopRestart(t *testing.T) {
	dir := shortDir(t)
	d := startIpamd(t, dir)

	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	ctx := context.Background()
	first, err := ipamapi.NewClient(d.socket).Add(ctx, addReq("v6net", "c1", "2001:db8:77::/48"))
	if err != nil {
		t.Fatal(err)
	}
	d.stop(t)
	if _, err := os.Stat(d.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after stop: %v", err)
	}

	d2 := startIpamd(t, dir)
	again, err := ipamapi.NewClient(d2.socket).Add(ctx, addReq("v6net", "c1", "2001:db8:77::/48"))
	if err != nil {
		t.Fatal(err)
	}
	if first.IPs[0].Address.String() != again.IPs[0].Address.String() {
		t.Errorf("after restart ADD = %s, want %s", again.IPs[0].Address.String(), first.IPs[0].Address.String())
	}
	st, err := ipamapi.NewClient(d2.socket).State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Networks) != 1 || len(st.Networks[0].Blocks) != 1 || len(st.Networks[0].Blocks[0].Addrs) != 1 {
		t.Errorf("state after restart = %+v, want one network, block and address", st)
	}

	checktest.AssertClean(t, ipamapi.NewClient(d2.socket))

	// A second ipamd must not steal the socket of a running one.
	out, err := exec.Command(ipamdBin, "serve", "--socket", d2.socket, "--data-dir", filepath.Join(dir, "other")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another ipamd") {
		t.Errorf("second ipamd on the same socket: err=%v out=%s", err, out)
	}
}

// TestEtcdGone: an ipamd using an external etcd (here: another ipamd's
// embedded one) answers code 11 within the request bound when etcd dies,
// and STATUS says 50.
func TestEtcdGone(t *testing.T) {
	dirA, dirB := shortDir(t), shortDir(t)
	a := startIpamd(t, dirA)
	etcdURL := "unix://" + filepath.Join(dirA, "data", "etcd-client.sock")
	b := startIpamd(t, dirB, "--etcd-endpoints", etcdURL)
	ctx := context.Background()
	cb := ipamapi.NewClient(b.socket)
	if _, err := cb.Add(ctx, addReq("ext", "c1", "2001:db8:78::/48")); err != nil {
		t.Fatalf("ADD through external etcd: %v", err)
	}
	a.stop(t)

	start := time.Now()
	_, err := cb.Add(ctx, addReq("ext", "c2", "2001:db8:78::/48"))
	took := time.Since(start)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD with etcd gone: %v, want CNI code 11", err)
	}
	t.Logf("ADD with etcd gone failed after %v: %s", took, te.Msg)
	err = cb.Status(ctx, addReq("ext", "", "2001:db8:78::/48"))
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with etcd gone: %v, want CNI code 50", err)
	}
}

func TestCLI(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "ipamd ") {
		t.Errorf("version: %v %q", err, out.String())
	}
	if err := run([]string{"bogus"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown command: %v", err)
	}
	if err := run([]string{"serve", "--log-format", "xml"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Errorf("bad log format: %v", err)
	}
}

// TestCLIReclaimAndRelease drives the admin commands against a real ipamd:
// leases lists an attachment, gc releases the one whose netns is gone (and
// only that one), release frees a chosen one.
func TestCLIReclaimAndRelease(t *testing.T) {
	dir := shortDir(t)
	d := startIpamd(t, dir, "--gc-interval", "0")
	ctx := context.Background()
	cli := ipamapi.NewClient(d.socket)
	alive := filepath.Join(dir, "netns-alive")
	gone := filepath.Join(dir, "netns-gone")
	for _, p := range []string{alive, gone} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for cid, netns := range map[string]string{"alive": alive, "gone": gone, "manual": alive} {
		req := addReq("cli", cid, "2001:db8:79::/48")
		req.Netns = netns
		if _, err := cli.Add(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(gone)

	runCLI := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(append(args, "--socket", d.socket), &out, &errOut); err != nil {
			t.Fatalf("ipamd %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String()
	}
	if out := runCLI("leases", "--network", "cli"); strings.Count(out, "2001:db8:79::") != 3 {
		t.Errorf("leases shows %q, want 3 attachments", out)
	}
	if out := runCLI("status"); !strings.Contains(out, "etcd:    ok") || !strings.Contains(out, "test-node") {
		t.Errorf("status = %q", out)
	}
	if out := runCLI("gc", "--grace", "1h"); !strings.Contains(out, "released 0") {
		t.Errorf("gc within grace = %q, want nothing released", out)
	}
	if out := runCLI("gc", "-o", "json"); !strings.Contains(out, `"containerID": "gone"`) || strings.Contains(out, `"alive"`) {
		t.Errorf("gc = %q, want only the attachment whose netns is gone", out)
	}
	if out := runCLI("release", "--network", "cli", "--container", "manual"); !strings.Contains(out, "released 2001:db8:79::") {
		t.Errorf("release = %q", out)
	}
	ls, err := cli.Leases(ctx, "cli")
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].ContainerID != "alive" {
		t.Errorf("leases after gc and release = %+v, want only alive", ls)
	}
	if out := runCLI("pools"); !strings.Contains(out, "2001:db8:79::/48 blockSize 64") {
		t.Errorf("pools = %q", out)
	}
	if out := runCLI("blocks", "-o", "json"); !strings.Contains(out, `"inUse": 1`) {
		t.Errorf("blocks = %q", out)
	}
	if out := runCLI("check"); !strings.Contains(out, "consistent") {
		t.Errorf("check = %q", out)
	}
	checktest.AssertClean(t, cli)
}

func TestMetrics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := startIpamd(t, shortDir(t), "--metrics-addr", addr)
	ctx := context.Background()
	cli := ipamapi.NewClient(d.socket)
	if _, err := cli.Add(ctx, addReq("m", "c1", "2001:db8:7a::/48")); err != nil {
		t.Fatal(err)
	}
	bad := addReq("m", "c2", "2001:db8:7a::/48")
	bad.Config = []byte(`{"name":"m","ipam":{"ranges":[[{"subnet":"2001:db8:7a::/48"}]]},"runtimeConfig":{"ips":["2001:db8:99::1"]}}`)
	if _, err := cli.Add(ctx, bad); err == nil {
		t.Fatal("ADD of an address outside the pool succeeded")
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`v6cni_ipamd_addresses_in_use{network="m",node="test-node"} 1`,
		`v6cni_ipamd_blocks{network="m",node="test-node"} 1`,
		`v6cni_ipamd_pool_size{network="m"} 1.2089258196146292e+24`,
		`v6cni_ipamd_requests_total{code="0",verb="add"} 1`,
		`v6cni_ipamd_requests_total{code="7",verb="add"} 1`,
		`v6cni_ipamd_allocation_failures_total{reason="invalid_config"} 1`,
		`v6cni_ipamd_request_duration_seconds_count{verb="add"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

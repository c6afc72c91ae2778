package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/pkg/link"
)

// failBridgeStep puts a non-bridge link where e's bridge should be: ADD
// then fails after IPAM answered, and must roll back.
func (e *testEnv) failBridgeStep(t *testing.T) {
	t.Helper()
	if err := e.inHost(t, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: e.bridge, TxQLen: -1}, PeerName: e.bridge + "p"})
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAddRollbackFailureReported: when the rollback of a failed ADD fails
// (here IPAM DEL, so the lease stays), the runtime's error says both what
// failed and what was left, with the ADD's own code, and the config's
// logFile has it.
func TestAddRollbackFailureReported(t *testing.T) {
	e := setup(t)
	e.failBridgeStep(t)
	t.Setenv("FAKE_IPAM_DEL_FAIL", "1")
	logFile := filepath.Join(t.TempDir(), "cni.log")
	const containerID = "rb1f"
	args := e.args(containerID, e.conf("1.1.0", fmt.Sprintf(`,"logFile":%q`, logFile)))
	_, err := e.add(t, args)
	if err == nil {
		t.Fatal("ADD succeeded over a non-bridge link")
	}
	for _, want := range []string{e.bridge, "rollback failed", "IPAM fake-ipam DEL", "fake ipam: DEL failed, lease kept"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ADD err = %q, want it to contain %q", err, want)
		}
	}
	// The code is the ADD's (7: the bridge named is another kind of
	// link), not the failed DEL's 11, which would make the runtime retry
	// the ADD.
	if code := cniCode(t, err); code != types.ErrInvalidNetworkConfig {
		t.Errorf("ADD code %d, want the ADD's own %d", code, types.ErrInvalidNetworkConfig)
	}
	for _, want := range []string{"bridge: ", "is a veth, not a bridge"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ADD err = %q, want it to contain %q", err, want)
		}
	}
	if calls := e.ipamCalls(t); !strings.Contains(calls, "DEL "+containerID) {
		t.Errorf("IPAM calls %q: want a DEL", calls)
	}
	e.noAttachmentLeft(t, containerID, "a failed ADD whose IPAM DEL failed")
	log, rerr := os.ReadFile(logFile)
	if rerr != nil {
		t.Fatalf("logFile: %v", rerr)
	}
	if !strings.Contains(string(log), `bridge-v6 ADD: network "v6net" container "rb1f"`) ||
		!strings.Contains(string(log), "fake ipam: DEL failed, lease kept") {
		t.Errorf("logFile = %q, want the ADD and its rollback failure", log)
	}
}

// TestWithAlso: the rollback's failure is added to the message, and the
// code the runtime gets (through skel, as the binary answers) is the
// ADD's.
func TestWithAlso(t *testing.T) {
	also := types.NewError(types.ErrTryAgainLater, "ipamd unreachable", "")
	for _, tc := range []struct {
		name     string
		err      error
		wantCode uint
		wantMsg  string
	}{
		{"plain", errors.New("bridge x: not a bridge"), types.ErrInternal, "bridge x: not a bridge; rollback failed: ipamd unreachable"},
		{"coded", types.NewError(types.ErrInvalidNetworkConfig, "bad", "d"), types.ErrInvalidNetworkConfig, "bad; rollback failed: ipamd unreachable"},
		{"wrapped coded", fmt.Errorf("ctx: %w", types.NewError(types.ErrTryAgainLater, "etcd slow", "")), types.ErrTryAgainLater, "etcd slow; rollback failed: ipamd unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := withAlso(tc.err, "rollback failed", also)
			e := asSkel(got)
			if e.Code != tc.wantCode || e.Msg != tc.wantMsg {
				t.Errorf("runtime sees code %d %q, want %d %q", e.Code, e.Msg, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

// asSkel is the CNI error skel prints for err (skel's rule: the first
// *types.Error in the chain, else 999 with the message).
func asSkel(err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

var (
	ipamV6Once sync.Once
	ipamV6Dir  string // removed by TestMain
	ipamV6Bin  string
	ipamV6Err  error
)

// ipamV6Binary builds the ipam-v6 plugin once per test run.
func ipamV6Binary(t *testing.T) string {
	t.Helper()
	ipamV6Once.Do(func() {
		dir, err := os.MkdirTemp("", "ipam-v6-test-")
		if err != nil {
			ipamV6Err = err
			return
		}
		ipamV6Dir = dir
		ipamV6Bin = filepath.Join(dir, "ipam-v6")
		if out, err := exec.Command("go", "build", "-o", ipamV6Bin, "../ipam-v6").CombinedOutput(); err != nil {
			ipamV6Err = fmt.Errorf("build ipam-v6: %v\n%s", err, out)
		}
	})
	if ipamV6Err != nil {
		t.Fatal(ipamV6Err)
	}
	return ipamV6Bin
}

var logTime = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ `)

// TestInProcessIPAMLogFile: for ipam-v6, which bridge-v6 runs in process,
// a failed IPAM verb writes to the config's logFile what the exec'd
// ipam-v6 writes there (here ipamd is not running: ADD and DEL fail).
func TestInProcessIPAMLogFile(t *testing.T) {
	e := setup(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "no-ipamd.sock")
	confFor := func(logFile string) []byte {
		return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"v6log","type":"bridge-v6","bridge":%q,"logFile":%q,`+
			`"ipam":{"type":"ipam-v6","socket":%q,"ranges":[[{"subnet":"2001:db8:10a::/48"}]]}}`, e.bridge, logFile, socket))
	}
	const containerID = "logf1"
	inProcess := filepath.Join(dir, "bridge.log")
	args := e.args(containerID, confFor(inProcess))
	_, addErr := e.add(t, args)
	if addErr == nil {
		t.Fatal("ADD succeeded without ipamd")
	}
	if code := cniCode(t, addErr); code != types.ErrTryAgainLater {
		t.Errorf("ADD code %d, want %d (ipamd unreachable)", code, types.ErrTryAgainLater)
	}
	e.noAttachmentLeft(t, containerID, "an ADD without ipamd")
	if err := e.del(t, args); err == nil {
		t.Fatal("DEL succeeded without ipamd")
	}

	// The same two calls to the exec'd plugin, with its own logFile.
	execd := filepath.Join(dir, "ipam-v6.log")
	bin := ipamV6Binary(t)
	for _, verb := range []string{"ADD", "DEL"} {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "CNI_COMMAND="+verb, "CNI_CONTAINERID="+containerID, "CNI_IFNAME=eth0",
			"CNI_NETNS="+args.Netns, "CNI_PATH=/nonexistent")
		cmd.Stdin = bytes.NewReader(confFor(execd))
		if out, err := cmd.Output(); err == nil {
			t.Fatalf("exec'd ipam-v6 %s succeeded without ipamd: %s", verb, out)
		}
	}
	want := readLog(t, execd, "")
	got := readLog(t, inProcess, execd)
	if len(strings.Split(want, "\n")) != 3 {
		t.Fatalf("exec'd ipam-v6 logged %q, want an ADD and a DEL line", want)
	}
	if got != want {
		t.Errorf("bridge-v6's in-process IPAM logged\n%s\nwant what ipam-v6 logs:\n%s", got, want)
	}
	for _, verb := range []string{"ADD", "DEL"} {
		if w := fmt.Sprintf(`ipam-v6 %s: network "v6log" container %q ifname "eth0": `, verb, containerID); !strings.Contains(got, w) {
			t.Errorf("logFile %q lacks %q", got, w)
		}
	}
}

// readLog returns the file without the lines' timestamps, and with the
// name of the other log file (in the config, hence in error messages)
// replaced by this one's.
func readLog(t *testing.T, path, other string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("logFile: %v", err)
	}
	s := logTime.ReplaceAllString(string(b), "")
	if other != "" {
		s = strings.ReplaceAll(s, path, other)
	}
	return s
}

// TestDelReportsBothFailures: when IPAM DEL and the kernel part of DEL
// both fail, the runtime gets IPAM's code and both failures (the kernel's
// was dropped). The kernel part fails here because nft is not installed
// (not on PATH) while macspoofchk is on.
func TestDelReportsBothFailures(t *testing.T) {
	e := setup(t)
	t.Setenv("FAKE_IPAM_DEL_FAIL", "1")
	// PATH (testutils' CNI_PATH) with the fake IPAM and what its script
	// runs, and no nft.
	dir := filepath.Dir(e.log)
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(cat, filepath.Join(dir, "cat")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	args := e.args("delboth", e.conf("1.1.0", `,"macspoofchk":true`))
	err = e.del(t, args)
	if err == nil {
		t.Fatal("DEL succeeded")
	}
	if code := cniCode(t, err); code != types.ErrTryAgainLater {
		t.Errorf("DEL code %d, want IPAM's %d", code, types.ErrTryAgainLater)
	}
	for _, want := range []string{"fake ipam: DEL failed, lease kept", "remove MAC spoof check of " + link.HostVethName("delboth", "eth0")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("DEL err = %q, want it to contain %q", err, want)
		}
	}
}

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	// cnitool is built from the module cache by TestInstalledNodeWithCnitool;
	// this keeps its dependencies in go.sum.
	_ "github.com/containernetworking/cni/cnitool/cmd"
)

// TestInstalledNodeWithCnitool is what an operator does on a fresh node:
// `make install` (here into a DESTDIR), start the installed ipamd with the
// installed config, and attach a network namespace with cnitool through
// the installed plugins and conflist. systemd itself is not started (PID 1
// here is not systemd): ipamd runs as the unit's ExecStart would run it,
// with the socket and data dir moved to the test's directory.
func TestInstalledNodeWithCnitool(t *testing.T) {
	dest := t.TempDir()
	out, err := exec.CommandContext(testCtx(t), "make", "-C", repoRoot, "install", "DESTDIR="+dest, "CONFLIST=1").CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/ipamd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/ipamd serve --config /etc/v6cni/ipamd.yaml") {
		t.Errorf("installed unit's ExecStart is not the installed ipamd with the installed config:\n%s", unit)
	}

	// Flags win over the file: the socket and data dir of the test, and a
	// metrics port of the kernel's choice.
	d := startIpamdWith(t, filepath.Join(dest, "usr/local/bin/ipamd"),
		"--config", filepath.Join(dest, "etc/v6cni/ipamd.yaml"), "--metrics-addr", "[::1]:0")

	// The installed conflist, pointed at this ipamd and a bridge of its own.
	raw, err := os.ReadFile(filepath.Join(dest, "etc/cni/net.d/10-v6net.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	plugin := list["plugins"].([]any)[0].(map[string]any)
	bridge := newBridgeName(t)
	plugin["bridge"] = bridge
	plugin["ipam"].(map[string]any)["socket"] = d.socket
	plugin["ipam"].(map[string]any)["ranges"] = []any{[]any{map[string]any{"subnet": randomSubnet6(t).String()}}}
	netconf := t.TempDir()
	if err := os.WriteFile(filepath.Join(netconf, "10-v6net.conflist"), mustJSON(t, list), 0o644); err != nil {
		t.Fatal(err)
	}

	cnitool := filepath.Join(t.TempDir(), "cnitool")
	build := exec.CommandContext(testCtx(t), "go", "build", "-o", cnitool, "github.com/containernetworking/cni/cnitool")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cnitool: %v\n%s", err, out)
	}
	netns := newNetns(t)
	run := func(verb string) []byte {
		t.Helper()
		cmd := exec.CommandContext(testCtx(t), cnitool, verb, list["name"].(string), netns.Path())
		cmd.Env = append(os.Environ(), "NETCONFPATH="+netconf, "CNI_PATH="+filepath.Join(dest, "opt/cni/bin"),
			"CNI_CONTAINERID=installed-"+randomHex(t, 4), "CNI_CACHE_DIR="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("cnitool %s: %v\n%s%s", verb, err, out, stderr)
		}
		return out
	}
	var res current.Result
	if err := json.Unmarshal(run("add"), &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("cnitool add result: %v %+v", err, res)
	}
	st, err := linkIn(t, netns, "eth0")
	if err != nil || len(st.Addrs) != 1 || st.Addrs[0] != res.IPs[0].Address.String() {
		t.Fatalf("eth0 = %+v (%v), want %s", st, err, res.IPs[0].Address.String())
	}
	requirePing(t, netns, res.IPs[0].Gateway)
	run("del")
	d.requireNoLeases(t)
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
}

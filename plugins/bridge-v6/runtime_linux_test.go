package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/link"
)

// execPlugin runs the real binary as a runtime does (config on stdin,
// CNI_* in the environment) in the host netns; it returns stdout.
func (e *testEnv) execPlugin(t *testing.T, bin, command, containerID, netnsPath string, conf []byte) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+netnsPath,
		"CNI_IFNAME=eth0",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default",
		"CNI_PATH="+os.Getenv("PATH"),
	)
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := e.host.Do(func(ns.NetNS) error { return cmd.Run() })
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s %s", command, containerID, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// TestRuntimeAcrossSpecVersions drives the binary as containerd, CRI-O and
// podman do: VERSION first, 64-hex container IDs, CNI_ARGS with
// IgnoreUnknown and K8S_*, results at the config's version, CHECK (0.4.0
// and later) and DEL with prevResult.
func TestRuntimeAcrossSpecVersions(t *testing.T) {
	e := setup(t)
	bin := pluginBinary(t)
	for i, ver := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			containerID := strings.Repeat(fmt.Sprintf("%x", 10+i), 64)
			conf := e.conf(ver, "")
			out, err := e.execPlugin(t, bin, "VERSION", "", "", conf)
			if err != nil {
				t.Fatal(err)
			}
			var vi struct {
				CNIVersion        string   `json:"cniVersion"`
				SupportedVersions []string `json:"supportedVersions"`
			}
			if err := json.Unmarshal(out, &vi); err != nil {
				t.Fatalf("VERSION output %s: %v", out, err)
			}
			for _, want := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
				if !slices.Contains(vi.SupportedVersions, want) {
					t.Errorf("VERSION lacks %s: %v", want, vi.SupportedVersions)
				}
			}

			raw, err := e.execPlugin(t, bin, "ADD", containerID, e.cont.Path(), conf)
			if err != nil {
				t.Fatal(err)
			}
			var versioned struct {
				CNIVersion string `json:"cniVersion"`
			}
			if err := json.Unmarshal(raw, &versioned); err != nil || versioned.CNIVersion != ver {
				t.Fatalf("result cniVersion = %q (err %v), want %q: %s", versioned.CNIVersion, err, ver, raw)
			}
			res := mustResult(t, ver, raw)
			if len(res.IPs) != 2 || len(res.Interfaces) != 3 {
				t.Errorf("result %s", raw)
			}

			withPrev := e.conf(ver, `,"prevResult":`+string(raw))
			if ver != "0.3.0" && ver != "0.3.1" {
				if _, err := e.execPlugin(t, bin, "CHECK", containerID, e.cont.Path(), withPrev); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			delConf := conf
			if ver != "0.3.0" && ver != "0.3.1" {
				delConf = withPrev
			}
			if _, err := e.execPlugin(t, bin, "DEL", containerID, e.cont.Path(), delConf); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			_ = e.inHost(t, func() error {
				if ok, _ := link.LinkExists(link.HostVethName(containerID, "eth0")); ok {
					t.Error("host veth left after DEL")
				}
				return nil
			})
		})
	}
}

// seqIPAM answers ADD with an address derived from the container ID
// ("race<n>"), so concurrent ADDs get distinct addresses.
const seqIPAM = `#!/bin/sh
cat > /dev/null
case "$CNI_COMMAND" in
ADD)
	n=${CNI_CONTAINERID#race}
	printf '{"cniVersion":"1.0.0","ips":[{"address":"2001:db8:cafe:3::%x/64","gateway":"2001:db8:cafe:3::1"}]}' $((n + 16)) ;;
VERSION)
	echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
esac
exit 0
`

// TestConcurrentAddsOnNewBridge execs 20 ADDs at once, racing to create the
// same new bridge; all succeed, and after 20 concurrent DELs no veth is
// left.
func TestConcurrentAddsOnNewBridge(t *testing.T) {
	e := setup(t)
	bin := pluginBinary(t)
	dir := filepath.Dir(e.log)
	if err := os.WriteFile(filepath.Join(dir, "seq-ipam"), []byte(seqIPAM), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"v6race","type":"bridge-v6","bridge":%q,"isDefaultGateway":true,"ipam":{"type":"seq-ipam"}}`, e.bridge))
	const n = 20
	netns := make([]ns.NetNS, n)
	for i := range n {
		netns[i] = linktest.NewNS(t)
	}
	run := func(command string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				_, errs[i] = e.execPlugin(t, bin, command, fmt.Sprintf("race%d", i), netns[i].Path(), conf)
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s #%d: %v", command, i, err)
			}
		}
	}
	run("ADD")
	if t.Failed() {
		t.FailNow()
	}
	ports := func() []string {
		var names []string
		_ = e.inHost(t, func() error {
			links, err := netlink.LinkList()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range links {
				if _, ok := l.(*netlink.Veth); ok {
					names = append(names, l.Attrs().Name)
				}
			}
			return nil
		})
		return names
	}
	if got := ports(); len(got) != n {
		t.Errorf("%d veths after %d ADDs: %v", len(got), n, got)
	}
	run("DEL")
	if got := ports(); len(got) != 0 {
		t.Errorf("veths left after DEL of all: %v", got)
	}
}

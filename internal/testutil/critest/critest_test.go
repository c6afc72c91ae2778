package critest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestPodWithReferencePlugins runs a pod under a private containerd with
// Debian's bridge + host-local, and checks that Stop leaves nothing: no
// mount under its directory, no pod netns, no shim; the bridge is made in
// containerd's netns, not the host's.
func TestPodWithReferencePlugins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("critest needs root: it runs containerd and pods")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	bridge := "crit" + hex.EncodeToString(b)
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"crit","plugins":[{"type":"bridge","bridge":%q,
"isGateway":true,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"fd00:c71::/64"}]]}}]}`,
		bridge, t.TempDir())
	c := Start(t, Options{CNIBinDirs: []string{"/usr/lib/cni"}, ConfList: []byte(conflist), Netns: NewNetns(t)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := c.RunPod(ctx, PodConfig{Name: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.InspectPod(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if pod.State != "SANDBOX_READY" || len(pod.IPs) != 1 || !strings.HasPrefix(pod.IPs[0], "fd00:c71::") || pod.Netns == "" {
		t.Fatalf("pod %s: state %s, addresses %v, netns %q; want ready, one address in fd00:c71::/64, a netns", id, pod.State, pod.IPs, pod.Netns)
	}
	if _, err := netlink.LinkByName(bridge); err == nil {
		t.Errorf("bridge %s in the host's netns; want it in containerd's", bridge)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pod.Netns); err == nil {
		t.Errorf("pod netns %s left after Stop", pod.Netns)
	}
	if shims := c.shims(); len(shims) > 0 {
		t.Errorf("shims %v left after Stop", shims)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory" + c.cgroupParent()); err == nil {
		t.Errorf("cgroup %s left after Stop", c.cgroupParent())
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), c.Dir+"/") {
		t.Errorf("mounts under %s left after Stop", c.Dir)
	}
}

func TestCNISetupTimes(t *testing.T) {
	log := `time="2026-12-06T04:15:37.100000000Z" level=debug msg="begin cni setup" podsandboxid=aaa
time="2026-12-06T04:15:37.150000000Z" level=info msg="something else" podsandboxid=aaa
time="2026-12-06T04:15:37.200000000Z" level=debug msg="begin cni setup" podsandboxid=bbb
time="2026-12-06T04:15:37.250000000Z" level=debug msg="cni result: {\"Interfaces\":{}}" podsandboxid=aaa
time="2026-12-06T04:15:37.500000000Z" level=debug msg="cni result: {}" podsandboxid=bbb
time="2026-12-06T04:15:38.000000000Z" level=debug msg="cni result: {}" podsandboxid=ccc
`
	path := t.TempDir() + "/containerd.log"
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := CNISetupTimes(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{"aaa": 150 * time.Millisecond, "bbb": 300 * time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for id, d := range want {
		if got[id] != d {
			t.Errorf("%s: %v, want %v", id, got[id], d)
		}
	}
}

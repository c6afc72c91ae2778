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
// mount under its directory, no pod netns, no shim.
func TestPodWithReferencePlugins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("critest needs root: it runs containerd and pods")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	bridge := "crit" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(bridge); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"crit","plugins":[{"type":"bridge","bridge":%q,
"isGateway":true,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"fd00:c71::/64"}]]}}]}`,
		bridge, t.TempDir())
	c := Start(t, Options{CNIBinDirs: []string{"/usr/lib/cni"}, ConfList: []byte(conflist)})
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
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pod.Netns); err == nil {
		t.Errorf("pod netns %s left after Stop", pod.Netns)
	}
	if shims := c.shims(); len(shims) > 0 {
		t.Errorf("shims %v left after Stop", shims)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), c.Dir+"/") {
		t.Errorf("mounts under %s left after Stop", c.Dir)
	}
}

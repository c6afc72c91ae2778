package cri

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/critest"
)

// TestPods runs two pods per network through containerd's CRI: each pod's
// addresses (crictl inspectp) are exactly ipamd's leases for its sandbox,
// the pods reach each other in every family, and stopp + rmp releases
// the leases.
func TestPods(t *testing.T) {
	for _, tc := range []struct {
		name    string
		subnets []string
	}{
		{"ipv6-only", []string{"2001:db8:c1::/48"}},
		{"dual-stack", []string{"2001:db8:c2::/48", "10.231.0.0/16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startIpamd(t)
			n := newNetwork(t, tc.subnets...)
			c := startContainerd(t, n.conflist(t, d.socket))
			ctx := testCtx(t)

			var ids []string
			for _, name := range []string{"a", "b"} {
				id, err := c.RunPod(ctx, critest.PodConfig{Name: tc.name + "-" + name})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			addrs := map[string][]netip.Addr{}
			for _, id := range ids {
				got, want := podAddrs(t, c, id), d.leasesOf(t, id)
				if len(got) != len(tc.subnets) || !slices.Equal(got, want) {
					t.Fatalf("pod %s: crictl inspectp addresses %v, ipamd's leases %v; want equal, one per subnet of %v", id, got, want, tc.subnets)
				}
				for _, a := range got {
					if !slices.ContainsFunc(tc.subnets, func(s string) bool { return netip.MustParsePrefix(s).Contains(a) }) {
						t.Fatalf("pod %s: address %s in none of %v", id, a, tc.subnets)
					}
				}
				addrs[id] = got
			}
			// Every address of b from a, and back.
			for i, id := range ids {
				for _, dst := range addrs[ids[1-i]] {
					ping(t, c, id, dst)
				}
			}
			for _, id := range ids {
				if err := c.RemovePod(ctx, id); err != nil {
					t.Fatal(err)
				}
				if ls := d.leasesOf(t, id); len(ls) != 0 {
					t.Fatalf("pod %s stopped and removed: ipamd still holds %v", id, ls)
				}
			}
			if ls := d.leases(t); len(ls) != 0 {
				t.Fatalf("every pod removed: ipamd still holds %v", ls)
			}
		})
	}
}

// TestNetworkReadyFollowsIpamd: containerd 2 calls the conflist's STATUS
// (cniVersion 1.1.0), so while ipamd is down NetworkReady is false with
// v6cni's message, and true again once ipamd is back.
func TestNetworkReadyFollowsIpamd(t *testing.T) {
	d := startIpamd(t)
	n := newNetwork(t, "2001:db8:c3::/48")
	c := startContainerd(t, n.conflist(t, d.socket))
	waitNetworkReady(t, c, true)

	if err := d.terminate(); err != nil {
		t.Fatal(err)
	}
	cond := waitNetworkReady(t, c, false)
	// The plugin's own words reach the runtime: it names ipamd.
	if !strings.Contains(cond.Message, "ipamd") {
		t.Errorf("NetworkReady false with message %q; want v6cni's, naming ipamd", cond.Message)
	}
	t.Logf("ipamd down: NetworkReady false: %s: %s", cond.Reason, cond.Message)

	d.start(t)
	waitNetworkReady(t, c, true)
	id, err := c.RunPod(testCtx(t), critest.PodConfig{Name: "after-restart"})
	if err != nil {
		t.Fatalf("runp after ipamd is back: %v", err)
	}
	if got, want := podAddrs(t, c, id), d.leasesOf(t, id); len(got) != 1 || !slices.Equal(got, want) {
		t.Fatalf("pod %s: addresses %v, ipamd's leases %v", id, got, want)
	}
}

// TestParallelPodsUnique runs pods in parallel: every pod has its own
// addresses (no duplicates), all of them ipamd's, and removing them all
// leaves no lease.
func TestParallelPodsUnique(t *testing.T) {
	d := startIpamd(t)
	n := newNetwork(t, "2001:db8:c4::/48", "10.232.0.0/16")
	c := startContainerd(t, n.conflist(t, d.socket))
	ctx := testCtx(t)

	const pods = 6
	ids := make([]string, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() {
			ids[i], errs[i] = c.RunPod(ctx, critest.PodConfig{Name: "par-" + string(rune('a'+i))})
		})
	}
	wg.Wait()
	owner := map[netip.Addr]string{}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		got, want := podAddrs(t, c, id), d.leasesOf(t, id)
		if len(got) != 2 || !slices.Equal(got, want) {
			t.Fatalf("pod %s: addresses %v, ipamd's leases %v", id, got, want)
		}
		for _, a := range got {
			if other, dup := owner[a]; dup {
				t.Fatalf("address %s of both %s and %s", a, other, id)
			}
			owner[a] = id
		}
	}
	for _, id := range ids {
		if err := c.RemovePod(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if ls := d.leases(t); len(ls) != 0 {
		t.Fatalf("every pod removed: ipamd still holds %v", ls)
	}
}

// TestPoolExhaustedNotReady: a pool with room for two pods; with both
// running, STATUS says no address is left and NetworkReady turns false;
// removing one makes it true again.
func TestPoolExhaustedNotReady(t *testing.T) {
	d := startIpamd(t)
	// A /126: the Subnet-Router anycast, the gateway, two pods.
	n := newNetwork(t, "2001:db8:c5::/126")
	c := startContainerd(t, n.conflist(t, d.socket))
	ctx := testCtx(t)
	waitNetworkReady(t, c, true)

	var ids []string
	for _, name := range []string{"full-a", "full-b"} {
		id, err := c.RunPod(ctx, critest.PodConfig{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	cond := waitNetworkReady(t, c, false)
	if !strings.Contains(cond.Message, "no address available") {
		t.Errorf("NetworkReady false with message %q; want v6cni's, saying the pool is full", cond.Message)
	}
	t.Logf("pool full: NetworkReady false: %s: %s", cond.Reason, cond.Message)
	if _, err := c.RunPod(ctx, critest.PodConfig{Name: "full-c"}); err == nil {
		t.Fatal("runp of a third pod in a full /126 succeeded")
	}
	if err := c.RemovePod(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	waitNetworkReady(t, c, true)
}

// TestIpamdKilledDuringParallelPods kills ipamd with SIGKILL while pods are
// being created in parallel and starts it again: the pods that run have
// distinct addresses, each exactly its ipamd leases; once every pod is
// removed and ipamd's reclaim (ipamd gc) has run, nothing is leaked.
func TestIpamdKilledDuringParallelPods(t *testing.T) {
	d := startIpamd(t)
	n := newNetwork(t, "2001:db8:c6::/48", "10.234.0.0/16")
	c := startContainerd(t, n.conflist(t, d.socket))
	ctx := testCtx(t)

	const pods = 8
	ids := make([]string, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	var once sync.Once
	firstRan := make(chan struct{})
	for i := range pods {
		wg.Go(func() {
			ids[i], errs[i] = c.RunPod(ctx, critest.PodConfig{Name: "kill-" + string(rune('a'+i))})
			if errs[i] == nil {
				once.Do(func() { close(firstRan) })
			}
		})
	}
	// Kill when the first pod has run: the others are then somewhere in
	// their runp, before, in or after their ADD; which is up to the race.
	select {
	case <-firstRan:
	case <-ctx.Done():
		t.Fatal("no pod ran")
	}
	d.kill()
	d.start(t)
	wg.Wait()

	owner := map[netip.Addr]string{}
	ran := 0
	for i, id := range ids {
		if errs[i] != nil {
			// Allowed: its ADD met the dead ipamd.
			msg, _, _ := strings.Cut(errs[i].Error(), "\n")
			t.Logf("runp %d failed across the kill: %.300s", i, msg)
			continue
		}
		ran++
		got, want := podAddrs(t, c, id), d.leasesOf(t, id)
		if len(got) != 2 || !slices.Equal(got, want) {
			t.Fatalf("pod %s: addresses %v, ipamd's leases %v", id, got, want)
		}
		for _, a := range got {
			if other, dup := owner[a]; dup {
				t.Fatalf("address %s of both %s and %s", a, other, id)
			}
			owner[a] = id
		}
	}
	t.Logf("%d of %d pods ran across ipamd's SIGKILL", ran, pods)
	// Every sandbox, also those a failed runp left, goes: DEL runs for each.
	out, err := c.Crictl(ctx, "pods", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range strings.Fields(string(out)) {
		if err := c.RemovePod(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	d.gc(t)
	if ls := d.leases(t); len(ls) != 0 {
		t.Fatalf("every pod removed and ipamd gc run: ipamd still holds %v", ls)
	}
}

// TestStickyFollowsPodName: with "sticky", a pod removed and created again
// under the same namespace and name (a new UID, as a StatefulSet's pod)
// gets its addresses back: containerd passes K8S_POD_NAMESPACE and
// K8S_POD_NAME in CNI_ARGS. Another name gets others.
func TestStickyFollowsPodName(t *testing.T) {
	d := startIpamd(t)
	n := newNetwork(t, "2001:db8:c7::/48", "10.235.0.0/16")
	n.sticky = true
	c := startContainerd(t, n.conflist(t, d.socket))
	ctx := testCtx(t)

	first, err := c.RunPod(ctx, critest.PodConfig{Name: "web-0", UID: "uid-1"})
	if err != nil {
		t.Fatal(err)
	}
	before := podAddrs(t, c, first)
	if len(before) != 2 {
		t.Fatalf("pod %s: addresses %v, want 2", first, before)
	}
	if err := c.RemovePod(ctx, first); err != nil {
		t.Fatal(err)
	}
	other, err := c.RunPod(ctx, critest.PodConfig{Name: "web-1", UID: "uid-2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range podAddrs(t, c, other) {
		if slices.Contains(before, a) {
			t.Fatalf("pod web-1 got %s, kept for web-0", a)
		}
	}
	again, err := c.RunPod(ctx, critest.PodConfig{Name: "web-0", UID: "uid-3"})
	if err != nil {
		t.Fatal(err)
	}
	if after := podAddrs(t, c, again); !slices.Equal(after, before) {
		t.Fatalf("web-0 created again: addresses %v, want its sticky %v", after, before)
	}
	if got, want := podAddrs(t, c, again), d.leasesOf(t, again); !slices.Equal(got, want) {
		t.Fatalf("pod %s: addresses %v, ipamd's leases %v", again, got, want)
	}
}

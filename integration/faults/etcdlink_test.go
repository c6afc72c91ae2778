package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
)

// TestEtcdLinkFaults puts ipamd's link to etcd through a delaying, lossy
// and then partitioned relay (see linkProxy for why not tc netem here).
// While the link is slow, ADDs succeed or answer a retryable code, always
// within the runtime's deadline; while it is partitioned every ADD answers a
// retryable code within the deadline; once it heals ADDs succeed again.
// Afterwards the runtime DELs everything (as it does after a failed ADD
// too); the key space is consistent and holds nothing of the network.
func TestEtcdLinkFaults(t *testing.T) {
	f := newFigures(t)
	// One member: the relay is then ipamd's only way to etcd.
	c := clustertest.Start(t, clustertest.Options{Members: 1, Nodes: 1})
	proxy := startLinkProxy(t, strings.TrimPrefix(c.Members[0].ClientURL, "http://"))
	n := c.Nodes[0]
	n.AppendArgs("--etcd-endpoints", proxy.URL())
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	const network = "faults-link"
	conf := netConf(t, network, "fd00:f1::/48")
	var made []string
	adds := func(phase string, k int, wantOK, wantRetry bool) {
		t.Helper()
		for i := range k {
			cid := fmt.Sprintf("%s-%d", phase, i)
			made = append(made, cid)
			code, d, err := call(f, "ADD "+phase, func(ctx context.Context) error {
				_, err := n.Client.Add(ctx, request(network, cid, conf))
				return err
			})
			t.Logf("%-10s ADD %-14s code %2d in %6s %v", phase, cid, code, d.Round(time.Millisecond), errOrEmpty(err))
			switch {
			case d > deadline:
				t.Errorf("%s: ADD %s answered after %s, past the %s deadline", phase, cid, d, deadline)
			case code == 0 && !wantOK:
				t.Errorf("%s: ADD %s succeeded, want a retryable code", phase, cid)
			case code != 0 && !retryable(code):
				t.Errorf("%s: ADD %s: code %d (%v), want success or 11/50", phase, cid, code, err)
			case code != 0 && !wantRetry:
				t.Errorf("%s: ADD %s failed: code %d (%v), want success", phase, cid, code, err)
			}
		}
	}

	adds("clean", 3, true, false)

	proxy.set(100*time.Millisecond, 0, false) // 200 ms round trip
	f.fault("delay 200ms rtt")
	adds("delay", 3, true, true)

	proxy.set(10*time.Millisecond, 0.3, false)
	f.fault("loss 30% (rto stalls)")
	adds("lossy", 3, true, true)

	proxy.set(0, 0, true)
	f.fault("partition")
	adds("partition", 3, false, true)

	proxy.set(0, 0, false)
	// Healed: the client reconnects within a few seconds; the first ADDs
	// may still see the old connection's backlog drain.
	healed := time.Now()
	for i := 0; ; i++ {
		cid := fmt.Sprintf("heal-%d", i)
		made = append(made, cid)
		code, d, err := call(f, "ADD heal", func(ctx context.Context) error {
			_, err := n.Client.Add(ctx, request(network, cid, conf))
			return err
		})
		t.Logf("%-10s ADD %-14s code %2d in %6s %v", "heal", cid, code, d.Round(time.Millisecond), errOrEmpty(err))
		if d > deadline || (code != 0 && !retryable(code)) {
			t.Errorf("heal: ADD %s: code %d in %s (%v)", cid, code, d, err)
		}
		if code == 0 {
			break
		}
		if time.Since(healed) > 30*time.Second {
			t.Fatalf("ADDs still fail 30s after the partition healed: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("healed: ADD succeeds %s after the link came back", time.Since(healed).Round(time.Millisecond))
	adds("after", 2, true, false)
	proxy.mu.Lock()
	t.Logf("relay: %d chunks, %d stalled as lost", proxy.chunks, proxy.stalls)
	proxy.mu.Unlock()

	// The runtime DELs every attachment it tried, failed ADDs included.
	for _, cid := range made {
		code, d, err := call(f, "DEL", func(ctx context.Context) error {
			return n.Client.Del(ctx, request(network, cid, conf))
		})
		if code != 0 || d > deadline {
			t.Errorf("DEL %s: code %d in %s (%v)", cid, code, d, err)
		}
	}
	checkClean(t, c, network, 0)
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

package faults

import (
	"context"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/internal/crashpoint"
	"github.com/v6cni/v6cni/internal/testutil/clustertest"
)

// TestKillAtEachStep kills ipamd with SIGKILL at each named step of an ADD
// and of a DEL (internal/crashpoint), restarts it as systemd would, and
// replays what a runtime does: the interrupted call answers a retryable
// code within the deadline, the runtime retries it, and the retry succeeds.
// A retried ADD that had already been written returns the same address;
// afterwards the key space is consistent, no address is held twice, and
// after the DELs nothing is held.
func TestKillAtEachStep(t *testing.T) {
	f := newFigures(t)
	c := clustertest.Start(t, clustertest.Options{Members: 1, Nodes: 1})
	n := c.Nodes[0]
	const network = "faults-crash"
	conf := netConf(t, network, "fd00:f2::/48")

	add := func(cid string) (*current.Result, uint, error) {
		var res *current.Result
		code, d, err := call(f, "ADD", func(ctx context.Context) error {
			var err error
			res, err = n.Client.Add(ctx, request(network, cid, conf))
			return err
		})
		if d > deadline {
			t.Errorf("ADD %s answered after %s", cid, d)
		}
		return res, code, err
	}
	del := func(cid string) (uint, error) {
		code, d, err := call(f, "DEL", func(ctx context.Context) error {
			return n.Client.Del(ctx, request(network, cid, conf))
		})
		if d > deadline {
			t.Errorf("DEL %s answered after %s", cid, d)
		}
		return code, err
	}
	// arm restarts ipamd with the crash point set (empty: none).
	arm := func(point string) {
		t.Helper()
		t.Setenv(crashpoint.Env, point)
		n.Kill()
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// crashed waits for the process to be gone and restarts it unarmed.
	recover := func(point string) {
		t.Helper()
		f.fault("kill -9 at " + point)
		arm("")
	}
	// A neighbour attachment made before each crash must survive it.
	if _, code, err := add("neighbour"); code != 0 {
		t.Fatalf("ADD neighbour: %v", err)
	}

	for _, tc := range []struct {
		point string
		del   bool // the crash is in the DEL
	}{
		{point: "add:after-reserve"},
		{point: "add:after-allocate"},
		{point: "del:after-handle", del: true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			cid := "c-" + strings.NewReplacer(":", "-").Replace(tc.point)
			if tc.del {
				if _, code, err := add(cid); code != 0 {
					t.Fatalf("ADD %s: %v", cid, err)
				}
			}
			arm(tc.point)
			var code uint
			var err error
			if tc.del {
				code, err = del(cid)
			} else {
				_, code, err = add(cid)
			}
			t.Logf("%s: interrupted call answered code %d: %v", tc.point, code, errOrEmpty(err))
			if !retryable(code) {
				t.Errorf("%s: interrupted call: code %d (%v), want 11 or 50", tc.point, code, err)
			}
			recover(tc.point)
			if !tc.del {
				// The runtime retries the ADD; a second retry must give the
				// same answer (the first one may be the write that landed).
				r1, code, err := add(cid)
				if code != 0 {
					t.Fatalf("%s: retried ADD: code %d: %v", tc.point, code, err)
				}
				r2, code, err := add(cid)
				if code != 0 || r1.IPs[0].Address.String() != r2.IPs[0].Address.String() {
					t.Fatalf("%s: repeated ADD gave %v (code %d, %v), first %v", tc.point, r2, code, err, r1.IPs)
				}
				checkClean(t, c, network, 2)
			}
			if code, err := del(cid); code != 0 {
				t.Fatalf("%s: DEL after restart: code %d: %v", tc.point, code, err)
			}
			checkClean(t, c, network, 1)
		})
	}
	if code, err := del("neighbour"); code != 0 {
		t.Fatalf("DEL neighbour: code %d: %v", code, err)
	}
	checkClean(t, c, network, 0)
}

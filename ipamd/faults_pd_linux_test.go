package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/crashpoint"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestFaultDHCPv6ServerFlap (issue 13, fault injection): the DHCPv6 server
// (a real Kea; T1 2 s, T2 4 s, valid 30 s) is stopped and started again and
// again around ipamd's renewals. ADDs on the delegated prefix go on
// throughout and are answered at once (the prefix is still valid while the
// server is away); after every flap the binding is renewed, not replaced:
// the same /56, and containers keep their addresses.
func TestFaultDHCPv6ServerFlap(t *testing.T) {
	l := newBGPLab(t)
	stopKea := l.startKea(t, 20, 30)
	dir := shortDir(t)
	cfg := l.config(t, dir)
	d := startIpamdIn(t, l.node, dir, "--config", cfg, "--pd-interface", "up0", "--pd-prefix-length", "56")
	cli := ipamapi.NewClient(d.socket)
	ctx := context.Background()
	waitFor(t, 20*time.Second, "a delegated prefix", func() bool {
		pd, err := cli.PD(ctx)
		return err == nil && len(pd.Prefixes) == 1
	})
	pd, _ := cli.PD(ctx)
	prefix := pd.Prefixes[0].Prefix
	var reqs int
	var slowest time.Duration
	add := func(cid string) string {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		r, err := cli.Add(cctx, pdReq("pdflap", 1, cid))
		took := time.Since(start)
		reqs++
		slowest = max(slowest, took)
		if err != nil || took > 10*time.Second {
			t.Fatalf("ADD %s with the DHCPv6 server flapping: %v in %s", cid, err, took)
		}
		return r.IPs[0].Address.String()
	}
	first := add("c0")
	const flaps = 4
	for i := range flaps {
		stopKea()
		// Past T1 and T2: ipamd's Renew and Rebind go unanswered.
		time.Sleep(5 * time.Second)
		add(fmt.Sprintf("down-%d", i))
		stopKea = l.startKea(t, 20, 30)
		// Renewed by the restarted server within a few retransmissions.
		renewed := time.Now()
		waitFor(t, 20*time.Second, fmt.Sprintf("flap %d: binding renewed", i), func() bool {
			p, err := cli.PD(ctx)
			return err == nil && len(p.Prefixes) == 1 && p.Prefixes[0].Prefix == prefix && validLeftOver(p.Prefixes[0], 26*time.Second)
		})
		if again := add("c0"); again != first {
			t.Fatalf("flap %d: c0 now has %s, had %s", i, again, first)
		}
		p, _ := cli.PD(ctx)
		t.Logf("flap %d: prefix %s kept (%s)", i, p.Prefixes[0].Prefix, time.Since(renewed).Round(time.Millisecond))
	}
	t.Logf("figures:\n  faults dhcpv6 server stopped %d\n  requests                     %d\n  codes                        all 0\n  slowest answer               %s",
		flaps, reqs, slowest.Round(time.Millisecond))
}

// validLeftOver reports whether p has more than d of its valid lifetime
// left: with valid 30 s and the server gone 5 s, only a fresh Reply does.
func validLeftOver(p ipamapi.PDPrefix, d time.Duration) bool {
	if p.ValidLeft == "infinite" {
		return true
	}
	left, err := time.ParseDuration(p.ValidLeft)
	return err == nil && left > d
}

// TestFaultPDRenewalCrash (issue 13, fault injection): ipamd is killed with
// SIGKILL during its first renewal, before and after it stores the renewed
// binding (internal/crashpoint), and started again: it renews the same
// binding (the same /56, the same container address) instead of asking for a
// new prefix, and answers ADDs at once.
func TestFaultPDRenewalCrash(t *testing.T) {
	l := newBGPLab(t)
	l.startKea(t, 20, 30)
	for _, point := range []string{"pd:before-save@2", "pd:after-save@2"} {
		t.Run(point, func(t *testing.T) {
			dir := shortDir(t)
			cfg := l.config(t, dir)
			flags := []string{"--config", cfg, "--pd-interface", "up0", "--pd-prefix-length", "56"}
			t.Setenv(crashpoint.Env, point)
			d := startIpamdIn(t, l.node, dir, flags...)
			cli := ipamapi.NewClient(d.socket)
			ctx := context.Background()
			var first string
			waitFor(t, 20*time.Second, "an address from the delegated prefix", func() bool {
				r, err := cli.Add(ctx, pdReq("pdcrash", 1, "c0"))
				if err == nil {
					first = r.IPs[0].Address.String()
				}
				return err == nil
			})
			pd, _ := cli.PD(ctx)
			prefix := pd.Prefixes[0].Prefix
			// T1 is 2 s: the renewal's Reply arrives and ipamd dies.
			select {
			case err := <-d.done:
				d.done <- err // for the Cleanup
				t.Logf("%s: ipamd died: %v", point, err)
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: ipamd not killed at its first renewal", point)
			}
			os.Unsetenv(crashpoint.Env)
			d = startIpamdIn(t, l.node, dir, flags...)
			cli = ipamapi.NewClient(d.socket)
			start := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := cli.Add(cctx, pdReq("pdcrash", 1, "c0"))
			cancel()
			if err != nil || r.IPs[0].Address.String() != first {
				t.Fatalf("%s: ADD after the restart: %v %v, want %s", point, r, err, first)
			}
			t.Logf("%s: ADD after restart answered in %s", point, time.Since(start).Round(time.Millisecond))
			waitFor(t, 20*time.Second, "the binding renewed after the restart", func() bool {
				p, err := cli.PD(ctx)
				return err == nil && len(p.Prefixes) == 1 && validLeftOver(p.Prefixes[0], 26*time.Second)
			})
			if p, _ := cli.PD(ctx); p.Prefixes[0].Prefix != prefix {
				t.Fatalf("%s: prefix %s after the restart, had %s: replaced, not renewed", point, p.Prefixes[0].Prefix, prefix)
			}
			d.stop(t)
		})
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestFaultBGPPeerFlap (issue 13, fault injection): the BGP session to a
// real BIRD 2 is torn down again and again — the router killed and
// restarted, the link taken down past the hold time and brought back —
// while ADDs and DELs go on. ADDs never wait for BGP (each answered within
// the runtime's 10 s deadline, success); after every flap the session comes
// back and BIRD has exactly the blocks ipamd holds: a block claimed while
// the peer was down is announced, a block released while it was down is
// not announced again. The figures are logged as a table.
func TestFaultBGPPeerFlap(t *testing.T) {
	l := newBGPLab(t)
	dir := shortDir(t)
	// Hold time 3 s: a dead link is noticed in seconds, not 90.
	cfg := filepath.Join(dir, "ipamd.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`gcInterval: 1s
blockGrace: 0s
bgp:
  asn: 65001
  routerID: 10.255.0.2
  peers:
    - address: %s
      asn: 65000
      holdTime: 3
`, l.routerAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A real router keeps its configured address while its link is down;
	// Linux drops IPv6 addresses on link down unless told not to.
	sh(t, "ip", "netns", "exec", l.router, "sysctl", "-qw", "net.ipv6.conf.down0.keep_addr_on_down=1")
	d := startIpamdIn(t, l.node, dir, "--config", cfg)
	cli := ipamapi.NewClient(d.socket)
	req := func(cid string) *ipamapi.Request {
		c := `{"cniVersion":"1.1.0","name":"flapnet","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:7f::/48","blockSize":126}]]}}`
		return &ipamapi.Request{Network: "flapnet", ContainerID: cid, IfName: "eth0", Config: []byte(c)}
	}
	var (
		reqs, fails int
		slowest     time.Duration
		faults      = map[string]int{}
		slowBack    time.Duration
	)
	do := func(op, cid string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		var err error
		if op == "ADD" {
			_, err = cli.Add(ctx, req(cid))
		} else {
			err = cli.Del(ctx, req(cid))
		}
		took := time.Since(start)
		reqs++
		slowest = max(slowest, took)
		if err != nil || took > 10*time.Second {
			fails++
			t.Errorf("%s %s with the peer flapping: %v in %s", op, cid, err, took)
		}
	}
	// held is the set of blocks ipamd owns, from its state.
	held := func() map[string]bool {
		st, err := cli.State(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, n := range st.Networks {
			for _, b := range n.Blocks {
				m[b.Block] = true
			}
		}
		return m
	}
	// converged: BIRD has every held block and none of the released ones.
	converged := func(released []string) bool {
		for b := range held() {
			if !l.hasRoute(b) {
				return false
			}
		}
		for _, b := range released {
			if l.hasRoute(b) {
				return false
			}
		}
		return true
	}
	// /126 blocks hold two containers each.
	for _, cid := range []string{"a0", "a1", "a2"} {
		do("ADD", cid)
	}
	waitFor(t, 30*time.Second, "routes at BIRD", func() bool { return converged(nil) })

	next := 3
	for round := range 4 {
		kind := "router killed"
		if round%2 == 1 {
			kind = "link down past hold time"
		}
		faults[kind]++
		if kind == "router killed" {
			l.stopBird()
		} else {
			sh(t, "ip", "-n", l.router, "link", "set", "down0", "down")
			// The hold timer (3 s) runs out: the session is down for ipamd.
			waitFor(t, 20*time.Second, "session down at ipamd", func() bool {
				st, err := cli.BGP(context.Background())
				return err == nil && len(st.Peers) == 1 && !st.Peers[0].Established
			})
		}
		// While it is down: a new block is claimed, the last one released.
		before := held()
		do("ADD", fmt.Sprintf("a%d", next))
		do("ADD", fmt.Sprintf("a%d", next+1))
		next += 2
		for b := range held() {
			before[b] = true
		}
		do("DEL", fmt.Sprintf("a%d", next-1))
		var released []string
		time.Sleep(1500 * time.Millisecond) // gcInterval 1s: empty blocks go back
		now := held()
		for b := range before {
			if !now[b] {
				released = append(released, b)
			}
		}
		// Restore.
		restored := time.Now()
		if kind == "router killed" {
			l.startBird(t)
		} else {
			sh(t, "ip", "-n", l.router, "link", "set", "down0", "up")
		}
		took := waitFor(t, 60*time.Second, fmt.Sprintf("round %d (%s): BIRD has exactly ipamd's blocks", round, kind),
			func() bool { return converged(released) })
		slowBack = max(slowBack, took)
		t.Logf("round %d (%s): %d blocks held, %d released while down, routes back in %s",
			round, kind, len(now), len(released), time.Since(restored).Round(time.Millisecond))
	}
	t.Logf("figures:\n  faults router killed            %d\n  faults link down past hold     %d\n  requests                       %d\n  failed                         %d\n  slowest answer                 %s\n  slowest routes back            %s",
		faults["router killed"], faults["link down past hold time"], reqs, fails, slowest.Round(time.Millisecond), slowBack.Round(time.Millisecond))
}

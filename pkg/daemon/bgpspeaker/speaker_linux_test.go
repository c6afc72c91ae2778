package bgpspeaker

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/wait"
)

var (
	pfxA = netip.MustParsePrefix("2001:db8:100::/64")
	pfxB = netip.MustParsePrefix("2001:db8:101::/64")
	pfxC = netip.MustParsePrefix("10.100.0.0/24")
)

var routerKinds = []string{"bird", "gobgpd"}

// waitRoutes polls the router until every prefix in want is there with
// that next hop and no prefix in absent is; it returns how long that took.
func waitRoutes(t *testing.T, r router, timeout time.Duration, want map[netip.Prefix]netip.Addr, absent ...netip.Prefix) (map[netip.Prefix]peerRoute, time.Duration) {
	t.Helper()
	start := time.Now()
	var got map[netip.Prefix]peerRoute
	var lastErr error
	ok := wait.Poll(timeout, 5*time.Millisecond, func() bool {
		got, lastErr = r.routes()
		if lastErr != nil {
			return false
		}
		for p, nh := range want {
			if got[p].NextHop != nh {
				return false
			}
		}
		for _, p := range absent {
			if _, there := got[p]; there {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("router: after %s want %v, absent %v; have %+v (err %v)", timeout, want, absent, got, lastErr)
	}
	return got, time.Since(start)
}

func TestAnnounceAndWithdraw(t *testing.T) {
	requireRoot(t)
	for _, kind := range routerKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t)
			rt := newRouter(t, kind, tp.router)
			sp := startSpeaker(t, "s1", tp.speaker, speakerConfig(30, ""), []Route{{Prefix: pfxA}}, time.Minute)
			sp.waitEstablished(30 * time.Second)
			waitRoutes(t, rt, 30*time.Second, map[netip.Prefix]netip.Addr{pfxA: speakerAddr})

			// Time from SetRoutes to the route in the router's CLI.
			start := time.Now()
			sp.setRoutes(Route{Prefix: pfxA}, Route{Prefix: pfxB, Communities: []string{"65001:100"}}, Route{Prefix: pfxC})
			got, _ := waitRoutes(t, rt, 10*time.Second, map[netip.Prefix]netip.Addr{pfxA: speakerAddr, pfxB: speakerAddr, pfxC: speakerV4})
			t.Logf("%s: SetRoutes → IPv6 and IPv4 routes visible in the router's CLI: %s", kind, time.Since(start))
			if !slices.Contains(got[pfxB].Communities, "65001:100") {
				t.Errorf("%s: %s communities = %v, want 65001:100", kind, pfxB, got[pfxB].Communities)
			}
			if len(got[pfxA].Communities) != 0 {
				t.Errorf("%s: %s communities = %v, want none", kind, pfxA, got[pfxA].Communities)
			}

			// Idempotent: the same set again changes nothing.
			sp.setRoutes(Route{Prefix: pfxA}, Route{Prefix: pfxB, Communities: []string{"65001:100"}}, Route{Prefix: pfxC})

			start = time.Now()
			sp.setRoutes(Route{Prefix: pfxC})
			waitRoutes(t, rt, 10*time.Second, map[netip.Prefix]netip.Addr{pfxC: speakerV4}, pfxA, pfxB)
			t.Logf("%s: SetRoutes → withdrawal visible: %s", kind, time.Since(start))

			ps := sp.peers()
			if len(ps) != 1 || !ps[0].Established || ps[0].Address != routerAddr || ps[0].ASN != 65000 ||
				ps[0].State != "established" || ps[0].Since.IsZero() {
				t.Errorf("Peers() = %+v", ps)
			}
			if !wait.Poll(5*time.Second, 50*time.Millisecond, func() bool { ps = sp.peers(); return ps[0].PrefixesSent == 1 }) {
				t.Errorf("Peers()[0].PrefixesSent = %d, want 1", ps[0].PrefixesSent)
			}

			// Decommissioning: StopAndWithdraw sends a Cease, routes go at once.
			sp.stop("withdraw")
			waitRoutes(t, rt, 10*time.Second, nil, pfxC)
		})
	}
}

// TestPlannedRestartKeepsRoutes: Stop (graceful) then a new Speaker — the
// upgrade case. The routes kept must never leave the router's table; a
// route the new speaker no longer has is withdrawn by its End-of-RIB.
func TestPlannedRestartKeepsRoutes(t *testing.T) {
	requireRoot(t)
	for _, kind := range routerKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t)
			rt := newRouter(t, kind, tp.router)
			cfg := speakerConfig(60, "")
			old := startSpeaker(t, "old", tp.speaker, cfg, []Route{{Prefix: pfxA}, {Prefix: pfxB}, {Prefix: pfxC}}, time.Minute)
			old.waitEstablished(30 * time.Second)
			waitRoutes(t, rt, 30*time.Second, map[netip.Prefix]netip.Addr{pfxA: speakerAddr, pfxB: speakerAddr, pfxC: speakerV4})

			// Poll the router throughout the restart.
			var polls, misses atomic.Int64
			var missed sync.Map
			stopPolling := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stopPolling:
						return
					default:
					}
					got, err := rt.routes()
					if err == nil {
						polls.Add(1)
						for _, p := range []netip.Prefix{pfxA, pfxC} {
							if _, ok := got[p]; !ok {
								misses.Add(1)
								missed.Store(p, time.Now())
							}
						}
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()

			stopAt := time.Now()
			old.stop("stop")
			if !wait.Poll(10*time.Second, 50*time.Millisecond, rt.gracefulRestartActive) {
				t.Errorf("%s: router never entered graceful restart for the stopped speaker", kind)
			}
			t.Logf("%s: speaker stopped, router holds stale routes (%s)", kind, time.Since(stopAt))

			restartAt := time.Now()
			neu := startSpeaker(t, "new", tp.speaker, cfg, []Route{{Prefix: pfxA}, {Prefix: pfxC}}, time.Minute)
			neu.waitEstablished(30 * time.Second)
			waitRoutes(t, rt, 30*time.Second, map[netip.Prefix]netip.Addr{pfxA: speakerAddr, pfxC: speakerV4}, pfxB)
			if !wait.Poll(30*time.Second, 50*time.Millisecond, func() bool { return !rt.gracefulRestartActive() }) {
				t.Errorf("%s: router still in graceful restart (stale routes) after the new speaker's End-of-RIB", kind)
			}
			t.Logf("%s: new speaker started → stale route gone, kept routes fresh: %s", kind, time.Since(restartAt))
			close(stopPolling)
			wg.Wait()
			if misses.Load() > 0 {
				missed.Range(func(k, v any) bool { t.Errorf("%s: %v missing from the router at %v", kind, k, v); return true })
				t.Fatalf("%s: a kept route was missing %d times in %d polls during the restart", kind, misses.Load(), polls.Load())
			}
			t.Logf("%s: %d polls during the restart, the kept routes were always there", kind, polls.Load())
		})
	}
}

// TestCrashWithdrawnAfterRestartTime: a speaker killed without Stop keeps
// its routes at the peer until the restart time runs out, then they go.
func TestCrashWithdrawnAfterRestartTime(t *testing.T) {
	requireRoot(t)
	for _, kind := range routerKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t)
			rt := newRouter(t, kind, tp.router)
			const restartTime = 4
			sp := startSpeaker(t, "crash", tp.speaker, speakerConfig(restartTime, ""), []Route{{Prefix: pfxA}, {Prefix: pfxC}}, time.Minute)
			sp.waitEstablished(30 * time.Second)
			waitRoutes(t, rt, 30*time.Second, map[netip.Prefix]netip.Addr{pfxA: speakerAddr, pfxC: speakerV4})
			killedAt := time.Now()
			sp.kill()
			waitRoutes(t, rt, restartTime*time.Second+30*time.Second, nil, pfxA, pfxC)
			t.Logf("%s: speaker killed → routes withdrawn after %s (restart time %d s)", kind, time.Since(killedAt), restartTime)
		})
	}
}

// TestMD5: a wrong password leaves the session down with an explanation;
// the right one brings it up.
func TestMD5(t *testing.T) {
	requireRoot(t)
	for _, kind := range routerKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t)
			rt := newRouter(t, kind, tp.router, neighbor{addr: speakerAddr, password: "s3cret-md5"})

			bad := startSpeaker(t, "wrong-password", tp.speaker, speakerConfig(30, "not-the-password"), []Route{{Prefix: pfxA}}, 2*time.Second)
			var ps []PeerStatus
			if !wait.Poll(30*time.Second, 200*time.Millisecond, func() bool {
				ps = bad.peers()
				return len(ps) == 1 && ps[0].Message != ""
			}) {
				t.Fatalf("%s: no explanation for the down session: %+v", kind, ps)
			}
			if ps[0].Established || !strings.Contains(ps[0].Message, "TCP-MD5") {
				t.Errorf("%s: wrong password: Peers() = %+v", kind, ps)
			}
			if !wait.Poll(10*time.Second, 100*time.Millisecond, func() bool {
				return strings.Contains(bad.stderr.String(), "bgp session not established")
			}) {
				t.Errorf("%s: no log line for the session that does not come up", kind)
			}
			if rs, _ := rt.routes(); len(rs) != 0 {
				t.Errorf("%s: router learned routes over a wrong password: %v", kind, rs)
			}
			t.Logf("%s: wrong password: %s", kind, ps[0].Message)
			bad.kill()

			good := startSpeaker(t, "right-password", tp.speaker, speakerConfig(30, "s3cret-md5"), []Route{{Prefix: pfxA}}, time.Minute)
			good.waitEstablished(30 * time.Second)
			waitRoutes(t, rt, 10*time.Second, map[netip.Prefix]netip.Addr{pfxA: speakerAddr})
		})
	}
}

// TestRouterRestart: the routes come back once the session is up again.
func TestRouterRestart(t *testing.T) {
	requireRoot(t)
	for _, kind := range routerKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t)
			rt := newRouter(t, kind, tp.router)
			sp := startSpeaker(t, "s1", tp.speaker, speakerConfig(30, ""), []Route{{Prefix: pfxA}, {Prefix: pfxC}}, time.Minute)
			sp.waitEstablished(30 * time.Second)
			want := map[netip.Prefix]netip.Addr{pfxA: speakerAddr, pfxC: speakerV4}
			waitRoutes(t, rt, 30*time.Second, want)

			rt.stop()
			rt.start()
			restartAt := time.Now()
			waitRoutes(t, rt, 60*time.Second, want)
			t.Logf("%s: router restarted → routes back after %s", kind, time.Since(restartAt))
		})
	}
}

// TestTwoSpeakersOneNetns: two speaker processes in one netns (one host)
// each peer with the router; neither listens on port 179, so they do not
// clash.
func TestTwoSpeakersOneNetns(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	second := netip.MustParseAddr("2001:db8:ffff::3")
	tp := newTopo(t, second)
	rt := newRouter(t, "bird", tp.router, neighbor{addr: speakerAddr}, neighbor{addr: second})

	cfg1 := speakerConfig(30, "")
	cfg1.Peers[0].LocalAddress = speakerAddr
	cfg2 := speakerConfig(30, "")
	cfg2.RouterID = netip.MustParseAddr("10.255.0.3")
	cfg2.Peers[0].LocalAddress = second
	cfg2.NextHop = second
	s1 := startSpeaker(t, "one", tp.speaker, cfg1, []Route{{Prefix: pfxA}}, time.Minute)
	s2 := startSpeaker(t, "two", tp.speaker, cfg2, []Route{{Prefix: pfxB}}, time.Minute)
	s1.waitEstablished(30 * time.Second)
	s2.waitEstablished(30 * time.Second)
	waitRoutes(t, rt, 10*time.Second, map[netip.Prefix]netip.Addr{pfxA: speakerAddr, pfxB: second})

	out := run(t, "ip", "netns", "exec", tp.speaker, "ss", "-Htln")
	if strings.Contains(out, ":179 ") {
		t.Errorf("a speaker listens on port 179:\n%s", out)
	}
}

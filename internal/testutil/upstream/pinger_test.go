package upstream

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"testing"
	"time"
)

func TestStats(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name    string
		sent    int
		replies map[int]time.Time
		want    PingStats
	}{
		{"no loss", 3, map[int]time.Time{0: at(0), 1: at(20), 2: at(40)},
			PingStats{Sent: 3, Received: 3, Recovered: true}},
		{"one outage", 6, map[int]time.Time{0: at(0), 1: at(20), 4: at(85), 5: at(100)},
			PingStats{Sent: 6, Received: 4, Lost: 2, Outage: 65 * time.Millisecond, Outages: 1, Recovered: true}},
		{"two outages, longest counts", 8, map[int]time.Time{0: at(0), 2: at(40), 3: at(60), 7: at(145)},
			PingStats{Sent: 8, Received: 4, Lost: 4, Outage: 85 * time.Millisecond, Outages: 2, Recovered: true}},
		{"lost at the end", 4, map[int]time.Time{0: at(0), 1: at(20)},
			PingStats{Sent: 4, Received: 2, Lost: 2, Outages: 1}},
		{"nothing answered", 3, map[int]time.Time{},
			PingStats{Sent: 3, Lost: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stats(tc.sent, tc.replies); got != tc.want {
				t.Errorf("stats = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSteady(t *testing.T) {
	now := time.Now()
	ago := func(ms int) time.Time { return now.Add(-time.Duration(ms) * time.Millisecond) }
	// Requests every 100 ms from 2 s ago; the reply grace is 300 ms.
	sent := func() []time.Time {
		var s []time.Time
		for ms := 2000; ms >= 0; ms -= 100 {
			s = append(s, ago(ms))
		}
		return s
	}
	all := func(except ...int) map[int]time.Time {
		m := map[int]time.Time{}
		for i := range 21 {
			m[i] = now
		}
		for _, e := range except {
			delete(m, e)
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		since   time.Time
		replies map[int]time.Time
		want    bool
	}{
		{"all answered", ago(2000), all(), true},
		{"loss before the window", ago(2000), all(3, 4), true},
		// seq 15 was sent 500 ms ago: inside the last second before the grace.
		{"loss in the window", ago(2000), all(15), false},
		// In flight (sent within the grace): not counted yet.
		{"in flight", ago(2000), all(19, 20), true},
		{"window starts before since", ago(1000), all(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Pinger{interval: 100 * time.Millisecond, sentAt: sent(), replyAt: tc.replies}
			if got := p.Steady(tc.since, time.Second); got != tc.want {
				t.Errorf("Steady = %t, want %t", got, tc.want)
			}
		})
	}
}

// TestPingerStopTwice pings ::1 in a netns of its own: a second Stop (a
// deferred one after an explicit one) neither panics nor changes the
// figures.
func TestPingerStopTwice(t *testing.T) {
	name := fmt.Sprintf("up-stop-%x", rand.Uint32())
	if o, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, o)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if o, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, o)
	}
	p, err := StartPinger(name, netip.IPv6Loopback(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	Poll(5*time.Second, 10*time.Millisecond, func() bool { return !p.LastReply().IsZero() })
	first := p.Stop()
	if first.Received == 0 {
		t.Errorf("first Stop = %s, want replies from ::1", first)
	}
	if second := p.Stop(); second != first {
		t.Errorf("second Stop = %s, want the first's %s", second, first)
	}
}

package upstream

import (
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

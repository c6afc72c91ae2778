package wait

import (
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	for _, tc := range []struct {
		name      string
		trueAfter int // calls before cond holds; -1: never
		want      bool
	}{
		{"at once", 0, true},
		{"after three calls", 3, true},
		{"never", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			got := Poll(50*time.Millisecond, time.Millisecond, func() bool {
				calls++
				return tc.trueAfter >= 0 && calls > tc.trueAfter
			})
			if got != tc.want {
				t.Fatalf("Poll = %t after %d calls, want %t", got, calls, tc.want)
			}
			if !tc.want && calls < 2 {
				t.Fatalf("cond called %d times before giving up, want it polled", calls)
			}
		})
	}
}

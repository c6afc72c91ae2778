package listenretry

import (
	"context"
	"testing"
	"time"
)

// TestBackoffSequence: Min, doubling, capped at Max; Reset starts over.
func TestBackoffSequence(t *testing.T) {
	var b Backoff
	ctx := context.Background()
	want := []time.Duration{Min, 2 * Min, 4 * Min, 8 * Min, Max, Max}
	for i, w := range want {
		if got := b.step(); got != w {
			t.Fatalf("pause %d = %v, want %v", i, got, w)
		}
	}
	b.Reset()
	if got := b.step(); got != Min {
		t.Fatalf("after Reset: pause = %v, want %v", got, Min)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if b.Wait(cancelled) {
		t.Fatal("Wait with an ended context returned true")
	}
}

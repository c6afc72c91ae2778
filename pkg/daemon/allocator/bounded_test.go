package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// TestExcludedFirst64WithSmallBlocks is the pool that froze ipamd: /120
// blocks of a /48 whose first /64 is excluded. The block search must jump
// the 2^56 excluded blocks, and another network's ADDs must go on meanwhile.
func TestExcludedFirst64WithSmallBlocks(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	bad := conf(t, "smallblocks", `[[{"subnet":"2001:db8:f00::/48","blockSize":120,"exclude":["2001:db8:f00::/64"]}]]`)
	good := conf(t, "plain", `[[{"subnet":"2001:db8:f01::/48"}]]`)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r, err := a.Add(ctx, Request{ID: id("smallblocks", fmt.Sprint("b", i)), Conf: bad})
			if err != nil {
				errs <- fmt.Errorf("ADD on the /120 network: %w", err)
				return
			}
			got := netip.MustParsePrefix(r.IPs[0].Address.String())
			if excluded := netip.MustParsePrefix("2001:db8:f00::/64"); excluded.Contains(got.Addr()) || got.Bits() != 120 {
				errs <- fmt.Errorf("ADD on the /120 network got %s: in the excluded /64 or not a /120", got)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := a.Add(ctx, Request{ID: id("plain", fmt.Sprint("g", i)), Conf: good}); err != nil {
				errs <- fmt.Errorf("ADD on the other network: %w", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The first block after the exclusion, then the next ones, in order.
	blocks := a.Blocks()
	if len(blocks) < 2 || blocks[0].CIDR != netip.MustParsePrefix("2001:db8:f00:1::/120") {
		t.Errorf("blocks = %v, want the first one 2001:db8:f00:1::/120", blocks)
	}
	if err := a.Status(ctx, bad); err != nil {
		t.Errorf("Status of the /120 network: %v", err)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := store.Check(snap); len(p) > 0 {
		t.Errorf("state inconsistent: %v", p)
	}
}

// TestAddHonoursDeadlineBehindTheLock: an ADD queued behind a request that
// holds the node lock answers when its own deadline passes, not after the
// holder is done.
func TestAddHonoursDeadlineBehindTheLock(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	a := newAlloc(t, st, "node1")
	c := conf(t, "locked", `[[{"subnet":"2001:db8:f02::/48"}]]`)
	a.mu.Lock() // a request stuck in etcd holds it
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := a.Add(ctx, Request{ID: id("locked", "c1"), Conf: c})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("ADD behind the lock: %v, want the deadline", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("ADD behind the lock did not answer after its deadline")
	}
	a.mu.Unlock()
	if _, err := a.Add(context.Background(), Request{ID: id("locked", "c1"), Conf: c}); err != nil {
		t.Fatalf("ADD after the lock is free: %v", err)
	}
}

package allocator

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// TestConcurrentClaimsFillThePool: nodes claiming at once scatter after
// lost races (claimBlock), and still every block of the pool is found:
// as many nodes as blocks all get one, distinct, and one more node finds
// the pool full. Repeated, so the walk that wraps around after skipping
// past the last unclaimed block runs too.
func TestConcurrentClaimsFillThePool(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	const blocks = 16
	for round := range 4 {
		netName := fmt.Sprintf("spread%d", round)
		// 10.77.<round>.0/24 in /28 blocks: 16 blocks.
		c := conf(t, netName, fmt.Sprintf(`[[{"subnet":"10.77.%d.0/24","blockSize":28}]]`, round))
		allocs := make([]*Allocator, blocks+1)
		for i := range allocs {
			allocs[i] = newAlloc(t, st, fmt.Sprintf("r%d-node%02d", round, i))
		}
		got := make([]*Assignment, blocks)
		errs := make([]error, blocks)
		var wg sync.WaitGroup
		for i := range blocks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = allocs[i].Add(context.Background(), Request{ID: id(netName, fmt.Sprint("c", i)), Conf: c})
			}()
		}
		wg.Wait()
		seen := map[netip.Prefix]int{}
		for i := range blocks {
			if errs[i] != nil {
				t.Fatalf("round %d: node %d: %v", round, i, errs[i])
			}
			b := got[i].IPs[0].Address.Masked()
			if j, dup := seen[b]; dup {
				t.Fatalf("round %d: nodes %d and %d both got block %s", round, j, i, b)
			}
			seen[b] = i
		}
		_, err := allocs[blocks].Add(context.Background(), Request{ID: id(netName, "extra"), Conf: c})
		wantKind(t, err, KindExhausted, "no address available")
	}
}

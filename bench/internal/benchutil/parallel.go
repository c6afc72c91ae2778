package benchutil

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Parallel runs f(0..n-1), par at a time, in index order of start, and
// returns the wall time. It stops starting new calls at the first error,
// which it returns, or when ctx ends.
func Parallel(ctx context.Context, n, par int, f func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var failed atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(par, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return el, firstErr
}

package allocator

import (
	"context"
	"fmt"
)

// nodeLock is the allocator's mutex, with an acquisition that gives up at
// the request's deadline: an ADD stuck behind another (slow etcd, a large
// pool) answers "try again later" in time instead of queueing past the
// runtime's timeout.
type nodeLock struct{ ch chan struct{} }

func newNodeLock() nodeLock { return nodeLock{ch: make(chan struct{}, 1)} }

// Lock waits for the lock.
func (l nodeLock) Lock() { l.ch <- struct{}{} }

// Unlock releases it.
func (l nodeLock) Unlock() { <-l.ch }

// LockCtx waits for the lock until ctx ends.
func (l nodeLock) LockCtx(ctx context.Context) error {
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the node's allocation lock: %w", ctx.Err())
	}
}

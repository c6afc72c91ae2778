package bridgesvc

import (
	"context"
	"log/slog"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/link"
)

// afterBlocksReleased, if set (tests), runs when ReleaseEmptyBlocks has
// released the blocks: where an ADD can re-claim one of them.
var afterBlocksReleased func()

// ReleaseEmptyBlocks gives back the node's blocks empty for grace, with
// their gateway addresses (bridge-v6 put them on the bridges at ADD), and
// returns them. A failure is logged (the next round retries).
func ReleaseEmptyBlocks(ctx context.Context, alloc *allocator.Allocator, grace time.Duration, log *slog.Logger) []store.Block {
	// The gateway goes before the block, under the allocator's lock: an
	// ADD re-claiming the block after that re-adds it, and nothing removes
	// it again.
	blocks, err := alloc.ReleaseEmptyBlocks(ctx, grace, link.RemoveGateway)
	if err != nil && ctx.Err() == nil {
		log.Warn("release of empty blocks", "error", err)
	}
	if afterBlocksReleased != nil {
		afterBlocksReleased()
	}
	return blocks
}

// Package reclaim is ipamd's periodic garbage collection of what runtimes
// and containers leave behind: attachments whose network namespace is gone
// (a runtime skips DEL after a crash or a reboot, and those addresses
// would leak forever), sticky and quarantined addresses past their time,
// and blocks empty for the block grace (with their gateway addresses,
// bridgesvc). After each round the per-bridge services follow the
// attachments that remain.
package reclaim

import (
	"context"
	"log/slog"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/bridgesvc"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
)

// Config is what a round does and how often.
type Config struct {
	Alloc   *allocator.Allocator
	Metrics *ipammetrics.Metrics // counts the attachments released
	Log     *slog.Logger
	// Interval between rounds; 0: one round, at start.
	Interval time.Duration
	// Grace: an attachment younger than this is never released.
	Grace time.Duration
	// BlockGrace: an empty block goes back to the pool after this long.
	BlockGrace time.Duration
	// NetnsExists tells whether a recorded network namespace path exists.
	NetnsExists func(path string) bool
	// Sync makes the per-bridge services match the attachments left
	// (bridgesvc.Services.Sync).
	Sync func(context.Context) error
}

// Run does a round at once and then every cfg.Interval until ctx ends. A
// round's failures are logged; the next round retries.
func Run(ctx context.Context, cfg Config) {
	alloc, log := cfg.Alloc, cfg.Log
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		released, err := alloc.Reclaim(rctx, cfg.Grace, cfg.NetnsExists)
		cancel()
		cfg.Metrics.Reclaimed(len(released))
		for _, h := range released {
			log.Info("GC released", "network", h.Network, "container", h.ContainerID, "ifname", h.IfName, "netns", h.Netns)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("GC of stale attachments", "error", err)
		}
		rctx, cancel = context.WithTimeout(ctx, time.Minute)
		expired, err := alloc.ExpireSticky(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Warn("release of expired sticky addresses", "error", err)
		}
		for _, st := range expired {
			log.Info("sticky addresses expired", "network", st.Network, "pod", st.Pod, "ifname", st.IfName)
		}
		rctx, cancel = context.WithTimeout(ctx, time.Minute)
		freed, err := alloc.ExpireQuarantine(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Warn("release of quarantined addresses", "error", err)
		}
		for _, q := range freed {
			log.Info("quarantined address released", "network", q.Network, "addr", q.IP.Address.Addr(), "reason", q.Reason)
		}
		rctx, cancel = context.WithTimeout(ctx, time.Minute)
		bridgesvc.ReleaseEmptyBlocks(rctx, alloc, cfg.BlockGrace, log)
		cancel()
		// Router advertisements follow the attachments that remain.
		rctx, cancel = context.WithTimeout(ctx, time.Minute)
		if err := cfg.Sync(rctx); err != nil && ctx.Err() == nil {
			log.Warn("router advertisement services", "error", err)
		}
		cancel()
		if cfg.Interval <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(cfg.Interval):
		}
	}
}

package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/renumber"
)

// renumberer carries pdnet's renumberings into the containers: the
// allocator's moves become netns jobs for pkg/daemon/renumber's workers,
// and the bridges' RA and DHCPv6 servers are re-synced so that they
// advertise the new block and offer the new addresses beside the old.
type renumberer struct {
	w    *renumber.Workers
	sync func(context.Context) error
	log  *slog.Logger
	// kinds counts renumberings by kind (pdnet keeps them; read at scrape).
	kinds func() map[string]uint64

	// submitMu keeps one renumbering's jobs one batch: Submit runs off the
	// PD client's goroutine (a full queue must not stall the client), but
	// in order.
	submitMu sync.Mutex

	mu      sync.Mutex
	lastSec float64
}

func newRenumberer(sync func(context.Context) error, log *slog.Logger) *renumberer {
	r := &renumberer{sync: sync, log: log, lastSec: -1}
	r.w = renumber.New(renumber.Config{
		Log: log.With("component", "renumber"),
		OnBatch: func(b renumber.Batch) {
			secs := b.End.Sub(b.Start).Seconds()
			r.mu.Lock()
			r.lastSec = secs
			r.mu.Unlock()
			log.Info("renumber: containers done", "jobs", b.Jobs, "failed", b.Failed, "seconds", secs)
		},
	})
	return r
}

// Submit implements pdnet.Renumberer.
func (r *renumberer) Submit(moves ...allocator.Move) {
	jobs := make([]renumber.Job, 0, len(moves))
	for _, m := range moves {
		jobs = append(jobs, renumber.Job{
			Netns: m.Netns, IfName: m.IfName, MAC: m.MAC,
			Old: m.Old, New: m.New, OldGateway: m.OldGateway, NewGateway: m.NewGateway,
			OldValidUntil: m.OldValidUntil, Mode: m.Mode,
		})
	}
	go func() {
		r.submitMu.Lock()
		r.w.Submit(jobs...)
		r.submitMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.sync(ctx); err != nil {
			r.log.Warn("renumber: sync the bridges' services", "error", err)
		}
	}()
}

// Stats are the renumbering metrics.
func (r *renumberer) Stats() ipammetrics.RenumberStats {
	st := r.w.Stats()
	out := ipammetrics.RenumberStats{Errors: map[string]uint64{}, Pending: st.Pending}
	for reason, n := range st.Errors {
		out.Errors[string(reason)] = n
	}
	if r.kinds != nil {
		out.Renumberings = r.kinds()
	}
	r.mu.Lock()
	out.LastSeconds = r.lastSec
	r.mu.Unlock()
	return out
}

// Close stops the workers (pending old-address removals are left to the
// kernel: the old addresses carry their valid lifetime).
func (r *renumberer) Close() { r.w.Close() }

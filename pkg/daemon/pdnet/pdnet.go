// Package pdnet ties the node's DHCPv6-PD client (pkg/daemon/dhcp6pd) to
// the rest of ipamd: the binding persists in etcd (a restarted ipamd renews
// the same prefix), the allocator takes pd-ipam networks' /64s from the
// delegated prefixes (it is the allocator's PDSource), and a prefix whose
// valid lifetime ends takes its blocks, their gateway addresses and so
// their announcements along, retried until etcd lets the drop through.
// It also gives `ipamd pd` its view and the metrics their PD figures.
package pdnet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/v6cni/v6cni/internal/crashpoint"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/link"
)

// Delegation runs the node's DHCPv6-PD client and ties it to the rest of
// ipamd: the binding lives in etcd (a restarted ipamd renews the same
// prefix), pd-ipam networks take their /64s from it, and a prefix whose
// valid lifetime ends takes its blocks (and so their announcements) along.
type Delegation struct {
	client *dhcp6pd.Client
	iface  string
	alloc  *allocator.Allocator
	log    *slog.Logger

	mu     sync.Mutex
	valid  map[netip.Prefix]bool // prefixes held at the last change
	runErr error                 // why the client stopped, if it did
	// expired are prefixes no longer valid whose blocks are not all gone
	// yet (etcd failed during the drop): retried until they are.
	expired  map[netip.Prefix]bool
	retrying bool
	// retryEvery is the pause between drop attempts (0: dropRetry).
	retryEvery time.Duration
	// stop ends the retries (ipamd stopping); nil: never.
	stop <-chan struct{}

	// dropMu serialises drops: the one of a binding change and the retries.
	dropMu sync.Mutex

	// prev is the binding of the last change (detect.go); renumberer and
	// renumberings: mu.
	prev         dhcp6pd.Binding
	renumberer   Renumberer
	renumberings map[Kind]uint64
}

// dropRetry is how often the drop of an expired prefix's blocks is retried
// after a failure (etcd unreachable): the blocks stay claimed and announced
// until it succeeds.
const dropRetry = 2 * time.Second

// Err is why the PD client stopped (port 546 taken, no such interface), so
// pd-ipam's errors and STATUS can say it.
func (d *Delegation) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runErr
}

// etcdPersister keeps the PD binding under the node's key in etcd.
type etcdPersister struct {
	st   *store.Store
	node string
	iaid uint32
}

func (p etcdPersister) Load(ctx context.Context) (dhcp6pd.Binding, error) {
	var b dhcp6pd.Binding
	raw, err := p.st.LoadPD(ctx, p.node, p.iaid)
	if err != nil || raw == nil {
		return b, err
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return b, fmt.Errorf("decode stored PD binding: %w", err)
	}
	return b, nil
}

func (p etcdPersister) Save(ctx context.Context, b dhcp6pd.Binding) error {
	raw, err := json.Marshal(b)
	if err != nil {
		return err
	}
	crashpoint.Hit("pd:before-save")
	defer crashpoint.Hit("pd:after-save")
	return p.st.SavePD(ctx, p.node, p.iaid, raw)
}

// Start starts the PD client on cfg.Interface, its binding kept in st under
// node, and hands the allocator its prefixes. The client runs until ctx
// ends (no Release on a plain stop).
func Start(ctx context.Context, cfg dhcp6pd.Config, st *store.Store, node string, alloc *allocator.Allocator, log *slog.Logger) (*Delegation, error) {
	if cfg.IAID == 0 {
		cfg.IAID = dhcp6pd.IAIDFromName(cfg.Interface)
	}
	d := &Delegation{iface: cfg.Interface, alloc: alloc, log: log, valid: map[netip.Prefix]bool{}, stop: ctx.Done()}
	cfg.Persister = etcdPersister{st: st, node: node, iaid: cfg.IAID}
	cfg.Logger = log.With("component", "pd", "interface", cfg.Interface)
	cfg.OnChange = d.changed
	c, err := dhcp6pd.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("pd: %w", err)
	}
	d.client = c
	alloc.SetPD(d)
	go func() {
		if err := c.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("pd: client stopped", "interface", cfg.Interface, "error", err)
			d.mu.Lock()
			d.runErr = err
			d.mu.Unlock()
		}
	}()
	return d, nil
}

// Interface is the uplink (allocator.PDSource).
func (d *Delegation) Interface() string { return d.iface }

// Delegated lists the prefixes held now (allocator.PDSource).
func (d *Delegation) Delegated() []allocator.Delegated {
	b := d.client.Binding()
	out := make([]allocator.Delegated, 0, len(b.Prefixes))
	for _, p := range b.Prefixes {
		out = append(out, allocator.Delegated{Prefix: p.Prefix, Preferred: p.PreferredUntil(), Valid: p.ValidUntil(), Updated: p.Updated})
	}
	return out
}

// changed follows the binding: with a Renumberer set, attachments move to
// the current prefix when another one stops being current (detect.go); a
// prefix that is no longer valid loses its blocks, their gateway addresses
// and their announcements.
func (d *Delegation) changed(b dhcp6pd.Binding) {
	now := time.Now()
	d.mu.Lock()
	prev := d.prev
	d.prev = b
	d.prev.Prefixes = slices.Clone(b.Prefixes)
	d.mu.Unlock()
	// Before the drop below: attachments get their successor first.
	d.renumber(prev, b, now)
	valid := map[netip.Prefix]bool{}
	for _, p := range b.Valid(now) {
		valid[p] = true
	}
	d.mu.Lock()
	var gone []netip.Prefix
	for p := range d.valid {
		if !valid[p] {
			gone = append(gone, p)
		}
	}
	for p := range valid {
		if !d.valid[p] {
			d.log.Info("pd: prefix delegated", "prefix", p, "interface", d.iface, "server", b.Server)
		}
	}
	d.valid = valid
	if d.expired == nil {
		d.expired = map[netip.Prefix]bool{}
	}
	for _, p := range gone {
		d.expired[p] = true
	}
	for p := range valid {
		// Delegated again: its remaining blocks are usable, and new
		// blocks claimed in it must not be dropped by a late retry.
		delete(d.expired, p)
	}
	d.mu.Unlock()
	if d.dropExpired() {
		d.retryDrops()
	}
}

// dropExpired tries once to drop the blocks of every expired prefix and
// reports whether some remain. Only blocks actually released lose their
// gateway (and, through the allocator, their announcement); a prefix is
// forgotten only when its drop succeeded entirely.
func (d *Delegation) dropExpired() (remaining bool) {
	d.dropMu.Lock()
	defer d.dropMu.Unlock()
	d.mu.Lock()
	var todo []netip.Prefix
	for p := range d.expired {
		todo = append(todo, p)
	}
	d.mu.Unlock()
	for _, p := range todo {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		dropped, err := d.alloc.DropPrefix(ctx, p)
		cancel()
		for _, blk := range dropped {
			if err := link.RemoveGateway(blk.CIDR); err != nil {
				d.log.Warn("pd: remove gateway", "block", blk.CIDR, "error", err)
			}
		}
		if err != nil {
			d.log.Error("pd: drop the blocks of an expired prefix (will retry)", "prefix", p, "dropped", len(dropped), "error", err)
			remaining = true
			continue
		}
		d.mu.Lock()
		delete(d.expired, p)
		d.mu.Unlock()
		d.log.Warn("pd: prefix gone", "prefix", p, "interface", d.iface, "blocks", len(dropped))
	}
	return remaining
}

// retryDrops starts (once) the retries of dropExpired until nothing
// remains.
func (d *Delegation) retryDrops() {
	d.mu.Lock()
	if d.retrying {
		d.mu.Unlock()
		return
	}
	d.retrying = true
	every := d.retryEvery
	if every <= 0 {
		every = dropRetry
	}
	d.mu.Unlock()
	go func() {
		for {
			select {
			case <-d.stop:
				return
			case <-time.After(every):
			}
			remaining := d.dropExpired()
			d.mu.Lock()
			if !remaining && len(d.expired) == 0 {
				d.retrying = false
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
		}
	}()
}

// State is `ipamd pd`'s view (ipamserver.Server.PD).
func (d *Delegation) State(context.Context) (ipamapi.PDState, error) {
	st := ipamapi.PDState{Mode: ModeNode}
	fillState(&st, d.client.Binding(), d.iface, time.Now())
	return st, nil
}

// Release gives the prefixes back to the server on purpose
// (ipamserver.Server.PDRelease).
func (d *Delegation) Release(ctx context.Context) (ipamapi.PDState, error) {
	if err := d.client.Release(ctx); err != nil {
		return ipamapi.PDState{}, fmt.Errorf("pd release: %w", err)
	}
	return d.State(ctx)
}

// Metrics reports the valid lifetime left per prefix and the exchanges
// (ipammetrics.Metrics.SetPD).
func (d *Delegation) Metrics() (validLeft map[string]float64, exchanges map[[2]string]uint64) {
	now := time.Now()
	validLeft = map[string]float64{}
	for _, p := range d.client.Binding().Prefixes {
		left := p.ValidUntil().Sub(now).Seconds()
		if p.Valid == dhcp6pd.Infinity {
			left = -1
		}
		validLeft[p.Prefix.String()] = left
	}
	exchanges = map[[2]string]uint64{}
	for ex, n := range d.client.Stats().Exchanges {
		exchanges[[2]string{ex.Message, ex.Result}] = n
	}
	return validLeft, exchanges
}

func left(t, now time.Time) string {
	if t.Year() >= 9999 {
		return "infinite"
	}
	if t.Before(now) {
		return "0s"
	}
	return t.Sub(now).Round(time.Second).String()
}
